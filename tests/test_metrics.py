"""Metric maths against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robaudit.metrics import (
    confidence_split,
    median_radius,
    per_class_accuracy,
    radius_per_sample,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # p = 0.8, z = 1.96: centre (0.8 + 1.9208/10) / 1.38415 = 0.71674, half-width
        # 1.41603 * sqrt(0.016 + 0.00960) = 0.22658 (the textbook 0.490-0.943).
        (8, 10, 0.4902, 0.9433),
        # k = 0: the interval is [0, z^2 / (n + z^2)] = [0, 3.8415 / 13.8415].
        (0, 10, 0.0, 0.27753),
        (10, 10, 0.72247, 1.0),
        # p = 0.5, n = 100: centre 0.5, half-width (1.96 / 1.038415) * sqrt(0.0025 + 0.000096) = 0.09617.
        (50, 100, 0.40383, 0.59617),
    ],
)
def test_wilson_interval_matches_hand_computation(k: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(k, n)
    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=1e-4)
    assert interval[1] == pytest.approx(high, abs=1e-4)


def test_wilson_interval_is_none_without_samples_and_narrows_with_n() -> None:
    assert wilson_interval(0, 0) is None
    small, large = wilson_interval(40, 50), wilson_interval(800, 1000)
    assert small is not None and large is not None
    assert large[1] - large[0] < small[1] - small[0]
    assert small[0] < 0.8 < small[1] and large[0] < 0.8 < large[1]


def test_confidence_split() -> None:
    conf = np.array([0.9, 0.6, 0.3, 0.8])
    correct = np.array([True, False, False, True])
    assert confidence_split(conf, correct) == pytest.approx((0.65, 0.85, 0.45))
    overall, right, wrong = confidence_split(conf, np.ones(4, bool))
    assert wrong is None and right == pytest.approx(overall)


def test_per_class_accuracy_counts_each_class_and_marks_empty_ones() -> None:
    labels = np.array([0, 0, 0, 2, 2])
    hit = np.array([True, False, True, True, True])
    assert per_class_accuracy(labels, hit, 3) == pytest.approx([2 / 3, None, 1.0])


def test_radius_is_the_smallest_fooling_eps() -> None:
    clean_correct = np.array([True, True, True, False, True])
    fooled_01 = np.array([True, False, False, False, False])
    fooled_02 = np.array([True, True, False, False, False])  # cumulative, as the worst case is
    radius = radius_per_sample([fooled_01, fooled_02], [0.1, 0.2], clean_correct)
    assert radius.tolist()[:4] == [0.1, 0.2, math.inf, 0.0]
    assert math.isinf(radius[4])
    # Sorted radii: 0, 0.1, 0.2, inf, inf -> the median (third of five) is 0.2.
    assert median_radius(radius) == 0.2
    # With more than half surviving every eps the median lies above the sweep.
    assert median_radius(np.array([0.1, math.inf, math.inf])) is None
    assert median_radius(np.array([])) is None
