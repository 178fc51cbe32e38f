"""Exact one-pixel verdicts on 8-bit greyscale images: bound first, sweep only what bounding leaves open.

Threat model: any one pixel position set to any of the 256 grey levels k/255 (the image is already on
that grid). For each position, the margin ``logit_y - logit_j`` is bounded from below over the whole
range [0, 1] of that one pixel, the rest of the image fixed (IBP or CROWN, with the input set the box
that is the image except at that position, which spans [0, 1]). Every position whose bound is above
zero for every class cannot be fooled at any of its 256 values, so only the other positions are swept
exhaustively, 256 forward passes each, batched. The verdict is exact: robust, or not robust with a
counterexample, and it is decided by the sweep's forward passes, never by a bound alone.

Differential evolution (``attacks/onepixel.py``) searches continuous values; this checks the 8-bit grid
that an image file can hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robaudit.certify.bounds import InputSet, margin_lower_bounds
from robaudit.certify.ops import Op

LEVELS = 256
_BOUND_ELEMENTS = 1 << 24  # positions bounded per pass: (positions × widest layer) kept near this


@dataclass(frozen=True)
class PixelBox(InputSet):
    """The image ``x0`` with one position per batch row free over [0, 1]: an explicit box."""

    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lo, self.hi


@dataclass
class OnePixelExact:
    verdicts: list[bool]  # True: no single pixel at any 8-bit level changes the prediction
    counterexamples: list[torch.Tensor | None]  # for False: an image that is misclassified
    positions_total: int  # positions of the samples that were bounded (clean-correct samples)
    positions_certified: int  # positions the bound closed: never swept
    positions_swept: int  # positions swept over all 256 levels (the sweep stops at a counterexample)

    @property
    def skipped_fraction(self) -> float:
        """The fraction of the exhaustive sweep (positions × 256 levels) that was not run."""
        return 1.0 - self.positions_swept / self.positions_total if self.positions_total else 1.0


def _forward(ops: list[Op], x: torch.Tensor) -> torch.Tensor:
    for op in ops:
        x = op.forward(x)
    return x


def position_bounds(
    ops: list[Op],
    x0: torch.Tensor,
    y: int,
    num_classes: int,
    method: str = "crown",
    crown_max: int = 0,
    positions: torch.Tensor | None = None,
    ranges: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per position of the image ``x0`` (*shape) (or of ``positions``), a lower bound on
    min_j (logit_y - logit_j) over that pixel's range [0, 1] (or, with ``ranges``, over [lo, hi] given
    per entry of ``positions``). ``crown_max``: intermediate layers this small get CROWN bounds (0:
    IBP's; one pixel moves so little that they are already tight)."""
    flat = x0.reshape(-1)
    n = flat.numel()
    todo = torch.arange(n) if positions is None else positions
    widest = max(flat.numel(), *(_forward(ops[: i + 1], x0[None])[0].numel() for i in range(len(ops))))
    chunk = max(1, _BOUND_ELEMENTS // widest)
    out = []
    for start in range(0, len(todo), chunk):
        pos = todo[start : start + chunk]
        base = flat.expand(len(pos), n)
        lo, hi = base.clone(), base.clone()
        rows = torch.arange(len(pos))
        lo[rows, pos] = 0.0 if ranges is None else ranges[0][start : start + chunk].to(lo.dtype)
        hi[rows, pos] = 1.0 if ranges is None else ranges[1][start : start + chunk].to(hi.dtype)
        shape = (len(pos), *x0.shape)
        inputs = PixelBox(base.reshape(shape), 1.0, "linf", lo.reshape(shape), hi.reshape(shape))
        labels = torch.full((len(pos),), y, dtype=torch.long)
        lb, _ = margin_lower_bounds(ops, inputs, labels, method, num_classes, crown_max=crown_max)
        out.append(lb.min(1).values)
    return torch.cat(out)


def _sweep(ops: list[Op], x0: torch.Tensor, y: int, positions: torch.Tensor, batch: int) -> tuple:
    """Try every level at each position, weakest first; (first fooling image or None, positions swept)."""
    flat = x0.reshape(-1)
    levels = torch.arange(LEVELS, dtype=flat.dtype) / (LEVELS - 1)
    per_pass = max(1, batch // LEVELS)
    for start in range(0, len(positions), per_pass):
        pos = positions[start : start + per_pass]
        imgs = flat.expand(len(pos), LEVELS, flat.numel()).clone()
        imgs[torch.arange(len(pos))[:, None], :, pos[:, None]] = levels
        imgs = imgs.reshape(-1, *x0.shape)
        logits = _forward(ops, imgs)
        fooled = (logits > logits[:, y : y + 1]).any(1)
        if bool(fooled.any()):
            return imgs[int(torch.nonzero(fooled)[0])], start + len(pos)
    return None, len(positions)


def onepixel_exact(
    ops: list[Op],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "crown",
    crown_max: int = 0,
    sweep_batch: int = 8192,
) -> OnePixelExact:
    """Exact one-pixel verdicts for greyscale images ``x`` (N, *shape) on the 8-bit grid of [0, 1]
    (uint8 is divided by 255), labels ``y`` (N,). See the module docstring."""
    x64 = x.to(torch.float64) / 255.0 if x.dtype == torch.uint8 else x.detach().to(torch.float64).cpu()
    verdicts: list[bool] = []
    examples: list[torch.Tensor | None] = []
    total = certified = swept = 0
    with torch.no_grad():
        clean = _forward(ops, x64)
        k = clean.shape[1]
        for i in range(len(x64)):
            yi = int(y[i])
            if bool((clean[i] > clean[i, yi]).any()):  # already misclassified: no pixel needed
                verdicts.append(False)
                examples.append(x64[i].clone())
                continue
            lb = position_bounds(ops, x64[i], yi, k, "ibp")  # cheap first; CROWN where IBP leaves it open
            weak = torch.nonzero(lb <= 0).flatten()
            if method == "crown" and len(weak):
                tighter = position_bounds(ops, x64[i], yi, k, "crown", crown_max, weak)
                lb[weak] = torch.maximum(lb[weak], tighter)
            open_pos = torch.nonzero(lb <= 0).flatten()
            open_pos = open_pos[lb[open_pos].argsort()]
            total += lb.numel()
            certified += lb.numel() - len(open_pos)
            example, n_swept = _sweep(ops, x64[i], yi, open_pos, sweep_batch)
            swept += n_swept
            verdicts.append(example is None)
            examples.append(example)
    return OnePixelExact(verdicts, examples, total, certified, swept)
