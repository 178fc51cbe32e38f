"""Robustness radius by bisection: each sample's smallest eps at which the attacks fool it.

The sweep gives each sample's radius only to the grid: "fooled at 0.2, not at 0.1". With
``--radius-bisect STEPS`` the runner narrows every such interval by halving it STEPS times, running
the same cascade of attacks at the midpoint. The result is still an upper bound on the true minimal
adversarial perturbation (a stronger attack could fool the sample at a smaller eps), and, because an
attack can succeed at eps and fail at a slightly larger one, bisection assumes success is monotone in
eps; the sweep point that fooled the sample always stays a valid upper end.

Samples are grouped by their current midpoint, so attacks run with a scalar eps as everywhere else
and every candidate is verified by the runner's own checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from robaudit.attacks.base import Attack
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.verification import verify
from robaudit.data import Dataset
from robaudit.models import ModelAdapter


def bisect_radius(
    adapter: ModelAdapter,
    dataset: Dataset,
    indices: np.ndarray,
    attacks: Sequence[Attack],
    norm: str,
    low: np.ndarray,
    high: np.ndarray,
    *,
    steps: int,
    seed: int,
    data_range: tuple[float, float],
    batch_size: int,
) -> np.ndarray:
    """Narrow [low, high] per sample; samples with high = inf (never fooled) are left alone.

    ``indices`` are dataset indices, ``low``/``high`` per-sample bounds on the radius (the attacks
    fooled the sample at ``high`` and not at ``low``). Returns the narrowed upper bounds.
    """
    low, high = low.astype(np.float64).copy(), high.astype(np.float64).copy()
    todo = np.flatnonzero(np.isfinite(high) & (high > 0))
    if steps <= 0 or todo.size == 0:
        return high
    x_all = torch.from_numpy(dataset.to_unit(dataset.read(indices[todo]), data_range))
    y_all = torch.from_numpy(dataset.labels[indices[todo]].astype(np.int64))
    seeds_all = torch.from_numpy(sample_seeds(seed, indices[todo]))
    lo, hi = low[todo], high[todo]
    for _ in range(steps):
        mid = (lo + hi) / 2
        fooled = np.zeros(todo.size, bool)
        for value in np.unique(mid):
            group = np.flatnonzero(mid == value)
            for start in range(0, group.size, batch_size):
                part = group[start : start + batch_size]
                fooled[part] = _cascade_fools(
                    adapter, x_all[part], y_all[part], seeds_all[part], attacks, norm, float(value)
                )
        hi = np.where(fooled, mid, hi)
        lo = np.where(fooled, lo, mid)
    high[todo] = hi
    return high


def _cascade_fools(
    adapter: ModelAdapter,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: torch.Tensor,
    attacks: Sequence[Attack],
    norm: str,
    eps: float,
) -> np.ndarray:
    """Whether any attack of the cascade fools each sample at eps (verified, re-predicted)."""
    x, y, seeds = x.to(adapter.device), y.to(adapter.device), seeds.to(adapter.device)
    fooled = torch.zeros(len(y), dtype=torch.bool, device=adapter.device)
    for attack in attacks:
        active = torch.nonzero(~fooled).flatten()
        if active.numel() == 0:
            break
        model_fn = adapter.logits if attack.needs_gradients else adapter.predict_logits
        x_adv = attack(model_fn, x[active], y[active], eps=eps, norm=norm, seeds=seeds[active])
        verify(x_adv, x[active], eps, norm, attack.name)
        fooled[active] = adapter.predict_logits(x_adv).argmax(1) != y[active]
    return fooled.cpu().numpy()
