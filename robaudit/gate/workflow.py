"""After the audit: the threshold checks, the baseline comparison, the JUnit file and the exit code.

The same steps as ``robaudit scan`` takes once its audit is done, for library users who gate too. This
prints nothing: the caller renders the outcomes and says what was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robaudit.errors import ExitCode
from robaudit.gate.baseline import DEFAULT_MAX_DROP, BaselineNotComparable, compare_baseline
from robaudit.gate.thresholds import Check, CheckOutcome, evaluate_checks
from robaudit.report.junit import write_junit
from robaudit.results import AuditResult

# 128 + SIGINT, the shell's code for a run stopped by Ctrl-C: an interrupted audit is never a pass.
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class GateVerdict:
    outcomes: list[CheckOutcome]  # the threshold checks in order, then the baseline rows
    exit_code: int  # 0, 1 (ExitCode.GATE_FAILED), 4 (ExitCode.UNRELIABLE) or 130 (interrupted)
    junit_written: Path | None  # the JUnit file, when one was asked for


def gate_result(
    result: AuditResult,
    checks: Sequence[Check],
    *,
    baseline: AuditResult | None = None,
    baseline_path: str | None = None,
    max_drop: float | None = None,
    allow_mismatch: bool = False,
    junit_path: Path | None = None,
    strict: bool = False,
) -> GateVerdict:
    """Evaluate ``checks`` on ``result``, compare with ``baseline`` when given, write ``junit_path``.

    ``baseline_path`` names the baseline in messages; ``max_drop`` defaults to 0.02 (2 points). Without
    a baseline, ``baseline_path``, ``max_drop`` and ``allow_mismatch`` have no effect. A baseline that is
    not comparable raises BaselineNotComparable (an InputError); when ``junit_path`` is given, the JUnit
    file is written first with an error testcase that gives the reason, and the exception's
    ``junit_written`` names it, so CI still shows why the gate could not decide.

    The exit code: 130 when the result is incomplete (interrupted), else 4 when ``strict`` and the
    result has reliability flags (unreliable numbers make the gate's verdict meaningless, so 4 outranks
    1), else 1 when any check failed, else 0.
    """
    outcomes = evaluate_checks(result, checks)
    if baseline is not None:
        try:
            outcomes += compare_baseline(
                result,
                baseline,
                max_drop=DEFAULT_MAX_DROP if max_drop is None else max_drop,
                allow_mismatch=allow_mismatch,
                baseline_path="baseline" if baseline_path is None else baseline_path,
            )
        except BaselineNotComparable as exc:
            if junit_path is not None:  # a CI test reporter shows why the gate could not decide
                write_junit(
                    outcomes, junit_path, timestamp=result.created_utc, errors=[("baseline", str(exc))]
                )
                exc.junit_written = junit_path
            raise
    if junit_path is not None:
        write_junit(outcomes, junit_path, timestamp=result.created_utc)
    return GateVerdict(outcomes, _exit_code(result, outcomes, strict), junit_path)


def _exit_code(result: AuditResult, outcomes: Sequence[CheckOutcome], strict: bool) -> int:
    if not result.complete:
        return EXIT_INTERRUPTED
    if strict and result.flags:
        return int(ExitCode.UNRELIABLE)
    if any(not o.passed for o in outcomes):
        return int(ExitCode.GATE_FAILED)
    return int(ExitCode.OK)
