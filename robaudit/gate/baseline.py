"""Regression against a baseline audit: robust accuracy per (attack, norm, eps) row may drop at most
``max_drop``, and only audits that are like for like (model input shape, data, attack settings) are
compared."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from robaudit.config import EPS_TOLERANCE
from robaudit.errors import InputError, UsageError
from robaudit.gate.selectors import find_row, pct, selector, where
from robaudit.gate.thresholds import Check, CheckOutcome
from robaudit.results import AttackRow, AuditResult

# Differences of robust accuracy below this are rounding, not a drop (0.60 - 0.58 > 0.02 in floats).
_DROP_TOLERANCE = 1e-9

# What the CLI allows when --max-drop is not given: 2 percentage points.
DEFAULT_MAX_DROP = 0.02

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


class BaselineNotComparable(InputError):
    """The baseline differs from this audit in model input shape, data or attack settings.

    ``mismatches`` lists what differs (``field baseline -> this audit``). ``junit_written`` is the JUnit
    file that records the refusal, set by ``gate_result`` when it wrote one (None otherwise).
    """

    def __init__(self, message: str, mismatches: list[str]) -> None:
        super().__init__(message)
        self.mismatches = mismatches
        self.junit_written: Path | None = None


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


def _n_requested(result: AuditResult) -> int:
    d = result.data
    return d.n_evaluated if d.n_requested is None else d.n_requested


def baseline_mismatches(result: AuditResult, baseline: AuditResult) -> list[str]:
    """What makes the two audits not like for like, as ``field baseline -> this audit`` texts."""
    found: list[str] = []
    found += [
        f"model input shape ({d})"
        for d in _differences("model.sample_shape", baseline.model.sample_shape, result.model.sample_shape)
    ]
    data = _differences("data.sha256", baseline.data.sha256, result.data.sha256)
    # The samples asked for: an interrupted run evaluated fewer, and its gate exits 130 on that alone.
    data += _differences("data.n_evaluated", _n_requested(baseline), _n_requested(result))
    found += [f"dataset ({d})" for d in data]
    return found + settings_mismatches(baseline.settings, result.settings)


def settings_mismatches(baseline: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The BASELINE_SETTINGS that differ, as ``attack settings (field baseline -> this audit)`` texts."""
    found: list[str] = []
    for key in BASELINE_SETTINGS:
        base, new = _eot_comparable(baseline.get(key), settings.get(key))
        found += [f"attack settings ({d})" for d in _differences(f"settings.{key}", base, new)]
    return found


def _eot_comparable(base: Any, new: Any) -> tuple[Any, Any]:
    """An attack's ``eot`` is compared only when both sides fixed it: auto (0) becomes 1 or 10 once the
    model is loaded, and results from before schema 1.2 have no ``eot``. A random model's EOT is
    decided by the model itself, which the baseline comparison already holds to be the same kind."""
    if not (isinstance(base, dict) and isinstance(new, dict)):
        return base, new
    if base.get("eot") and new.get("eot") and "eot" in base and "eot" in new:
        return base, new
    return {k: v for k, v in base.items() if k != "eot"}, {k: v for k, v in new.items() if k != "eot"}


def not_comparable(baseline_path: str, mismatches: list[str]) -> BaselineNotComparable:
    """The one-line refusal of a baseline that differs in ``mismatches``."""
    return BaselineNotComparable(
        f"{baseline_path}: the baseline is not comparable with this audit: "
        f"{'; '.join(mismatches)}; re-run the baseline with the same settings, or pass "
        f"--allow-mismatch to compare anyway",
        mismatches,
    )


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
    differ in model input shape, data or attack settings this raises BaselineNotComparable (an
    InputError), unless ``allow_mismatch``: then every message says what differs.
    """
    if not (isinstance(max_drop, (int, float)) and math.isfinite(max_drop) and 0.0 <= max_drop <= 1.0):
        raise UsageError(
            f"--max-drop: {max_drop!r} is not a fraction in [0, 1]; write e.g. --max-drop 0.02 for 2 points"
        )
    mismatches = baseline_mismatches(result, baseline)
    if mismatches and not allow_mismatch:
        raise not_comparable(baseline_path, mismatches)
    caveat = (
        f" [baseline differs: {'; '.join(mismatches)}; compared with --allow-mismatch]" if mismatches else ""
    )
    outcomes: list[CheckOutcome] = []
    matched: set[int] = set()
    for row in result.rows:
        base = find_row(baseline.rows, row.attack, row.norm, row.eps)
        if base is not None:
            matched.add(id(base))
        outcomes.append(_compare_row(row, base, max_drop, caveat))
    outcomes += [_row_gone(base, max_drop, caveat) for base in baseline.rows if id(base) not in matched]
    return outcomes


def _name(row: AttackRow) -> str:
    return f"robust_accuracy@{selector(row.attack, row.norm, row.eps)} vs baseline"


def _compare_row(row: AttackRow, base: AttackRow | None, max_drop: float, caveat: str) -> CheckOutcome:
    """This audit's row against the baseline's row for the same (attack, norm, eps), if it has one."""
    where_ = where(row.attack, row.norm, row.eps)
    check = Check(
        metric="robust_accuracy",
        norm=row.norm,
        eps=row.eps,
        attack=row.attack,
        # Without a baseline row there is nothing to require: min 0 always holds.
        min=0.0 if base is None else base.robust_accuracy - max_drop,
    )
    value = row.robust_accuracy
    if base is None:
        message = f"robust accuracy {where_} is {pct(value)}; the baseline has no such row to compare"
        return CheckOutcome(_name(row), check, value, value, True, message + caveat)
    drop = base.robust_accuracy - value
    passed = drop <= max_drop + _DROP_TOLERANCE
    change = (
        f"down {100 * drop:.1f} points from" if drop > _DROP_TOLERANCE else
        f"up {-100 * drop:.1f} points from" if drop < -_DROP_TOLERANCE else "unchanged from"
    )  # fmt: skip
    verdict = "more than" if not passed else "within"
    message = (
        f"robust accuracy {where_} is {pct(value)}, {change} the baseline {pct(base.robust_accuracy)}, "
        f"{verdict} the allowed drop of {100 * max_drop:.1f} points"
    )
    return CheckOutcome(_name(row), check, value, value, passed, message + caveat)


def _row_gone(base: AttackRow, max_drop: float, caveat: str) -> CheckOutcome:
    """A baseline row this audit no longer has: the regression check fails."""
    check = Check(
        metric="robust_accuracy",
        norm=base.norm,
        eps=base.eps,
        attack=base.attack,
        min=base.robust_accuracy - max_drop,
    )
    message = (
        f"robust accuracy {where(base.attack, base.norm, base.eps)} was {pct(base.robust_accuracy)} "
        f"in the baseline but this audit has no such row, so the regression check fails"
    )
    return CheckOutcome(_name(base), check, None, None, False, message + caveat)
