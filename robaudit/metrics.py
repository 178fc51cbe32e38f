"""Metric maths on per-sample outcomes: plain numpy, no torch, each function checkable by hand.

Accuracies carry 95% Wilson score intervals (Wilson 1927): unlike the normal approximation they stay
inside [0, 1] and behave at 0 and n successes, which is where robust accuracy often sits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion successes/n, or None when n == 0."""
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def median_or_none(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def confidence_split(
    conf: np.ndarray, correct: np.ndarray
) -> tuple[float | None, float | None, float | None]:
    """Mean top-1 confidence overall, on correctly classified samples and on errors."""
    return mean_or_none(conf), mean_or_none(conf[correct]), mean_or_none(conf[~correct])


def per_class_accuracy(labels: np.ndarray, hit: np.ndarray, num_classes: int) -> list[float | None]:
    """Fraction of each class's samples with ``hit``; None for a class with no samples."""
    n = np.bincount(labels, minlength=num_classes)
    k = np.bincount(labels, weights=hit.astype(np.float64), minlength=num_classes)
    return [float(k[c] / n[c]) if n[c] else None for c in range(num_classes)]


def radius_per_sample(
    fooled_by_eps: Sequence[np.ndarray], eps: Sequence[float], clean_correct: np.ndarray
) -> np.ndarray:
    """Each sample's smallest eps in the sweep at which it is fooled: 0 when wrong on clean input,
    +inf when no eps in the sweep fooled it. ``fooled_by_eps[i]`` is the worst case at ``eps[i]``
    (ascending), already cumulative over smaller eps."""
    radius = np.full(clean_correct.shape, np.inf)
    for e, fooled in sorted(zip(eps, fooled_by_eps, strict=True), key=lambda t: t[0], reverse=True):
        radius[fooled] = e
    radius[~clean_correct] = 0.0
    return radius


def median_radius(radius: np.ndarray) -> float | None:
    """The median of the per-sample radii (lower median for even counts, so it is a swept eps), or
    None when more than half the samples survive the largest eps (the median lies above the sweep)."""
    if radius.size == 0:
        return None
    value = float(np.sort(radius)[(radius.size - 1) // 2])
    return value if math.isfinite(value) else None
