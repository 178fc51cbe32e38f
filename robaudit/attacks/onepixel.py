"""One-pixel attack (Su, Vargas & Sakurai 2019): differential evolution over k pixels.

Threat model: black box (scores only, no gradients), untargeted or targeted; the perturbation
changes at most ``pixels`` pixel locations to any value in [0, 1] (an L0 budget counted in pixel
locations, every channel of a pixel free). x on [0, 1], shape (N, C, H, W).

A candidate is ``pixels`` tuples (row, col, value per channel). Following the paper: population 400,
100 generations, DE/rand/1 with F = 0.5 and no crossover, values initialised from N(0.5, 0.5) (the
paper's N(128, 127) on 0..255); a child replaces its parent when it is at least as fit. Fitness is
the logit margin of the true class over the best other class (untargeted, minimised), or of the
best other class over the target (targeted); the paper's class probability saturates (see _score).

Batched across samples: one generation of every sample in the working batch is one set of forward
passes, split into passes of ``images_per_pass`` images, so a GPU is filled however small the
population. A sample stops the generation after any of its candidates succeeds (early stop), and
leaves the working batch. Random draws come from the sample's seed (``rng.uniform``), so results
do not depend on how samples are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robaudit.attacks import rng
from robaudit.attacks.base import LogitsFn

_INPUT_BYTES_PER_PASS = 1 << 27  # GPU: 128 MiB of candidate images per forward pass when not set
_CPU_INPUT_BYTES_PER_PASS = 1 << 20  # CPU: 1 MiB, so a pass is about one population of small images


@dataclass(frozen=True)
class OnePixel:
    name: ClassVar[str] = "onepixel"
    needs_gradients: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = ("l0",)

    pixels: int = 1
    population: int = 400
    generations: int = 100
    mutation: float = 0.5  # DE scale factor F
    images_per_pass: int = 0  # 0: chosen per device (see _pass_size), at least one population

    def __post_init__(self) -> None:
        if self.pixels < 1 or self.population < 4 or self.generations < 0:
            raise ValueError("one-pixel needs pixels >= 1, population >= 4 and generations >= 0")

    def _pass_size(self, image_numel: int, device: torch.device) -> int:
        """Images per forward pass. A GPU wants the largest batch that fits (128 MiB of input here);
        a CPU is fastest on batches that stay in cache (about one population: measured 1.5x faster
        per image at 400 than at 6,400 images on the sample LeNet)."""
        if self.images_per_pass > 0:
            return self.images_per_pass
        budget = _INPUT_BYTES_PER_PASS if device.type == "cuda" else _CPU_INPUT_BYTES_PER_PASS
        return max(self.population, min(16384, budget // (4 * image_numel)))

    @staticmethod
    def _range(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.arange(n, device=like.device)

    def _apply(self, x: torch.Tensor, owner: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
        """Images for candidates: ``x[owner]`` with the candidate's pixels written in. genes: (M, D)."""
        _, c, h, w = x.shape
        images = x[owner].clone()
        arange = torch.arange(len(owner), device=x.device)
        for p in genes.view(len(owner), self.pixels, 2 + c).unbind(1):
            rows = p[:, 0].floor().long().clamp(0, h - 1)
            cols = p[:, 1].floor().long().clamp(0, w - 1)
            images[arange, :, rows, cols] = p[:, 2:].clamp(0.0, 1.0).to(images.dtype)
        return images

    def _score(
        self,
        model: LogitsFn,
        x: torch.Tensor,
        pop: torch.Tensor,
        goal: torch.Tensor,
        targeted: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fitness (lower is better) and success flags for pop of shape (B, P, D)."""
        b, p, d = pop.shape
        flat_genes = pop.reshape(b * p, d)
        owner = torch.arange(b, device=x.device).repeat_interleave(p)
        fitness = torch.empty(b * p, device=x.device)
        success = torch.empty(b * p, dtype=torch.bool, device=x.device)
        step = self._pass_size(x[0].numel(), x.device)
        for start in range(0, b * p, step):
            sl = slice(start, start + step)
            with torch.no_grad():
                logits = model(self._apply(x, owner[sl], flat_genes[sl])).float()
            g = goal[owner[sl]]
            z_goal = logits.gather(1, g[:, None])[:, 0]
            z_rest = logits.scatter(1, g[:, None], float("-inf")).amax(1)
            # Logit margin, not the paper's softmax probability: a confident model's probability
            # rounds to exactly 1.0 in float32 for most candidates, leaving DE nothing to select on.
            fitness[sl] = (z_rest - z_goal) if targeted else (z_goal - z_rest)
            top = logits.argmax(1)
            success[sl] = (top == g) if targeted else (top != g)
        return fitness.view(b, p), success.view(b, p)

    def __call__(
        self,
        model: LogitsFn,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str,
        seeds: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        if b == 0:
            return x.clone()
        targeted = targets is not None
        goal = targets if targets is not None else y
        p, k = self.population, self.pixels
        d = k * (2 + c)
        scale = torch.tensor(([h, w] + [0] * c) * k, dtype=torch.float32, device=x.device)
        is_coord = scale > 0

        # Initial population: uniform positions, values ~ N(0.5, 0.5) clipped to [0, 1].
        u = rng.uniform(seeds, 0, p * d).view(b, p, d)
        n = rng.normal(seeds, 1, p * d).view(b, p, d)  # uniform streams 2 and 3
        pop = torch.where(is_coord, u * scale, (0.5 + 0.5 * n).clamp(0.0, 1.0))
        fitness, success = self._score(model, x, pop, goal, targeted)
        candidates = pop

        result = x.clone()
        active = torch.arange(b, device=x.device)
        members = torch.arange(p, device=x.device)
        upper = torch.where(is_coord, scale - 1e-4, torch.ones_like(scale))

        def pick(r: torch.Tensor) -> torch.Tensor:
            return pop.gather(1, r[..., None].expand(-1, -1, d))

        for generation in range(self.generations + 1):
            won = success.any(1)
            if bool(won.any()):
                # Early stop: keep the sample's first successful candidate and drop the sample.
                idx = torch.nonzero(won).flatten()
                first = success[idx].float().argmax(1)
                result[active[idx]] = self._apply(
                    x[active[idx]], self._range(len(idx), x), candidates[idx, first]
                )
                keep = ~won
                active, pop, fitness = active[keep], pop[keep], fitness[keep]
            if active.numel() == 0 or generation == self.generations:
                break
            # DE/rand/1: three distinct members other than i, from the sample's own random stream.
            draws = rng.uniform(seeds[active], 16 + generation, 3 * p).view(-1, 3, p)
            a = 1 + (draws[:, 0] * (p - 1)).long()
            bb = 1 + (draws[:, 1] * (p - 2)).long()
            bb = bb + (bb >= a).long()
            lo, hi = torch.minimum(a, bb), torch.maximum(a, bb)
            cc = 1 + (draws[:, 2] * (p - 3)).long()
            cc = cc + (cc >= lo).long()
            cc = cc + (cc >= hi).long()
            r1, r2, r3 = ((members + o) % p for o in (a, bb, cc))
            candidates = torch.minimum(
                (pick(r1) + self.mutation * (pick(r2) - pick(r3))).clamp_min(0.0), upper
            )
            trial_fitness, success = self._score(model, x[active], candidates, goal[active], targeted)
            better = trial_fitness <= fitness
            pop = torch.where(better[..., None], candidates, pop)
            fitness = torch.where(better, trial_fitness, fitness)
        if active.numel():
            # Unbroken samples return their fittest candidate: a valid point of the threat model.
            best = fitness.argmin(1)
            rows = self._range(len(active), x)
            result[active] = self._apply(x[active], rows, pop[rows, best])
        return result
