"""Certification of the one-pixel threat model (l0, 1 pixel) on greyscale images, as a scan runs it.

Per sample still robust after the attacks, every pixel position is bounded over the pixel's whole
range [0, 1] (``onepixel_exact.position_bounds``). With ``ibp`` or ``crown`` that is all: the sample is
certified when every position's margin bound clears the tolerance. With ``exact`` (and ``auto``) the
positions left open are swept over the 256 levels k/255, weakest first:

- a level that the PyTorch module misclassifies is a counterexample inside the threat model (one pixel
  set to a value in [0, 1]), whatever grid the data is on: ``REFUTED``, like a MILP counterexample. The
  image is handed back (its changed pixel is a level k/255, on the grid of 8-bit data already), and the
  shard counts it as fooled once the reference runtime misclassifies it too;
- when no level fools, the sample is robust on the 8-bit grid, which is the exact answer for 8-bit
  images. The scan's attacks search continuous values though, so before certifying, each open position
  is also bounded over each of the 255 intervals between levels: only when all of them clear the
  tolerance is the sample ``CERTIFIED`` (sound for any value, on- or off-grid data). Otherwise it stays
  ``NOT_CERTIFIED`` (unknown: robust at every 8-bit level, not proven between levels).

Every ``CERTIFIED`` is thus sound for any single-pixel change in [0, 1], and a sample that an attack
fooled is never certified (``run.check_sound`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robaudit.certify.bounds import sizes
from robaudit.certify.onepixel_exact import LEVELS, _sweep, position_bounds
from robaudit.certify.ops import Op
from robaudit.certify.walk import Walk

NOT_CERTIFIED, CERTIFIED, REFUTED = 0, 1, 2  # certify.run's codes (imported there, so not from it)
# The sweep's forward passes hold (images x widest layer) float64 values: about 256 MiB at this.
SWEEP_ELEMENTS = 1 << 25


def covers(norm: str, eps: float, walk: Walk | None) -> bool:
    """Whether the one-pixel certificate applies: l0 with 1 pixel, a greyscale model the bounds walk."""
    return (
        norm == "l0"
        and int(eps) == 1
        and walk is not None
        and walk.ops is not None
        and len(walk.sample_shape) == 3
        and walk.sample_shape[0] == 1
    )


@dataclass
class OnePixelOutcome:
    codes: np.ndarray  # (N,) int8: certify.run's codes for the samples bounded (NULL elsewhere unchanged)
    swept: np.ndarray  # (N,) int64: positions swept over 256 levels; -1 for samples never bounded


def _bounds(ops: list[Op], x0: torch.Tensor, y: int, k: int, method: str) -> torch.Tensor:
    """Per position, the margin bound over [0, 1]: IBP first, CROWN where IBP leaves it open."""
    lb = position_bounds(ops, x0, y, k, "ibp")
    if method != "ibp":
        weak = torch.nonzero(lb <= 0).flatten()
        if len(weak):
            lb[weak] = torch.maximum(lb[weak], position_bounds(ops, x0, y, k, "crown", 0, weak))
    return lb


def _between_levels(
    ops: list[Op], x0: torch.Tensor, y: int, k: int, positions: torch.Tensor, tol: float
) -> bool:
    """Whether every open position's margin clears ``tol`` over each interval between 8-bit levels."""
    levels = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)
    pos = positions.repeat_interleave(LEVELS - 1)
    lo, hi = levels[:-1].repeat(len(positions)), levels[1:].repeat(len(positions))
    lb = position_bounds(ops, x0, y, k, "ibp", 0, pos, (lo, hi))
    weak = torch.nonzero(lb <= tol).flatten()
    if len(weak):
        tighter = position_bounds(ops, x0, y, k, "crown", 0, pos[weak], (lo[weak], hi[weak]))
        lb[weak] = torch.maximum(lb[weak], tighter)
    return bool((lb > tol).all())


def certify_onepixel(
    ops: list[Op],
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    correct: np.ndarray,
    fooled: np.ndarray,
    method: str,
    tol: float,
    codes: np.ndarray,
    examples: dict[int, torch.Tensor],
) -> np.ndarray:
    """Write codes for the clean-correct samples of images ``x`` (N, 1, H, W) float64 on [0, 1] into
    ``codes`` (those an attack fooled are bounded, so a wrong bound shows, but never swept), and each
    REFUTED sample's fooling image into ``examples``; returns the positions swept per sample (-1: no
    sweep ran for it)."""
    swept = np.full(len(y), -1, np.int64)
    exact = method not in ("ibp", "crown")
    batch = max(LEVELS, SWEEP_ELEMENTS // max(sizes(ops, x[:1])))  # a pass covers at least one position
    with torch.no_grad():
        for row in np.flatnonzero(correct).tolist():
            yi = int(y[row])
            lb = _bounds(ops, x[row], yi, num_classes, method)
            open_pos = torch.nonzero(lb <= tol).flatten()
            codes[row] = NOT_CERTIFIED if len(open_pos) else CERTIFIED
            if not exact or fooled[row]:
                continue
            open_pos = open_pos[lb[open_pos].argsort()]
            example, swept[row] = _sweep(ops, x[row], yi, open_pos, batch)
            if example is not None:
                codes[row] = REFUTED
                examples[row] = example
            elif len(open_pos) and _between_levels(ops, x[row], yi, num_classes, open_pos, tol):
                codes[row] = CERTIFIED
    return swept


def sweep_note(swept: np.ndarray, positions: int, seconds: float, n_bounded: int) -> str | None:
    """The one-line note on how much of the exhaustive sweep bounding skipped, and the time it took
    (``seconds`` of certification over ``n_bounded`` clean-correct samples)."""
    bounded = swept >= 0
    n = int(bounded.sum())
    if n == 0:
        return None
    total = n * positions
    done = int(swept[bounded].sum())
    return (
        f"certify: one-pixel (l0 1 pixel): bounding skipped {100 * (1 - done / total):.2f}% of the "
        f"256-level sweep ({done} of {total} pixel positions swept over {n} samples); "
        f"{seconds / max(n_bounded, 1):.3f} s per clean-correct sample"
    )
