"""Sparse-RS (Croce et al. 2022): score-based random search over k pixels, the L0 threat model.

Threat model: black box (scores only, no gradients), untargeted or targeted; the perturbation changes at
most ``pixels`` pixel locations to any value in [0, 1] (every channel of a pixel free), as for the
one-pixel attack. x on [0, 1], shape (N, C, H, W). It queries whatever model function it is given, so
the runner hands it the reference runtime (ONNX Runtime for ONNX files): no conversion needed.

The paper's L0 algorithm: start from k random pixel locations, each set to a random vertex of the colour
cube {0, 1}^C. Each iteration swaps ``max(1, alpha_i * k)`` of the k locations for as many locations not
yet perturbed, with new random vertex colours, and keeps the proposal when the margin loss (true logit
minus the best other; for a target, the best other minus the target's) does not go up. ``alpha_i``
follows the paper's piecewise-constant schedule (alpha_init divided by 2, 4, 5, 6, 8, 10, 12, 15 and 20
at fixed fractions of a 10,000-query budget, rescaled to the budget given). One query per iteration and
sample, against differential evolution's population per generation: that is where the saving comes from.

A vertex colour equal to the clean pixel's would waste the query (MNIST's background is exactly 0), so
such a draw has one of its channels flipped. Samples already fooled leave the working batch. Every draw
comes from the sample's seed (``rng.uniform``, one stream per iteration), so a sample's result does not
depend on the batch it is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robaudit.attacks import rng
from robaudit.attacks.base import LogitsFn, succeeded
from robaudit.attacks.square import margin

# The paper's divisors of alpha_init and the iterations (of 10,000) after which each applies.
_SCHEDULE = ((50, 2), (200, 4), (500, 5), (1000, 6), (2000, 8), (4000, 10), (6000, 12), (8000, 15))


def alpha_schedule(alpha_init: float, iteration: int, iterations: int) -> float:
    """The fraction of the k pixels resampled at ``iteration`` of ``iterations`` (Croce et al. 2022)."""
    it = int(iteration / max(1, iterations) * 10000)
    if it <= 0:
        return alpha_init
    divisor = next((d for limit, d in _SCHEDULE if it <= limit), 20)
    return alpha_init / divisor


@dataclass(frozen=True)
class SparseRS:
    name: ClassVar[str] = "sparse-rs"
    needs_gradients: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = ("l0",)

    pixels: int = 1
    queries: int = 5000  # model queries per sample, the first one included
    alpha_init: float = 0.3  # the paper's fraction of the k pixels resampled at first

    def __post_init__(self) -> None:
        if self.pixels < 1 or self.queries < 1 or not 0.0 < self.alpha_init <= 1.0:
            raise ValueError("sparse-rs needs pixels >= 1, queries >= 1 and alpha_init in (0, 1]")

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
        if norm != "l0":
            raise ValueError(f"sparse-rs attacks l0 only, not {norm!r}")
        b, _, h, w = x.shape
        if b == 0:
            return x.clone()
        k = min(self.pixels, h * w)
        # The k locations (flat indices into H*W) and their colours (N, k, C).
        places = rng.uniform(seeds, 0, h * w).topk(k, dim=1, largest=False).indices
        colours = self._colours(x, places, seeds, 1, torch.arange(k, device=x.device).expand(b, k))
        best = self._paint(x, places, colours)
        with torch.no_grad():
            logits = model(best)
        loss = margin(logits, y, targets)
        done = succeeded(logits, y, targets)
        iterations = self.queries - 1
        for i in range(iterations):
            alive = torch.nonzero(~done).flatten()
            if alive.numel() == 0:
                break
            t = targets[alive] if targets is not None else None
            cand_places, cand_colours = self._propose(
                x[alive], places[alive], colours[alive], seeds[alive], i
            )
            cand = self._paint(x[alive], cand_places, cand_colours)
            with torch.no_grad():
                logits = model(cand)
            new_loss = margin(logits, y[alive], t)
            # Ties move too: a plateau (a pixel the model hardly sees) is left rather than stuck on.
            better = new_loss <= loss[alive]
            keep = alive[better]
            places[keep], colours[keep] = cand_places[better], cand_colours[better]
            best[keep] = cand[better]
            loss[keep] = new_loss[better]
            done[keep] = succeeded(logits[better], y[keep], t[better] if t is not None else None)
        return best

    def _propose(
        self, x: torch.Tensor, places: torch.Tensor, colours: torch.Tensor, seeds: torch.Tensor, i: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Swap the schedule's number of the k locations for unperturbed ones, with new colours."""
        n, _, h, w = x.shape
        k = places.shape[1]
        m = min(max(1, int(alpha_schedule(self.alpha_init, i, self.queries - 1) * k)), k)
        stream = 2 * (i + 1)
        u = rng.uniform(seeds, stream, k + h * w)
        slots = u[:, :k].topk(m, dim=1, largest=False).indices  # which of the k locations move
        if k < h * w:  # new locations among those not perturbed now (all taken: only recolour)
            free = u[:, k:].scatter(1, places, 2.0)
            new_places = free.topk(m, dim=1, largest=False).indices
            places = places.scatter(1, slots, new_places)
        new = self._colours(x, places, seeds, stream + 1, slots)
        colours = colours.scatter(1, slots[:, :, None].expand(-1, -1, x.shape[1]), new)
        return places, colours

    @staticmethod
    def _colours(
        x: torch.Tensor, places: torch.Tensor, seeds: torch.Tensor, stream: int, slots: torch.Tensor
    ) -> torch.Tensor:
        """Random vertices of {0, 1}^C for the locations ``places[slots]`` (N, m, C); one equal to the
        clean pixel has a random channel flipped, so that every proposal changes the image."""
        n, c = x.shape[:2]
        m = slots.shape[1]
        u = rng.uniform(seeds, stream, m * (c + 1)).view(n, m, c + 1)
        vertex = (u[:, :, :c] < 0.5).to(x.dtype)
        where = places.gather(1, slots)  # (N, m) flat indices
        clean = x.flatten(2).gather(2, where[:, None, :].expand(-1, c, -1)).transpose(1, 2)  # (N, m, C)
        same = (vertex == clean).all(2, keepdim=True)
        flip = torch.nn.functional.one_hot((u[:, :, c] * c).long().clamp_max(c - 1), c).to(x.dtype)
        return torch.where(same, (vertex - flip).abs(), vertex)

    @staticmethod
    def _paint(x: torch.Tensor, places: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        """x with each sample's k locations set to its colours."""
        n, c, h, w = x.shape
        out = x.flatten(2).clone()
        out.scatter_(2, places[:, None, :].expand(-1, c, -1), colours.transpose(1, 2).to(x.dtype))
        return out.view(n, c, h, w)
