"""Predictions -> the transfer matrices: error rate (Wilson 95%) and confidence on errors, per denominator.

Plain numpy, checkable by hand. For a source s, a target t and one (attack, norm, eps), every sample i
has the source's example x_s(i); the target predicts it. The cell counts the samples of the denominator
whose example the target misclassifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robaudit.metrics import wilson_interval
from robaudit.transfer.result import DENOMINATORS, Cell


@dataclass(frozen=True)
class Predictions:
    """A target's predictions on one source's examples, and the target's and source's clean predictions."""

    pred: np.ndarray
    conf: np.ndarray


def masks(labels: np.ndarray, clean_source: np.ndarray, clean_target: np.ndarray) -> dict[str, np.ndarray]:
    source_ok = clean_source == labels
    return {
        "all": np.ones(len(labels), bool),
        "source-correct": source_ok,
        "both-correct": source_ok & (clean_target == labels),
    }


def cell(
    source: int,
    target: int,
    denominator: str,
    labels: np.ndarray,
    clean_source: np.ndarray,
    clean_target: np.ndarray,
    on_target: Predictions,
    on_source: Predictions,
) -> Cell:
    wrong = on_target.pred != labels
    chosen = masks(labels, clean_source, clean_target)
    counts = {name: [int((wrong & m).sum()), int(m.sum())] for name, m in chosen.items()}
    fooled_source = (on_source.pred != labels) & (clean_source == labels)
    counts["source-fooled"] = [int((wrong & fooled_source).sum()), int(fooled_source.sum())]
    mask = chosen[denominator]
    errors, n = counts[denominator]
    on_errors = on_target.conf[wrong & mask]
    interval = wilson_interval(errors, n)
    return Cell(
        source=source,
        target=target,
        n=n,
        errors=errors,
        error_rate=errors / n if n else None,
        error_rate_ci=list(interval) if interval is not None else None,
        confidence_on_errors=float(on_errors.mean()) if on_errors.size else None,
        counts=counts,
    )


def worst_case_choice(fools_source: Sequence[np.ndarray]) -> np.ndarray:
    """Per sample, which of a stage's attacks (cascade order) supplies the worst-case example: the
    first that fools the source, else the last one (what scan's cascade records for a robust sample)."""
    stacked = np.stack(fools_source)
    first = stacked.argmax(0)
    return np.where(stacked.any(0), first, len(fools_source) - 1)


__all__ = ["DENOMINATORS", "Predictions", "cell", "masks", "worst_case_choice"]
