"""The CI gate: thresholds on the audit's metrics, and regressions against a baseline audit.

Reads only the AuditResult and never imports torch. A check never passes silently: a selector that
matches no row of the result, or a metric the result does not have, fails the check with a message
that says what is there instead.

Thresholds are written on the command line as ``METRIC@[ATTACK:]NORM:EPS=VALUE``, e.g.
``robust_accuracy@pgd:linf:0.1=0.80`` or ``robust_accuracy@linf:8/255=0.5`` (the attack defaults to
the worst case over all attacks), and ``clean_accuracy=0.95`` (no selector). For ``l0`` the eps is a
number of pixel locations: ``attack_success_rate@onepixel:l0:1=0.1``. Values are fractions in [0, 1].

``thresholds`` holds the checks, ``parse`` the command-line syntax, ``baseline`` the regression
comparison and ``workflow`` the steps after an audit (checks, baseline, JUnit file, exit code).
"""

from robaudit.gate.baseline import (
    BASELINE_SETTINGS,
    DEFAULT_MAX_DROP,
    BaselineNotComparable,
    baseline_mismatches,
    compare_baseline,
)
from robaudit.gate.parse import parse_threshold
from robaudit.gate.thresholds import (
    METRICS,
    NORMS,
    ROW_METRICS,
    Check,
    CheckOutcome,
    evaluate_checks,
    gate_passed,
)
from robaudit.gate.workflow import EXIT_INTERRUPTED, GateVerdict, gate_result

__all__ = [
    "BASELINE_SETTINGS",
    "DEFAULT_MAX_DROP",
    "EXIT_INTERRUPTED",
    "METRICS",
    "NORMS",
    "ROW_METRICS",
    "BaselineNotComparable",
    "Check",
    "CheckOutcome",
    "GateVerdict",
    "baseline_mismatches",
    "compare_baseline",
    "evaluate_checks",
    "gate_passed",
    "gate_result",
    "parse_threshold",
]
