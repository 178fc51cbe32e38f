"""The CI gate: thresholds on the audit's metrics, and regressions against a baseline audit.

Reads only the AuditResult and never imports torch. A check never passes silently: a selector that
matches no row of the result, or a metric the result does not have, fails the check with a message
that says what is there instead.

Thresholds are written on the command line as ``METRIC@[ATTACK:]NORM:EPS=VALUE``, e.g.
``robust_accuracy@pgd:linf:0.1=0.80`` or ``robust_accuracy@linf:8/255=0.5`` (the attack defaults to
the worst case over all attacks), and ``clean_accuracy=0.95`` (no selector). For ``l0`` the eps is a
number of pixel locations: ``attack_success_rate@onepixel:l0:1=0.1``. Values are fractions in [0, 1].
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from robaudit.config import EPS_TOLERANCE, parse_eps
from robaudit.errors import InputError, UsageError
from robaudit.results import WORST_CASE, AttackRow, AuditResult

# Differences of robust accuracy below this are rounding, not a drop (0.60 - 0.58 > 0.02 in floats).
_DROP_TOLERANCE = 1e-9

ROW_METRICS: tuple[str, ...] = (
    "robust_accuracy",
    "robust_error",
    "attack_success_rate",
    "mean_confidence_adversarial_errors",
)
METRICS: tuple[str, ...] = (*ROW_METRICS, "clean_accuracy")
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")

_LABELS = {
    "robust_accuracy": "robust accuracy",
    "robust_error": "robust error",
    "attack_success_rate": "attack success rate",
    "mean_confidence_adversarial_errors": "mean confidence on adversarial errors",
    "clean_accuracy": "clean accuracy",
}

# The settings that make two audits comparable, besides the model's input shape and the data.
BASELINE_SETTINGS: tuple[str, ...] = (
    "attacks",
    "pgd",
    "onepixel",
    "norms",
    "eps",
    "target",
    "seed",
    "attack_kwargs",
)

_METRIC_NAME = re.compile(r"[a-z][a-z0-9_-]*", re.ASCII)
_ATTACK_NAME = re.compile(r"[A-Za-z0-9_.+-]+", re.ASCII)
_EPS_TEXT = re.compile(r"[0-9.]+(/[0-9.]+)?", re.ASCII)
_PIXELS_TEXT = re.compile(r"[0-9]{1,6}", re.ASCII)
_VALUE_TEXT = re.compile(r"([0-9]{1,20}(\.[0-9]*)?|\.[0-9]+)", re.ASCII)


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
        return _selector(self.attack, self.norm, self.eps)

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


# --------------------------------------------------------------------------------------------------
# Parsing


def _eps_text(norm: str, eps: float) -> str:
    """Eps as a user would write it: a pixel count for l0, 8/255 where that is what it is."""
    if norm == "l0":
        return str(int(eps)) if float(eps).is_integer() else f"{eps:g}"
    if len(repr(float(eps))) > 8:
        grey = eps * 255
        if abs(grey - round(grey)) < 1e-9 and round(grey) > 0:
            return f"{round(grey)}/255"
    return f"{eps:.6g}"


def _selector(attack: str, norm: str, eps: float) -> str:
    return f"{attack}:{norm}:{_eps_text(norm, eps)}"


_EXAMPLES = {
    "min": "robust_accuracy@pgd:linf:8/255=0.5",
    "max": "attack_success_rate@linf:0.1=0.2",
}


def parse_threshold(text: str, kind: Literal["min", "max"], flag: str) -> Check:
    """Parse ``METRIC@[ATTACK:]NORM:EPS=VALUE`` or ``clean_accuracy=VALUE`` into a Check.

    ``kind`` says whether VALUE is a minimum (``--fail-under``) or a maximum (``--fail-over``). Any
    malformed text raises a one-line UsageError naming ``flag``, the text, the problem and an example.
    """
    example = _EXAMPLES.get(kind, _EXAMPLES["min"])

    def bad(problem: str) -> UsageError:
        # Every piece of the user's text goes in through repr(), so the message stays one line.
        return UsageError(f"{flag} {text!r}: {problem}; write e.g. {flag} {example}")

    if kind not in ("min", "max"):
        raise UsageError(f"{flag}: the threshold kind must be min or max, not {kind!r}")
    if not isinstance(text, str) or not text.strip():
        raise bad("empty threshold")
    if text.count("=") != 1:
        raise bad(
            "expected one '=' between the metric and its value" if "=" not in text else "more than one '='"
        )
    lhs, value_text = (part.strip() for part in text.split("="))
    value = _parse_value(value_text, bad)
    if "@" in lhs:
        if lhs.count("@") != 1:
            raise bad("more than one '@'")
        metric_text, selector = (part.strip() for part in lhs.split("@"))
    else:
        metric_text, selector = lhs, None
    metric = _parse_metric(metric_text, bad)
    low, high = (value, None) if kind == "min" else (None, value)
    if metric == "clean_accuracy":
        if selector is not None:
            raise bad("clean_accuracy takes no '@ATTACK:NORM:EPS' selector; write clean_accuracy=VALUE")
        return Check(metric=metric, min=low, max=high)
    if selector is None:
        raise bad(f"{metric} needs a selector after '@': [ATTACK:]NORM:EPS, e.g. {metric}@linf:0.1")
    attack, norm, eps = _parse_selector(selector, bad)
    return Check(metric=metric, norm=norm, eps=eps, attack=attack, min=low, max=high)


def _parse_value(value_text: str, bad: Any) -> float:
    if not value_text:
        raise bad("no value after '='")
    if not _VALUE_TEXT.fullmatch(value_text):
        raise bad(f"value {value_text!r} is not a number")
    value = float(value_text)
    if not math.isfinite(value) or value > 1.0:
        hint = " (values are fractions: for 80% write 0.8)" if 1.0 < value <= 100.0 else ""
        raise bad(f"value {value_text!r} is not a fraction in [0, 1]{hint}")
    return value


def _parse_metric(metric_text: str, bad: Any) -> str:
    if not metric_text:
        raise bad(f"no metric before the value; use one of {', '.join(METRICS)}")
    metric = metric_text.lower().replace("-", "_")
    if not _METRIC_NAME.fullmatch(metric_text.lower()) or metric not in METRICS:
        raise bad(f"unknown metric {metric_text!r}; use one of {', '.join(METRICS)}")
    return metric


def _parse_selector(selector: str, bad: Any) -> tuple[str, str, float]:
    parts = [part.strip() for part in selector.split(":")]
    if len(parts) == 2:
        attack, norm_text, eps_text = WORST_CASE, parts[0], parts[1]
    elif len(parts) == 3:
        attack, norm_text, eps_text = parts
    elif len(parts) == 4 and parts[0].lower() == "art":
        attack, norm_text, eps_text = f"art:{parts[1]}", parts[2], parts[3]
    elif len(parts) < 2:
        raise bad(f"selector {selector!r} needs NORM:EPS, optionally after ATTACK:")
    else:
        raise bad(
            f"selector {selector!r} has too many ':'; use [ATTACK:]NORM:EPS (ART attacks as art:ClassName)"
        )
    name = attack[4:] if attack.lower().startswith("art:") else attack
    if not _ATTACK_NAME.fullmatch(name):
        raise bad(f"attack name {attack!r} is not valid; use e.g. pgd, fgsm, onepixel, art:DeepFool")
    norm = norm_text.lower()
    if norm not in NORMS:
        raise bad(f"unknown norm {norm_text!r}; use one of {', '.join(NORMS)}")
    if norm == "l0":
        if not _PIXELS_TEXT.fullmatch(eps_text) or int(eps_text) < 1:
            raise bad(f"for l0 the eps is a number of pixels (1 or more), not {eps_text!r}")
        return attack, norm, float(int(eps_text))
    not_a_number = f"eps {eps_text!r} is not a number such as 0.1 or 8/255"
    if not _EPS_TEXT.fullmatch(eps_text) or len(eps_text) > 40:
        raise bad(not_a_number)
    try:
        eps = parse_eps(eps_text, field="eps")
    except (UsageError, ValueError, ArithmeticError):
        _, _, den = eps_text.partition("/")
        if den.replace(".", "").strip("0") == "" and den.count(".") <= 1 and den not in ("", "."):
            raise bad(f"eps {eps_text!r} divides by zero") from None
        raise bad(not_a_number) from None
    if norm == "linf" and eps > 1.0:
        raise bad(
            f"linf eps {eps_text!r} is larger than 1, but eps is on the [0, 1] pixel scale; "
            f"for 8 grey levels of 255 write 8/255"
        )
    return attack, norm, eps


# --------------------------------------------------------------------------------------------------
# Thresholds


def _find_row(rows: Sequence[AttackRow], attack: str, norm: str, eps: float) -> AttackRow | None:
    for row in rows:
        if (
            row.attack.casefold() == attack.casefold()
            and row.norm == norm
            and abs(row.eps - eps) <= EPS_TOLERANCE
        ):
            return row
    return None


def _available(rows: Sequence[AttackRow]) -> str:
    selectors = list(dict.fromkeys(_selector(r.attack, r.norm, r.eps) for r in rows))
    return ", ".join(selectors) if selectors else "none (the results have no attack rows)"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _where(attack: str, norm: str, eps: float) -> str:
    budget = f"l0 {_eps_text(norm, eps)} pixel{'s' if eps != 1 else ''}"
    if norm != "l0":
        budget = f"{norm} eps={_eps_text(norm, eps)}"
    who = "worst case" if attack == WORST_CASE else f"attack {attack}"
    return f"at {budget} ({who})"


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
    return None


def _evaluate(result: AuditResult, check: Check) -> CheckOutcome:
    label = _LABELS[check.metric]
    row: AttackRow | None = None
    if check.metric == "clean_accuracy":
        subject = label
        value: float | None = result.clean_accuracy
    else:
        assert check.norm is not None and check.eps is not None
        subject = f"{label} {_where(check.attack, check.norm, check.eps)}"
        row = _find_row(result.rows, check.attack, check.norm, check.eps)
        if row is None:
            message = (
                f"no row {check.selector} in the results, so {check.metric} cannot be checked and the "
                f"gate fails; the results have {_available(result.rows)}"
            )
            return CheckOutcome(check.name, check, None, None, False, message)
        value = getattr(row, check.metric)
    if value is None:
        why = {
            "attack_success_rate": "no sample was classified correctly on clean input",
            "mean_confidence_adversarial_errors": "no adversarial input was misclassified",
        }.get(check.metric, "the results do not record it")
        message = f"{subject} is not available ({why}), so the check fails"
        return CheckOutcome(check.name, check, None, None, False, message)

    value = float(value)
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
            notes.append(f"95% CI {'lower' if kind == 'min' else 'upper'} end {_pct(end)}")
        else:
            end = value
        compared = end  # with both bounds, the last one compared (the max) is reported
        if kind == "min" and end < bound:
            failures.append(f"below the minimum {_pct(bound)}")
        elif kind == "max" and end > bound:
            failures.append(f"above the maximum {_pct(bound)}")
    if check.min is not None and check.max is not None and not failures:
        verdict = f"within [{_pct(check.min)}, {_pct(check.max)}]"
    elif failures:
        verdict = " and ".join(failures)
    elif check.min is not None:
        verdict = f"at or above the minimum {_pct(check.min)}"
    else:
        assert check.max is not None
        verdict = f"at or below the maximum {_pct(check.max)}"
    detail = f" ({'; '.join(notes)})" if notes else ""
    message = f"{subject} is {_pct(value)}{detail}, {verdict}"
    return CheckOutcome(check.name, check, value, compared, not failures, message)


def evaluate_checks(result: AuditResult, checks: Sequence[Check]) -> list[CheckOutcome]:
    """One outcome per check, in order. A check whose row is missing fails, listing what there is."""
    return [_evaluate(result, check) for check in checks]


# --------------------------------------------------------------------------------------------------
# Baseline regression


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=EPS_TOLERANCE) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _short(value: Any, limit: int = 40) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _differences(path: str, base: Any, new: Any) -> list[str]:
    """``path: baseline -> this audit`` for each leaf that differs (dicts are walked into)."""
    if _same(base, new):
        return []
    if isinstance(base, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in list(dict.fromkeys([*base, *new])):
            out += _differences(f"{path}.{key}", base.get(key), new.get(key))
        return out
    return [f"{path} {_short(base)} -> {_short(new)}"]


def baseline_mismatches(result: AuditResult, baseline: AuditResult) -> list[str]:
    """What makes the two audits not like for like, as ``field baseline -> this audit`` texts."""
    found: list[str] = []
    found += [
        f"model input shape ({d})"
        for d in _differences("model.sample_shape", baseline.model.sample_shape, result.model.sample_shape)
    ]
    data = _differences("data.sha256", baseline.data.sha256, result.data.sha256)
    data += _differences("data.n_evaluated", baseline.data.n_evaluated, result.data.n_evaluated)
    found += [f"dataset ({d})" for d in data]
    for key in BASELINE_SETTINGS:
        found += [
            f"attack settings ({d})"
            for d in _differences(f"settings.{key}", baseline.settings.get(key), result.settings.get(key))
        ]
    return found


def compare_baseline(
    result: AuditResult,
    baseline: AuditResult,
    *,
    max_drop: float,
    allow_mismatch: bool,
    baseline_path: str,
) -> list[CheckOutcome]:
    """One outcome per (attack, norm, eps) row: fails when robust accuracy fell more than ``max_drop``.

    ``max_drop`` is an absolute fraction (0.02 = 2 percentage points). Rows only in the baseline fail
    (the audit no longer covers them); rows only in this audit pass with a note. When the two audits
    differ in model input shape, data or attack settings this raises an InputError, unless
    ``allow_mismatch``: then every message says what differs.
    """
    if not (isinstance(max_drop, (int, float)) and math.isfinite(max_drop) and 0.0 <= max_drop <= 1.0):
        raise UsageError(
            f"--max-drop: {max_drop!r} is not a fraction in [0, 1]; write e.g. --max-drop 0.02 for 2 points"
        )
    mismatches = baseline_mismatches(result, baseline)
    if mismatches and not allow_mismatch:
        raise InputError(
            f"{baseline_path}: the baseline is not comparable with this audit: "
            f"{'; '.join(mismatches)}; re-run the baseline with the same settings, or pass "
            f"--allow-mismatch to compare anyway"
        )
    caveat = (
        f" [baseline differs: {'; '.join(mismatches)}; compared with --allow-mismatch]" if mismatches else ""
    )

    outcomes: list[CheckOutcome] = []
    matched: set[int] = set()
    for row in result.rows:
        base = _find_row(baseline.rows, row.attack, row.norm, row.eps)
        where = _where(row.attack, row.norm, row.eps)
        check = Check(
            metric="robust_accuracy",
            norm=row.norm,
            eps=row.eps,
            attack=row.attack,
            # Without a baseline row there is nothing to require: min 0 always holds.
            min=0.0 if base is None else base.robust_accuracy - max_drop,
        )
        name = f"robust_accuracy@{_selector(row.attack, row.norm, row.eps)} vs baseline"
        value = row.robust_accuracy
        if base is None:
            message = f"robust accuracy {where} is {_pct(value)}; the baseline has no such row to compare"
            outcomes.append(CheckOutcome(name, check, value, value, True, message + caveat))
            continue
        matched.add(id(base))
        drop = base.robust_accuracy - value
        passed = drop <= max_drop + _DROP_TOLERANCE
        change = (
            f"down {100 * drop:.1f} points from" if drop > _DROP_TOLERANCE else
            f"up {-100 * drop:.1f} points from" if drop < -_DROP_TOLERANCE else "unchanged from"
        )  # fmt: skip
        verdict = "more than" if not passed else "within"
        message = (
            f"robust accuracy {where} is {_pct(value)}, {change} the baseline {_pct(base.robust_accuracy)}, "
            f"{verdict} the allowed drop of {100 * max_drop:.1f} points"
        )
        outcomes.append(CheckOutcome(name, check, value, value, passed, message + caveat))
    for base in baseline.rows:
        if id(base) in matched:
            continue
        check = Check(
            metric="robust_accuracy",
            norm=base.norm,
            eps=base.eps,
            attack=base.attack,
            min=base.robust_accuracy - max_drop,
        )
        name = f"robust_accuracy@{_selector(base.attack, base.norm, base.eps)} vs baseline"
        message = (
            f"robust accuracy {_where(base.attack, base.norm, base.eps)} was {_pct(base.robust_accuracy)} "
            f"in the baseline but this audit has no such row, so the regression check fails"
        )
        outcomes.append(CheckOutcome(name, check, None, None, False, message + caveat))
    return outcomes


def gate_passed(outcomes: Sequence[CheckOutcome]) -> bool:
    """True when every outcome passed (and vacuously when there are none)."""
    return all(outcome.passed for outcome in outcomes)


__all__ = [
    "BASELINE_SETTINGS",
    "METRICS",
    "NORMS",
    "Check",
    "CheckOutcome",
    "baseline_mismatches",
    "compare_baseline",
    "evaluate_checks",
    "gate_passed",
    "parse_threshold",
]
