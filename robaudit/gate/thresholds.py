"""Threshold checks on the audit's metrics: the Check, its outcome, and evaluating checks on a result.

A check never passes silently: a selector that matches no row of the result, or a metric the result
does not have, fails the check with a message that says what is there instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from robaudit.gate.selectors import ambiguous, available, find_rows, pct, selector, where
from robaudit.results import WORST_CASE, AttackRow, AuditResult

ROW_METRICS: tuple[str, ...] = (
    "robust_accuracy",
    "robust_error",
    "attack_success_rate",
    "mean_confidence_adversarial_errors",
    "certified_robust_accuracy",
)
METRICS: tuple[str, ...] = (*ROW_METRICS, "clean_accuracy")
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")

_LABELS = {
    "robust_accuracy": "robust accuracy",
    "robust_error": "robust error",
    "attack_success_rate": "attack success rate",
    "mean_confidence_adversarial_errors": "mean confidence on adversarial errors",
    "clean_accuracy": "clean accuracy",
    "certified_robust_accuracy": "certified robust accuracy",
}


@dataclass(frozen=True)
class Check:
    """One threshold on one metric. ``norm``/``eps`` select the row; clean accuracy has neither."""

    metric: str
    norm: str | None = None
    eps: float | None = None
    attack: str = WORST_CASE
    min: float | None = None  # fail when value < min
    max: float | None = None  # fail when value > max
    use_interval: bool = False  # compare the least favourable end of the 95% CI
    # The decimals eps was written with: 0.0314 (4) picks the row of 8/255, which rounds to it. None:
    # eps is exact (8/255 written as a fraction, a pixel count), matched within EPS_TOLERANCE.
    eps_decimals: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; use one of {', '.join(METRICS)}")
        if self.metric == "clean_accuracy":
            if self.norm is not None or self.eps is not None:
                raise ValueError("clean_accuracy takes no norm or eps")
        elif not self.norm or self.eps is None:
            raise ValueError(f"{self.metric} needs a norm ({', '.join(NORMS)}) and an eps")
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")

    @property
    def selector(self) -> str | None:
        """``attack:norm:eps`` as on the command line, or None for clean accuracy."""
        if self.norm is None or self.eps is None:
            return None
        if self.eps_decimals is not None and self.eps_decimals <= 12:  # as written: 0.0314, 0.10
            return f"{self.attack}:{self.norm}:{self.eps:.{self.eps_decimals}f}"
        return selector(self.attack, self.norm, self.eps)

    @property
    def name(self) -> str:
        """A stable id, e.g. ``robust_accuracy@worst-case:linf:0.1 >= 0.8``."""
        subject = self.metric if self.selector is None else f"{self.metric}@{self.selector}"
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{subject} {' and '.join(bounds)}"


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    check: Check
    value: float | None  # the metric (None if the row or the metric is missing)
    compared: float | None  # the number actually compared: the value, or a CI end with use_interval
    passed: bool
    message: str  # one sentence


def _interval(result: AuditResult, row: AttackRow | None, metric: str) -> list[float] | None:
    if metric == "clean_accuracy":
        return result.clean_accuracy_ci
    assert row is not None
    if metric == "robust_accuracy":
        return row.robust_accuracy_ci
    if metric == "robust_error" and row.robust_accuracy_ci is not None:
        lo, hi = row.robust_accuracy_ci
        return [1.0 - hi, 1.0 - lo]
    if metric == "attack_success_rate":
        return row.attack_success_rate_ci
    if metric == "certified_robust_accuracy":
        return row.certified_robust_accuracy_ci
    return None


def _failed(check: Check, message: str) -> CheckOutcome:
    return CheckOutcome(check.name, check, None, None, False, message)


def _evaluate(result: AuditResult, check: Check) -> CheckOutcome:
    label = _LABELS[check.metric]
    row: AttackRow | None = None
    if check.metric == "clean_accuracy":
        subject = label
        value: float | None = result.clean_accuracy
    else:
        assert check.norm is not None and check.eps is not None
        found = find_rows(result.rows, check.attack, check.norm, check.eps, check.eps_decimals)
        if not found:
            return _failed(
                check,
                f"no row {check.selector} in the results, so {check.metric} cannot be checked and the "
                f"gate fails; the results have {available(result.rows)}",
            )
        if len(found) > 1:
            written = (check.selector or "").rsplit(":", 1)[-1]
            return _failed(check, f"{check.selector}: {ambiguous(found, written)}, so the gate fails")
        row = found[0]
        subject = f"{label} {where(check.attack, row.norm, row.eps)}"
        value = getattr(row, check.metric)
    if value is None:
        why = {
            "attack_success_rate": "no sample was classified correctly on clean input",
            "mean_confidence_adversarial_errors": "no adversarial input was misclassified",
            "certified_robust_accuracy": "no certificate ran for this threat model: run with --certify, "
            "under linf or l2, on a model of supported layers",
        }.get(check.metric, "the results do not record it")
        return _failed(check, f"{subject} is not available ({why}), so the check fails")
    return _compare(result, check, row, subject, float(value))


def _compare(
    result: AuditResult, check: Check, row: AttackRow | None, subject: str, value: float
) -> CheckOutcome:
    """Hold the value (or with ``use_interval`` the least favourable CI end) against the bounds."""
    notes: list[str] = []
    failures: list[str] = []
    compared = value
    interval = _interval(result, row, check.metric) if check.use_interval else None
    if check.use_interval and interval is None:
        notes.append("no confidence interval recorded for it, so the value itself is compared")
    for bound, kind in ((check.min, "min"), (check.max, "max")):
        if bound is None:
            continue
        if interval is not None:
            end = float(interval[0] if kind == "min" else interval[1])
            notes.append(f"95% CI {'lower' if kind == 'min' else 'upper'} end {pct(end)}")
        else:
            end = value
        compared = end  # with both bounds, the last one compared (the max) is reported
        if kind == "min" and end < bound:
            failures.append(f"below the minimum {pct(bound)}")
        elif kind == "max" and end > bound:
            failures.append(f"above the maximum {pct(bound)}")
    detail = f" ({'; '.join(notes)})" if notes else ""
    message = f"{subject} is {pct(value)}{detail}, {_verdict(check, failures)}"
    return CheckOutcome(check.name, check, value, compared, not failures, message)


def _verdict(check: Check, failures: list[str]) -> str:
    if check.min is not None and check.max is not None and not failures:
        return f"within [{pct(check.min)}, {pct(check.max)}]"
    if failures:
        return " and ".join(failures)
    if check.min is not None:
        return f"at or above the minimum {pct(check.min)}"
    assert check.max is not None
    return f"at or below the maximum {pct(check.max)}"


def evaluate_checks(result: AuditResult, checks: Sequence[Check]) -> list[CheckOutcome]:
    """One outcome per check, in order. A check whose row is missing fails, listing what there is."""
    return [_evaluate(result, check) for check in checks]


def gate_passed(outcomes: Sequence[CheckOutcome]) -> bool:
    """True when every outcome passed (and vacuously when there are none)."""
    return all(outcome.passed for outcome in outcomes)
