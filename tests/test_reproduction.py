"""Reproduction of a published table: the PyTorch FGSM tutorial's accuracy-vs-eps curve on MNIST.

The tutorial ("Adversarial Example Generation", pytorch.org/tutorials) attacks a LeNet trained on
MNIST with inputs on [0, 1] and reports test accuracy under FGSM of 98.1, 94.3, 85.1, 68.3, 43.0,
20.8 and 8.7% at eps 0, 0.05, ..., 0.3. Our sample LeNet is a different network (no dropout,
trained on 8,000 images), so the numbers are not the same; the shape is what must reproduce: a
small loss at 0.05, the steepest fall in the middle of the range, and most images fooled by 0.25.
"""

from __future__ import annotations

from pathlib import Path

from robaudit.api import run_audit
from robaudit.config import AuditConfig

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
PUBLISHED = (0.981, 0.9426, 0.851, 0.6826, 0.4301, 0.2082, 0.0869)


def test_fgsm_accuracy_curve_has_the_published_shape() -> None:
    result = run_audit(
        AuditConfig(model=SAMPLES / "mnist_cnn.pt", data=str(SAMPLES / "mnist_holdout.npz"), eps=EPS)
    )
    acc = [r.robust_accuracy for r in result.rows if r.attack == "fgsm"]
    assert len(acc) == len(EPS)
    assert acc[0] == result.clean_accuracy > 0.97
    assert all(a > b for a, b in zip(acc, acc[1:], strict=False))  # strictly falling
    drops = [a - b for a, b in zip(acc, acc[1:], strict=False)]
    published_drops = [a - b for a, b in zip(PUBLISHED, PUBLISHED[1:], strict=False)]
    assert drops[0] < 0.10  # like the tutorial's 3.8 points: FGSM at 0.05 barely hurts
    steepest = max(range(len(drops)), key=drops.__getitem__)
    assert steepest in (1, 2, 3)  # the fall is steepest between 0.1 and 0.2 (tutorial: 0.15 -> 0.2)
    published_steepest = max(range(len(published_drops)), key=published_drops.__getitem__)
    assert abs(steepest - published_steepest) <= 1  # within one eps step of the tutorial's steepest fall
    robust_error_025 = 1 - acc[EPS.index(0.25)]
    assert robust_error_025 > 0.75  # tutorial: 79.2% of the test set misclassified at 0.25
