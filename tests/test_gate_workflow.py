"""The post-audit workflow as a library call: checks, baseline, JUnit file and the exit code.

Numbers come from the counts ``tests/report_fixture.py`` chooses: 200 samples, clean accuracy 0.95, the
worst case at linf 0.1 keeps 120 samples robust (0.6) and at linf 0.2 keeps 18 (0.09).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from robaudit.errors import ExitCode, InputError
from robaudit.gate import BaselineNotComparable, Check, GateVerdict, gate_result
from robaudit.report.junit import render_junit
from robaudit.results import WORST_CASE, AuditResult, Flag
from tests.report_fixture import fixed_result

PASSES = Check(metric="robust_accuracy", norm="linf", eps=0.1, min=0.55)  # 0.6 >= 0.55
FAILS = Check(metric="clean_accuracy", min=0.99)  # 0.95 < 0.99
FLAG = Flag(code="eps-monotonicity", message="robust accuracy rose with eps", advice="check the attack")


def _result(*, complete: bool = True, flagged: bool = False) -> AuditResult:
    return dataclasses.replace(fixed_result(), complete=complete, flags=[FLAG] if flagged else [])


def _raised(result: AuditResult, attack: str, eps: float, by: float) -> AuditResult:
    """``result`` with one row's robust accuracy raised by ``by``: as a baseline, a drop of ``by``."""
    rows = [
        dataclasses.replace(r, robust_accuracy=r.robust_accuracy + by)
        if (r.attack, r.eps) == (attack, eps)
        else r
        for r in result.rows
    ]
    return dataclasses.replace(result, rows=rows)


def _other_data(result: AuditResult) -> AuditResult:
    return dataclasses.replace(result, data=dataclasses.replace(result.data, sha256="ef" * 32))


# --------------------------------------------------------------------------------------------------
# Exit codes


def test_no_checks_and_no_baseline_is_exit_0() -> None:
    verdict = gate_result(fixed_result(), [])
    assert verdict == GateVerdict(outcomes=[], exit_code=0, junit_written=None)


def test_passing_checks_exit_0_and_a_failing_one_exit_1() -> None:
    verdict = gate_result(fixed_result(), [PASSES])
    assert verdict.exit_code == 0
    assert [o.passed for o in verdict.outcomes] == [True]
    verdict = gate_result(fixed_result(), [PASSES, FAILS])
    assert verdict.exit_code == 1 == ExitCode.GATE_FAILED
    assert [(o.name, o.passed) for o in verdict.outcomes] == [(PASSES.name, True), (FAILS.name, False)]
    assert verdict.outcomes[1].value == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("complete", "strict", "flagged", "failing", "expected"),
    [
        (True, False, False, False, 0),
        (True, False, False, True, 1),
        (True, False, True, False, 0),  # flags alone do not fail the gate without strict
        (True, False, True, True, 1),
        (True, True, False, False, 0),  # strict without flags changes nothing
        (True, True, False, True, 1),
        (True, True, True, False, 4),
        (True, True, True, True, 4),  # unreliable outranks a failed check
        (False, False, False, False, 130),
        (False, False, False, True, 130),
        (False, False, True, False, 130),
        (False, False, True, True, 130),
        (False, True, False, False, 130),
        (False, True, False, True, 130),
        (False, True, True, False, 130),
        (False, True, True, True, 130),  # interrupted outranks everything
    ],
)
def test_exit_code_precedence_130_then_4_then_1(
    complete: bool, strict: bool, flagged: bool, failing: bool, expected: int
) -> None:
    checks = [PASSES, FAILS] if failing else [PASSES]
    verdict = gate_result(_result(complete=complete, flagged=flagged), checks, strict=strict)
    assert verdict.exit_code == expected
    assert [o.passed for o in verdict.outcomes] == ([True, False] if failing else [True])


def test_unreliable_is_exit_code_4() -> None:
    verdict = gate_result(_result(flagged=True), [PASSES], strict=True)
    assert verdict.exit_code == ExitCode.UNRELIABLE == 4


def test_a_missing_row_fails_the_gate() -> None:
    check = Check(metric="robust_accuracy", norm="linf", eps=0.3, min=0.1)  # the fixture has 0.1 and 0.2
    verdict = gate_result(fixed_result(), [check])
    assert verdict.exit_code == 1
    assert "no row" in verdict.outcomes[0].message


# --------------------------------------------------------------------------------------------------
# Baseline


def test_baseline_rows_follow_the_checks() -> None:
    result = fixed_result()
    verdict = gate_result(result, [PASSES], baseline=result, baseline_path="base.json")
    assert verdict.exit_code == 0
    assert verdict.outcomes[0].name == PASSES.name
    rows = verdict.outcomes[1:]
    assert len(rows) == len(result.rows) == 6
    assert all(o.name.endswith(" vs baseline") and o.passed for o in rows)


def test_default_max_drop_is_two_points() -> None:
    result = fixed_result()
    # the baseline had 3 points more at linf 0.2 (worst case): more than the default 2 points
    verdict = gate_result(result, [], baseline=_raised(result, WORST_CASE, 0.2, 0.03))
    assert verdict.exit_code == 1
    (failed,) = [o for o in verdict.outcomes if not o.passed]
    assert failed.check.attack == WORST_CASE and failed.check.eps == 0.2
    assert "down 3.0 points" in failed.message and "2.0 points" in failed.message
    # 1 point is within the default; 3 points is within an explicit 5
    assert gate_result(result, [], baseline=_raised(result, WORST_CASE, 0.2, 0.01)).exit_code == 0
    wide = gate_result(result, [], baseline=_raised(result, WORST_CASE, 0.2, 0.03), max_drop=0.05)
    assert wide.exit_code == 0


def test_unreliable_outranks_a_regression() -> None:
    result = _result(flagged=True)
    baseline = _raised(fixed_result(), "pgd", 0.1, 0.3)
    assert gate_result(result, [], baseline=baseline).exit_code == 1
    assert gate_result(result, [], baseline=baseline, strict=True).exit_code == 4


def test_refused_baseline_raises_an_input_error_naming_the_path() -> None:
    with pytest.raises(InputError) as info:
        gate_result(fixed_result(), [PASSES], baseline=_other_data(fixed_result()), baseline_path="b/r.json")
    assert isinstance(info.value, BaselineNotComparable)
    assert info.value.exit_code == ExitCode.INPUT_ERROR
    assert str(info.value).startswith("b/r.json: the baseline is not comparable")
    assert "data.sha256" in str(info.value) and "--allow-mismatch" in str(info.value)
    assert info.value.junit_written is None  # none was asked for


def test_refused_baseline_without_a_path_is_named_baseline() -> None:
    with pytest.raises(InputError, match=r"^baseline: the baseline is not comparable"):
        gate_result(fixed_result(), [], baseline=_other_data(fixed_result()))


def test_refused_baseline_still_writes_junit_with_an_error_testcase(tmp_path: Path) -> None:
    junit = tmp_path / "ci" / "gate.xml"
    result = fixed_result()
    with pytest.raises(BaselineNotComparable) as info:
        gate_result(
            result, [PASSES, FAILS], baseline=_other_data(result), baseline_path="base.json", junit_path=junit
        )
    assert info.value.junit_written == junit
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    assert suite.get("timestamp") == result.created_utc
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [PASSES.name, FAILS.name, "baseline"]
    error = cases[2].find("error")
    assert error is not None and error.get("type") == "not-comparable"
    assert error.get("message") == str(info.value) == error.text
    assert "base.json" in str(error.get("message"))


def test_refused_baseline_outranks_an_interrupted_run(tmp_path: Path) -> None:
    junit = tmp_path / "gate.xml"
    result = _result(complete=False, flagged=True)
    with pytest.raises(BaselineNotComparable):
        gate_result(result, [], baseline=_other_data(result), junit_path=junit, strict=True)
    assert ET.parse(junit).getroot().get("errors") == "1"


def test_allow_mismatch_compares_anyway() -> None:
    result = fixed_result()
    verdict = gate_result(result, [], baseline=_other_data(result), allow_mismatch=True)
    assert verdict.exit_code == 0 and len(verdict.outcomes) == 6
    assert all("compared with --allow-mismatch" in o.message for o in verdict.outcomes)


# --------------------------------------------------------------------------------------------------
# JUnit file and output


def test_junit_written_with_every_outcome(tmp_path: Path) -> None:
    junit = tmp_path / "out" / "gate.xml"
    result = fixed_result()
    verdict = gate_result(result, [PASSES, FAILS], baseline=result, junit_path=junit)
    assert verdict.junit_written == junit and verdict.exit_code == 1
    assert junit.read_text(encoding="utf-8") == render_junit(verdict.outcomes, timestamp=result.created_utc)
    root = ET.parse(junit).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("8", "1", "0")


def test_junit_written_for_an_interrupted_run_too(tmp_path: Path) -> None:
    junit = tmp_path / "gate.xml"
    verdict = gate_result(_result(complete=False), [PASSES], junit_path=junit)
    assert verdict.exit_code == 130 and verdict.junit_written == junit
    assert ET.parse(junit).getroot().get("tests") == "1"


def test_no_junit_path_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    verdict = gate_result(fixed_result(), [FAILS])
    assert verdict.junit_written is None
    assert list(tmp_path.iterdir()) == []


def test_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = fixed_result()
    gate_result(result, [PASSES, FAILS], baseline=result, junit_path=tmp_path / "g.xml", strict=True)
    with pytest.raises(InputError):
        gate_result(result, [], baseline=_other_data(result), junit_path=tmp_path / "h.xml")
    assert capsys.readouterr() == ("", "")


def test_the_library_gates_an_audit_as_the_command_line_does(tmp_path: Path) -> None:
    """robaudit.api.gate_audit: the checks and the JUnit file of the configuration, and the exit code."""
    from robaudit.api import gate_audit, run_audit
    from robaudit.config import AuditConfig
    from tests.conftest import HOLDOUT, SAMPLES

    def config(**gate: object) -> AuditConfig:
        return AuditConfig(
            model=SAMPLES / "mnist_cnn.onnx", data=str(HOLDOUT), limit=20, eps=(0.1,), checks=False,
            gate={"checks": [{"metric": "robust_accuracy", "norm": "linf", "eps": 0.1, **gate}]},
            reports={"junit": tmp_path / "gate.xml"},
        )  # fmt: skip

    result = run_audit(config(min=0.0))
    assert 0.0 < result.rows[-1].robust_accuracy < 1.0
    passed = gate_audit(result, config(min=0.0))
    assert passed.exit_code == 0 and passed.junit_written == tmp_path / "gate.xml"
    failed = gate_audit(result, config(max=0.0))
    assert failed.exit_code == 1 and not failed.outcomes[0].passed
    assert "<failure" in (tmp_path / "gate.xml").read_text(encoding="utf-8")
