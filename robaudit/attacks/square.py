"""Square attack (Andriushchenko et al. 2020): score-based random search under L∞ and L2.

Threat model: black box (scores only, no gradients), untargeted or targeted; x on [0, 1], shape
(N, C, H, W). It queries whatever model function it is given, so the runner hands it the reference
runtime (ONNX Runtime for ONNX files): no conversion and no gradients, which is why it still works
when gradients are masked.

Each iteration proposes, per sample, a change inside one square window whose side follows the paper's
schedule on the fraction ``p`` of pixels (halved at fixed query counts, rescaled to the budget), and
keeps it when the margin loss (true logit minus the best other; for a target, the best other minus the
target's) goes down. Samples already fooled leave the working batch. Window positions and signs come
from each sample's seed (``rng.uniform``, one stream per iteration), so a sample's result does not
depend on the batch it is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from robaudit.attacks import rng
from robaudit.attacks.base import LogitsFn, succeeded
from robaudit.attacks.norms import flat, float32_safe_eps, per_sample

_SIGN_TRIES = 8  # L∞: sign draws per iteration until the window changes (the paper resamples until it does)
_RESTART_STREAMS = 1 << 22  # counter streams per restart: one for the start, one per iteration


def margin(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Margin loss, minimised; below zero the sample is fooled (or hits its target)."""
    logits = logits.float()
    goal = targets if targets is not None else y
    z_goal = logits.gather(1, goal[:, None])[:, 0]
    z_rest = logits.scatter(1, goal[:, None], float("-inf")).amax(1)
    return z_rest - z_goal if targets is not None else z_goal - z_rest


def p_schedule(p_init: float, iteration: int, iterations: int) -> float:
    """The paper's schedule: p halves at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000
    iterations, rescaled to the budget."""
    it = int(iteration / max(1, iterations) * 10000)
    halvings = sum(it > t for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


def _pseudo_gaussian(rows: int, cols: int) -> torch.Tensor:
    """Concentric rectangles weighted 1/(k+1)^2 (the paper's L2 building block), unit norm."""
    delta = torch.zeros(rows, cols, dtype=torch.float64)
    rc, cc = rows // 2 + 1, cols // 2 + 1
    r0, c0 = rc - 1, cc - 1
    for k in range(max(rc, cc)):
        delta[max(r0, 0) : min(r0 + 2 * k + 1, rows), max(c0, 0) : min(c0 + 2 * k + 1, cols)] += (
            1.0 / (k + 1) ** 2
        )
        r0, c0 = r0 - 1, c0 - 1
    return delta / delta.norm()


def meta_pseudo_gaussian(s: int) -> torch.Tensor:
    """Two pseudo-Gaussian halves of opposite sign on an s x s square, unit norm (float32)."""
    delta = torch.zeros(s, s, dtype=torch.float64)
    delta[: s // 2] = _pseudo_gaussian(s // 2, s)
    delta[s // 2 :] = -_pseudo_gaussian(s - s // 2, s)
    return (delta / delta.norm()).float()


def _window(n: int, h: int, w: int, s: int, u_row: torch.Tensor, u_col: torch.Tensor) -> torch.Tensor:
    """Per-sample masks (n, 1, H, W) of an s x s window at uniformly drawn positions."""
    top = (u_row * (h - s + 1)).long().clamp_max(h - s)
    left = (u_col * (w - s + 1)).long().clamp_max(w - s)
    r = torch.arange(h, device=u_row.device)[None, :, None]
    c = torch.arange(w, device=u_row.device)[None, None, :]
    inside = (r >= top[:, None, None]) & (r < (top + s)[:, None, None])
    inside = inside & (c >= left[:, None, None]) & (c < (left + s)[:, None, None])
    return inside[:, None].expand(n, 1, h, w)


def _window_index(
    n: int, c: int, h: int, w: int, s: int, u_row: torch.Tensor, u_col: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Advanced indices of each sample's s x s window at the positions ``_window`` draws, every
    channel: ``t[idx]`` is (n, c, s, s)."""
    top = (u_row * (h - s + 1)).long().clamp_max(h - s)
    left = (u_col * (w - s + 1)).long().clamp_max(w - s)
    span = torch.arange(s, device=u_row.device)
    rows = (top[:, None] + span)[:, None, :, None]
    cols = (left[:, None] + span)[:, None, None, :]
    samples = torch.arange(n, device=u_row.device)[:, None, None, None]
    channels = torch.arange(c, device=u_row.device)[None, :, None, None]
    return samples, channels, rows, cols


def _paste(pattern: torch.Tensor, mask: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
    """The s x s ``pattern`` (transposed where asked, per sample) written into each sample's window."""
    n, _, h, w = mask.shape
    s = pattern.shape[0]
    pats = torch.where(per_sample(transpose, pattern[None]), pattern.T[None], pattern[None])
    out = torch.zeros(n, h * w, device=mask.device)
    out[mask.reshape(n, -1)] = pats.to(mask.device).reshape(n, s * s).reshape(-1)
    return out.view(n, 1, h, w)


@dataclass(frozen=True)
class Square:
    name: ClassVar[str] = "square"
    needs_gradients: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    queries: int = 5000  # model queries per sample and restart, the first one included
    p_init: float = 0.0  # 0: the paper's, 0.8 under L∞ and 0.1 under L2
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.queries < 1 or self.restarts < 1 or not 0.0 <= self.p_init <= 1.0:
            raise ValueError("square needs queries >= 1, restarts >= 1 and p_init in [0, 1]")

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
        if norm not in self.norms:
            raise ValueError(f"square attacks linf and l2 only, not {norm!r}")
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        radius = float32_safe_eps(eps, norm, x[0].numel())
        best = x.clone()
        best_margin = torch.full((x.shape[0],), float("inf"), device=x.device)
        for restart in range(self.restarts):
            active = torch.nonzero(best_margin >= 0).flatten()
            if active.numel() == 0:
                break
            t = targets[active] if targets is not None else None
            x_adv, m = self._restart(model, x[active], y[active], t, seeds[active], radius, norm, restart)
            better = m < best_margin[active]
            best[active[better]] = x_adv[better]
            best_margin[active[better]] = m[better]
        return best

    def _restart(
        self,
        model: LogitsFn,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor | None,
        seeds: torch.Tensor,
        radius: float,
        norm: str,
        restart: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run of the search: each sample's best point and its margin."""
        base = restart * _RESTART_STREAMS
        x_best = self._start(x, seeds, radius, norm, base)
        with torch.no_grad():
            logits = model(x_best)
        loss = margin(logits, y, t)
        done = succeeded(logits, y, t)
        iterations = self.queries - 1
        p_init = self.p_init or (0.8 if norm == "linf" else 0.1)
        for i in range(iterations):
            alive = torch.nonzero(~done).flatten()
            if alive.numel() == 0:
                break
            p = p_schedule(p_init, i, iterations)
            u = rng.uniform(seeds[alive], base + 1 + i, 5 + _SIGN_TRIES * x.shape[1])
            propose = self._linf_step if norm == "linf" else self._l2_step
            cand = propose(x[alive], x_best[alive], u, p, radius)
            with torch.no_grad():
                logits = model(cand)
            new_loss = margin(logits, y[alive], t[alive] if t is not None else None)
            better = new_loss < loss[alive]
            keep = alive[better]
            x_best[keep] = cand[better]
            loss[keep] = new_loss[better]
            done[keep] = succeeded(logits[better], y[keep], t[keep] if t is not None else None)
        return x_best, loss

    @staticmethod
    def _start(x: torch.Tensor, seeds: torch.Tensor, radius: float, norm: str, stream: int) -> torch.Tensor:
        """L∞: vertical stripes of ±eps (the paper's start); L2: a grid of pseudo-Gaussian squares with
        random signs, scaled to eps."""
        n, c, h, w = x.shape
        if norm == "linf":
            u = rng.uniform(seeds, stream, c * w).view(n, c, 1, w)
            return (x + radius * torch.where(u < 0.5, -1.0, 1.0)).clamp(0, 1)
        s = max(1, min(h, w) // 5)
        delta = torch.zeros_like(x)
        if s < 2:  # too small an image for squares: random signs per pixel
            u = rng.uniform(seeds, stream, x[0].numel()).view_as(x)
            delta = torch.where(u < 0.5, -1.0, 1.0)
        else:
            tiles = [(r, q) for r in range(h // s) for q in range(w // s)]
            u = rng.uniform(seeds, stream, len(tiles) * (c + 1)).view(n, len(tiles), c + 1)
            pattern = meta_pseudo_gaussian(s).to(x.device)
            top, left = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
            for k, (r, q) in enumerate(tiles):
                pat = torch.where(per_sample(u[:, k, c] < 0.5, pattern[None]), pattern.T[None], pattern[None])
                signs = torch.where(u[:, k, :c] < 0.5, -1.0, 1.0)[:, :, None, None]
                rows, cols = slice(top + r * s, top + (r + 1) * s), slice(left + q * s, left + (q + 1) * s)
                delta[:, :, rows, cols] += pat[:, None] * signs
        norms = flat(delta).norm(dim=1).clamp_min(1e-12)
        return (x + delta / per_sample(norms, x) * radius).clamp(0, 1)

    @staticmethod
    def _linf_step(
        x: torch.Tensor, x_best: torch.Tensor, u: torch.Tensor, p: float, radius: float
    ) -> torch.Tensor:
        """A window of side sqrt(p H W) set to x ± eps per channel, with a sign draw that changes it.

        Only the window is read and written: the sign draws are tried on the s x s patch, not on the
        whole image (on MNIST, eight full-image passes per step cost as much as the model's forward)."""
        n, c, h, w = x.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1) if min(h, w) > 1 else 1
        at = _window_index(n, c, h, w, s, u[:, 0], u[:, 1])
        x_win, best_win = x[at], x_best[at]  # (n, c, s, s)
        signs = torch.where(u[:, 5 : 5 + _SIGN_TRIES * c] < 0.5, -1.0, 1.0).view(n, _SIGN_TRIES, c, 1, 1)
        trials = (x_win[:, None] + radius * signs).clamp(0, 1)  # (n, tries, c, s, s)
        changes = (trials - best_win[:, None]).abs().flatten(2).sum(2) >= 1e-7  # (n, tries)
        # The first draw that changes the window; the first draw when none does.
        first = torch.where(changes.any(1), changes.to(torch.int8).argmax(1), 0)
        cand = x_best.clone()
        cand[at] = trials[torch.arange(n, device=x.device), first]
        return cand

    @staticmethod
    def _l2_step(
        x: torch.Tensor, x_best: torch.Tensor, u: torch.Tensor, p: float, radius: float
    ) -> torch.Tensor:
        """The paper's L2 update: the mass of a second window moves into the first, as a pseudo-Gaussian
        square of random sign per channel added to the first window's own perturbation."""
        n, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + (s % 2 == 0), min(h, w))
        delta = x_best - x
        m1 = _window(n, h, w, s, u[:, 0], u[:, 1])
        m2 = _window(n, h, w, s, u[:, 2], u[:, 3])
        win_norm = (delta * m1).pow(2).sum((2, 3), keepdim=True).sqrt()
        img_norm = delta.pow(2).sum((1, 2, 3), keepdim=True).sqrt()
        both_norm = (delta * (m1 | m2)).pow(2).sum((2, 3), keepdim=True).sqrt()
        signs = torch.where(u[:, 5 : 5 + c] < 0.5, -1.0, 1.0)[:, :, None, None]
        new = _paste(meta_pseudo_gaussian(s), m1, u[:, 4] < 0.5) * signs + delta * m1 / (1e-10 + win_norm)
        new_norm = new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        budget = ((radius**2 - img_norm**2).clamp_min(0) / c + both_norm**2).sqrt()
        delta = torch.where(m2, 0.0, delta)
        delta = torch.where(m1, new / new_norm * budget, delta)
        total = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        return (x + delta / per_sample(total, x) * radius).clamp(0, 1)
