"""The CI gate: threshold parsing, checks against the fixed results, baseline regression, JUnit XML.

Expected numbers are worked out here from the counts that ``tests/report_fixture.py`` chooses (200
samples, 190 correct on clean input, robust counts per row, CIs of +-0.06 and +-0.07 around the
point values), never read back from the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from robaudit.errors import ExitCode, InputError, UsageError
from robaudit.gate import Check, CheckOutcome, compare_baseline, evaluate_checks, parse_threshold
from robaudit.report.junit import render_junit, write_junit
from robaudit.results import WORST_CASE, AttackRow, AuditResult
from tests.report_fixture import fixed_result

JUNIT_XSD = Path(__file__).resolve().parent / "assets" / "junit" / "junit-10.xsd"

# The fixture, by hand: n = 200 samples, 190 correct on clean input; robust counts per (attack, eps).
N, N_CC = 200, 190
ROBUST = {
    ("fgsm", 0.1): 150,
    ("pgd", 0.1): 120,
    (WORST_CASE, 0.1): 120,
    ("fgsm", 0.2): 60,
    ("pgd", 0.2): 20,
    (WORST_CASE, 0.2): 18,
}
RA_HALF_WIDTH, ASR_HALF_WIDTH = 0.06, 0.07  # the fixture's CIs: point value +- these


def _ra(attack: str, eps: float) -> float:
    return ROBUST[(attack, eps)] / N


def _asr(attack: str, eps: float) -> float:
    return (N_CC - ROBUST[(attack, eps)]) / N_CC


def _min(text: str) -> Check:
    return parse_threshold(text, "min", "--fail-under")


def _max(text: str) -> Check:
    return parse_threshold(text, "max", "--fail-over")


def _one(result: AuditResult, check: Check) -> CheckOutcome:
    (outcome,) = evaluate_checks(result, [check])
    return outcome


def _row(result: AuditResult, attack: str, eps: float) -> AttackRow:
    (row,) = [r for r in result.rows if r.attack == attack and r.norm == "linf" and r.eps == eps]
    return row


def _with_rows(result: AuditResult, *extra: AttackRow) -> AuditResult:
    return dataclasses.replace(result, rows=[*result.rows, *extra])


# --------------------------------------------------------------------------------------------------
# parse_threshold: valid forms


@pytest.mark.parametrize(
    ("text", "metric", "attack", "norm", "eps", "value"),
    [
        ("robust_accuracy@pgd:linf:0.1=0.80", "robust_accuracy", "pgd", "linf", 0.1, 0.8),
        ("robust_accuracy@linf:8/255=0.5", "robust_accuracy", WORST_CASE, "linf", 8 / 255, 0.5),
        ("robust_accuracy@worst-case:linf:0.1=0.5", "robust_accuracy", WORST_CASE, "linf", 0.1, 0.5),
        ("robust_error@fgsm:l2:0.5=.25", "robust_error", "fgsm", "l2", 0.5, 0.25),
        ("robust_accuracy@l2:1.5=0.3", "robust_accuracy", WORST_CASE, "l2", 1.5, 0.3),  # l2 may exceed 1
        ("attack_success_rate@onepixel:l0:1=0.1", "attack_success_rate", "onepixel", "l0", 1.0, 0.1),
        ("attack_success_rate@l0:3=0", "attack_success_rate", WORST_CASE, "l0", 3.0, 0.0),
        ("mean_confidence_adversarial_errors@l1:0.03=1", "mean_confidence_adversarial_errors",
         WORST_CASE, "l1", 0.03, 1.0),
        ("robust_accuracy@art:DeepFool:linf:0.1=0.4", "robust_accuracy", "art:DeepFool", "linf", 0.1, 0.4),
        ("robust_accuracy@pgd-dlr:linf:4/255=0.6", "robust_accuracy", "pgd-dlr", "linf", 4 / 255, 0.6),
        (" Robust-Accuracy @ PGD : LINF : 0.1 = 0.8 ", "robust_accuracy", "PGD", "linf", 0.1, 0.8),
    ],
)  # fmt: skip
def test_parse_valid_selectors(
    text: str, metric: str, attack: str, norm: str, eps: float, value: float
) -> None:
    check = _min(text)
    assert (check.metric, check.attack, check.norm) == (metric, attack, norm)
    assert check.eps == pytest.approx(eps, abs=1e-15)
    assert check.min == value and check.max is None and check.use_interval is False


def test_parse_eps_fraction_is_the_exact_float() -> None:
    # the same float parse_eps gives the runner for --eps 8/255, so the row lookup needs no luck
    assert _min("robust_accuracy@linf:8/255=0.5").eps == 8 / 255


def test_parse_clean_accuracy_and_kinds() -> None:
    under = _min("clean_accuracy=0.95")
    assert (under.metric, under.norm, under.eps) == ("clean_accuracy", None, None)
    assert (under.min, under.max) == (0.95, None)
    over = _max("attack_success_rate@linf:0.1=0.2")
    assert (over.min, over.max) == (None, 0.2)


# --------------------------------------------------------------------------------------------------
# parse_threshold: invalid forms, each one UsageError naming the flag


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("robust_accuracy@linf:0.1", "'='"),
        ("robust_accuracy@linf:0.1=", "no value"),
        ("robust_accuracy@linf:0.1=0.5=0.6", "more than one '='"),
        ("accuracy@linf:0.1=0.5", "unknown metric"),
        ("=0.5", "no metric"),
        ("@linf:0.1=0.5", "no metric"),
        ("robust_accuracy@linf:0.1=1.5", "[0, 1]"),
        ("robust_accuracy@linf:0.1=80", "for 80% write 0.8"),
        ("robust_accuracy@linf:0.1=-0.1", "not a number"),
        ("robust_accuracy@linf:0.1=nan", "not a number"),
        ("robust_accuracy@linf:0.1=inf", "not a number"),
        ("robust_accuracy@linf:0.1=50%", "not a number"),
        ("robust_accuracy@linf:abc=0.5", "eps 'abc'"),
        ("robust_accuracy@linf:1/0=0.5", "divides by zero"),
        ("robust_accuracy@linf:-0.1=0.5", "eps '-0.1' must be >= 0"),
        ("robust_accuracy@linf:2=0.5", "larger than 1"),
        ("robust_accuracy@l3:0.1=0.5", "unknown norm 'l3'"),
        ("robust_accuracy@pgd:l3:0.1=0.5", "unknown norm"),
        ("robust_accuracy@pgd:linf:0.1:0.2=0.5", "too many ':'"),
        ("robust_accuracy@a:b:c:d:e=0.5", "too many ':'"),
        ("robust_accuracy@linf=0.5", "NORM:EPS"),
        ("robust_accuracy@=0.5", "NORM:EPS"),
        ("robust_accuracy@:linf:0.1=0.5", "attack name"),
        ("robust_accuracy@p gd:linf:0.1=0.5", "attack name"),
        ("robust_accuracy=0.5", "needs a selector"),
        ("robust_accuracy@@linf:0.1=0.5", "more than one '@'"),
        ("clean_accuracy@linf:0.1=0.9", "takes no"),
        ("attack_success_rate@onepixel:l0:0.5=0.1", "number of pixels"),
        ("attack_success_rate@onepixel:l0:0=0.1", "number of pixels"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_parse_invalid(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as info:
        _min(text)
    message = str(info.value)
    assert message.startswith("--fail-under ")
    assert repr(text) in message  # the text as given
    assert problem in message
    assert "e.g. --fail-under " in message  # an example to copy
    assert len(message.splitlines()) == 1
    assert info.value.exit_code == ExitCode.USAGE_ERROR


def test_parse_invalid_names_the_flag_given() -> None:
    with pytest.raises(UsageError, match=r"^--fail-over .*e\.g\. --fail-over "):
        _max("robust_accuracy@linf:0.1=2")


def test_parse_example_in_message_is_itself_valid() -> None:
    for kind, flag in (("min", "--fail-under"), ("max", "--fail-over")):
        with pytest.raises(UsageError) as info:
            parse_threshold("nonsense", kind, flag)  # type: ignore[arg-type]
        example = str(info.value).rsplit(f"e.g. {flag} ", 1)[1]
        assert isinstance(parse_threshold(example, kind, flag), Check)  # type: ignore[arg-type]


_TOKENS = [
    "robust_accuracy", "robust_error", "attack_success_rate", "mean_confidence_adversarial_errors",
    "clean_accuracy", "@", ":", "=", "/", ".", " ", "-", "linf", "l2", "l1", "l0", "L0", "pgd", "art",
    "worst-case", "0", "1", "8", "255", "0.5", "1.5", "1e3", "nan", "abc", "\n", "\x00", "٣", "１", "%",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(st.text(max_size=60), st.lists(st.sampled_from(_TOKENS), max_size=12).map("".join)),
    kind=st.sampled_from(["min", "max"]),
)
def test_parse_fuzz_returns_check_or_usage_error(text: str, kind: str) -> None:
    try:
        check = parse_threshold(text, kind, "--fail-under")  # type: ignore[arg-type]
    except UsageError as exc:
        assert len(str(exc).splitlines()) == 1
        assert str(exc).startswith("--fail-under ")
        return
    assert isinstance(check, Check)
    bound = check.min if kind == "min" else check.max
    assert bound is not None and 0.0 <= bound <= 1.0
    if check.metric == "clean_accuracy":
        assert check.norm is None and check.eps is None
    else:
        assert check.norm in ("linf", "l2", "l1", "l0")
        assert check.eps is not None and check.eps >= 0.0
        if check.norm == "linf":
            assert check.eps <= 1.0
        if check.norm == "l0":
            assert check.eps >= 1 and check.eps.is_integer()


@settings(max_examples=200, deadline=None)
@given(
    metric=st.sampled_from(["robust_accuracy", "robust_error", "attack_success_rate"]),
    attack=st.sampled_from(["", "pgd:", "fgsm:", "art:DeepFool:", "worst-case:"]),
    norm=st.sampled_from(["linf", "l2", "l1"]),
    grey=st.integers(min_value=0, max_value=255),
    percent=st.integers(min_value=0, max_value=100),
)
def test_parse_generated_valid_thresholds(
    metric: str, attack: str, norm: str, grey: int, percent: int
) -> None:
    check = _max(f"{metric}@{attack}{norm}:{grey}/255={percent / 100}")
    assert (check.metric, check.norm) == (metric, norm)
    assert check.attack == (attack[:-1] if attack else WORST_CASE)
    assert check.eps == grey / 255
    assert check.max == percent / 100 and check.min is None


# --------------------------------------------------------------------------------------------------
# evaluate_checks on the fixture


def test_min_check_on_worst_case_point_value() -> None:
    result = fixed_result()
    expected = _ra(WORST_CASE, 0.1)  # 120 / 200 = 0.6
    passed = _one(result, _min("robust_accuracy@linf:0.1=0.55"))
    assert (
        passed.passed
        and passed.value == pytest.approx(expected)
        and passed.compared == pytest.approx(expected)
    )
    assert passed.name == "robust_accuracy@worst-case:linf:0.1 >= 0.55"
    failed = _one(result, _min("robust_accuracy@linf:0.1=0.65"))
    assert not failed.passed and failed.value == pytest.approx(expected)
    assert "60.0%" in failed.message and "65.0%" in failed.message and "below the minimum" in failed.message
    assert "linf" in failed.message and "0.1" in failed.message and "worst case" in failed.message


def test_min_check_with_interval_uses_the_lower_end() -> None:
    result = fixed_result()
    lower = _ra(WORST_CASE, 0.1) - RA_HALF_WIDTH  # 0.54: passes 0.55 on the point value, not on the CI
    check = dataclasses.replace(_min("robust_accuracy@linf:0.1=0.55"), use_interval=True)
    outcome = _one(result, check)
    assert not outcome.passed
    assert outcome.value == pytest.approx(_ra(WORST_CASE, 0.1))
    assert outcome.compared == pytest.approx(lower)
    assert "54.0%" in outcome.message and "lower end" in outcome.message
    assert _one(result, dataclasses.replace(check, min=0.53)).passed


def test_max_checks() -> None:
    result = fixed_result()
    error = 1 - _ra(WORST_CASE, 0.2)  # 182 / 200 = 0.91
    assert not _one(result, _max("robust_error@linf:0.2=0.9")).passed
    ok = _one(result, _max("robust_error@linf:0.2=0.95"))
    assert ok.passed and ok.value == pytest.approx(error)

    asr = _asr("pgd", 0.2)  # 170 / 190 = 0.8947
    assert _one(result, _max("attack_success_rate@pgd:linf:0.2=0.9")).passed
    too_high = _one(result, _max("attack_success_rate@pgd:linf:0.2=0.85"))
    assert not too_high.passed and too_high.value == pytest.approx(asr)
    assert "above the maximum" in too_high.message and "89.5%" in too_high.message

    # the CI's upper end (0.8947 + 0.07) is above 0.9
    upper = _one(result, dataclasses.replace(_max("attack_success_rate@pgd:linf:0.2=0.9"), use_interval=True))
    assert not upper.passed and upper.compared == pytest.approx(asr + ASR_HALF_WIDTH)


def test_robust_error_interval_follows_from_the_accuracy_interval() -> None:
    result = fixed_result()
    check = _max("robust_error@linf:0.1=0.45")  # error 0.4, its CI [0.34, 0.46]
    assert _one(result, check).passed
    outcome = _one(result, dataclasses.replace(check, use_interval=True))
    assert not outcome.passed
    assert outcome.compared == pytest.approx(1 - (_ra(WORST_CASE, 0.1) - RA_HALF_WIDTH))


def test_confidence_check_without_an_interval_compares_the_value_and_says_so() -> None:
    result = fixed_result()  # mean confidence on adversarial errors 0.81 in every row
    assert not _one(result, _max("mean_confidence_adversarial_errors@linf:0.1=0.8")).passed
    assert _one(result, _max("mean_confidence_adversarial_errors@linf:0.1=0.85")).passed
    outcome = _one(
        result,
        dataclasses.replace(_max("mean_confidence_adversarial_errors@linf:0.1=0.85"), use_interval=True),
    )
    assert outcome.passed and outcome.compared == pytest.approx(0.81)
    assert "no confidence interval" in outcome.message


def test_clean_accuracy_checks() -> None:
    result = fixed_result()  # clean accuracy 190 / 200 = 0.95, CI [0.91, 0.97]
    assert _one(result, _min("clean_accuracy=0.95")).passed  # equal to the minimum is not below it
    failed = _one(result, _min("clean_accuracy=0.96"))
    assert not failed.passed and failed.value == pytest.approx(N_CC / N)
    assert failed.message.startswith("clean accuracy is 95.0%")
    with_ci = _one(result, dataclasses.replace(_min("clean_accuracy=0.92"), use_interval=True))
    assert not with_ci.passed and with_ci.compared == pytest.approx(0.91)
    both = Check(metric="clean_accuracy", min=0.9, max=0.94)
    assert not _one(result, both).passed
    assert _one(result, dataclasses.replace(both, max=0.96)).passed


def test_the_attack_selector_picks_its_row() -> None:
    result = fixed_result()  # at 0.1 fgsm leaves 150 robust, the worst case 120
    assert _one(result, _min("robust_accuracy@fgsm:linf:0.1=0.7")).value == pytest.approx(_ra("fgsm", 0.1))
    assert _one(result, _min("robust_accuracy@fgsm:linf:0.1=0.7")).passed
    assert not _one(result, _min("robust_accuracy@linf:0.1=0.7")).passed
    assert _one(result, _min("robust_accuracy@PGD:linf:0.2=0.1")).value == pytest.approx(_ra("pgd", 0.2))


def test_eps_matches_within_tolerance_only() -> None:
    result = fixed_result()
    near = Check(metric="robust_accuracy", norm="linf", eps=0.1 + 1e-12, min=0.5)
    assert _one(result, near).value == pytest.approx(_ra(WORST_CASE, 0.1))
    off = _one(result, dataclasses.replace(near, eps=0.1 + 1e-6))
    assert not off.passed and off.value is None


@pytest.mark.parametrize(
    "text",
    [
        "robust_accuracy@linf:0.3=0.5",  # no such eps
        "robust_accuracy@pgdd:linf:0.1=0.5",  # a typo in the attack
        "robust_accuracy@l2:0.1=0.5",  # no such norm in this run
        "robust_accuracy@linf:0.1=0",  # fine: the row exists (control)
    ],
)
def test_missing_row_fails_and_lists_what_is_there(text: str) -> None:
    result = fixed_result()
    outcome = _one(result, _min(text))
    if text.endswith("=0"):
        assert outcome.passed
        return
    assert not outcome.passed and outcome.value is None and outcome.compared is None
    selector = text.split("@")[1].split("=")[0]
    assert selector in outcome.message
    for available in ("fgsm:linf:0.1", "pgd:linf:0.2", "worst-case:linf:0.2"):
        assert available in outcome.message


def test_missing_row_fails_even_for_a_bound_that_cannot_fail() -> None:
    # min 0 is always met; a typo must still fail the gate
    assert not _one(fixed_result(), _min("robust_accuracy@linf:0.15=0")).passed


def test_metric_not_recorded_fails() -> None:
    result = fixed_result()
    empty = dataclasses.replace(_row(result, "pgd", 0.1), attack="art:DeepFool", attack_success_rate=None)
    outcome = _one(_with_rows(result, empty), _max("attack_success_rate@art:DeepFool:linf:0.1=1"))
    assert not outcome.passed and outcome.value is None and "not available" in outcome.message


def test_l0_and_art_rows() -> None:
    result = fixed_result()
    base = _row(result, "pgd", 0.1)
    onepixel = dataclasses.replace(base, attack="onepixel", norm="l0", eps=1.0, attack_success_rate=0.2)
    deepfool = dataclasses.replace(base, attack="art:DeepFool", robust_accuracy=0.35)
    result = _with_rows(result, onepixel, deepfool)
    over = _one(result, _max("attack_success_rate@onepixel:l0:1=0.1"))
    assert not over.passed and over.value == pytest.approx(0.2) and "l0 1 pixel" in over.message
    assert _one(result, _max("attack_success_rate@onepixel:l0:1=0.25")).passed
    # the l0 budget is a pixel count: 2 pixels is another row
    assert _one(result, _max("attack_success_rate@onepixel:l0:2=0.25")).value is None
    art = _one(result, _min("robust_accuracy@art:DeepFool:linf:0.1=0.3"))
    assert art.passed and art.value == pytest.approx(0.35)


def test_eps_written_as_a_fraction_finds_its_row() -> None:
    result = fixed_result()
    row = dataclasses.replace(_row(result, WORST_CASE, 0.1), eps=8 / 255, robust_accuracy=0.42)
    outcome = _one(_with_rows(result, row), _min("robust_accuracy@linf:8/255=0.4"))
    assert outcome.passed and outcome.value == pytest.approx(0.42)
    assert "8/255" in outcome.name


def test_outcomes_keep_the_checks_order() -> None:
    checks = [
        _min("clean_accuracy=0.5"),
        _min("robust_accuracy@linf:0.2=0.5"),
        _max("robust_error@linf:0.1=1"),
    ]
    outcomes = evaluate_checks(fixed_result(), checks)
    assert [o.check for o in outcomes] == checks
    assert [o.passed for o in outcomes] == [True, False, True]
    assert len({o.name for o in outcomes}) == 3


def test_check_rejects_incomplete_construction() -> None:
    with pytest.raises(ValueError):
        Check(metric="robust_accuracy", norm="linf", eps=0.1)  # no bound
    with pytest.raises(ValueError):
        Check(metric="robust_accuracy", min=0.5)  # no selector
    with pytest.raises(ValueError):
        Check(metric="accuracy", norm="linf", eps=0.1, min=0.5)


# --------------------------------------------------------------------------------------------------
# compare_baseline


def _compare(result: AuditResult, baseline: AuditResult, **kwargs: object) -> list[CheckOutcome]:
    options: dict[str, object] = {
        "max_drop": 0.02,
        "allow_mismatch": False,
        "baseline_path": "base/results.json",
    }
    options.update(kwargs)
    return compare_baseline(result, baseline, **options)  # type: ignore[arg-type]


def _lowered(result: AuditResult, attack: str, eps: float, by: float) -> AuditResult:
    rows = [
        dataclasses.replace(r, robust_accuracy=r.robust_accuracy - by)
        if (r.attack, r.norm, r.eps) == (attack, "linf", eps)
        else r
        for r in result.rows
    ]
    return dataclasses.replace(result, rows=rows)


def test_baseline_same_result_passes_every_row() -> None:
    result = fixed_result()
    outcomes = _compare(result, fixed_result())
    assert len(outcomes) == len(ROBUST)  # one per (attack, norm, eps), worst-case rows included
    assert all(o.passed for o in outcomes)
    assert sum(1 for o in outcomes if o.check.attack == WORST_CASE) == 2
    assert {(o.check.attack, o.check.eps) for o in outcomes} == set(ROBUST)


def test_baseline_from_its_json_is_comparable() -> None:
    result = fixed_result()
    loaded = AuditResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert all(o.passed for o in _compare(result, loaded))


def test_baseline_drop_beyond_max_drop_fails_that_row_only() -> None:
    baseline = fixed_result()
    result = _lowered(baseline, "pgd", 0.1, 0.05)
    outcomes = _compare(result, baseline)
    failed = [o for o in outcomes if not o.passed]
    assert len(failed) == 1
    (bad,) = failed
    assert (bad.check.attack, bad.check.norm, bad.check.eps) == ("pgd", "linf", 0.1)
    assert bad.value == pytest.approx(_ra("pgd", 0.1) - 0.05)
    assert "5.0 points" in bad.message and "60.0%" in bad.message and "55.0%" in bad.message
    assert "pgd" in bad.name and "baseline" in bad.name


def test_baseline_drop_at_the_limit_passes_and_just_over_fails() -> None:
    baseline = fixed_result()  # worst case 0.6 at 0.1; 0.6 - 0.58 is 0.020000000000000018 in floats
    assert all(o.passed for o in _compare(_lowered(baseline, WORST_CASE, 0.1, 0.02), baseline))
    assert not all(o.passed for o in _compare(_lowered(baseline, WORST_CASE, 0.1, 0.0201), baseline))
    assert all(o.passed for o in _compare(_lowered(baseline, WORST_CASE, 0.1, 0.05), baseline, max_drop=0.05))


def test_baseline_improvement_passes() -> None:
    baseline = fixed_result()
    outcomes = _compare(_lowered(baseline, WORST_CASE, 0.2, -0.1), baseline, max_drop=0.0)
    assert all(o.passed for o in outcomes)
    improved = [o for o in outcomes if (o.check.attack, o.check.eps) == (WORST_CASE, 0.2)]
    assert "up 10.0 points" in improved[0].message


def test_baseline_rows_only_in_one_of_the_two() -> None:
    baseline = fixed_result()
    kept = [r for r in baseline.rows if (r.attack, r.eps) != ("pgd", 0.2)]
    extra = dataclasses.replace(_row(baseline, WORST_CASE, 0.2), eps=0.3, robust_accuracy=0.01)
    result = dataclasses.replace(baseline, rows=[*kept, extra])
    outcomes = _compare(result, baseline)
    assert len(outcomes) == len(ROBUST) + 1
    gone = [o for o in outcomes if (o.check.attack, o.check.eps) == ("pgd", 0.2)]
    assert len(gone) == 1 and not gone[0].passed and gone[0].value is None
    assert "no such row" in gone[0].message
    new = [o for o in outcomes if o.check.eps == 0.3]
    assert len(new) == 1 and new[0].passed and "no such row" in new[0].message
    assert sum(1 for o in outcomes if not o.passed) == 1


def _settings_with(result: AuditResult, **changes: object) -> AuditResult:
    return dataclasses.replace(result, settings={**result.settings, **changes})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: dataclasses.replace(r, data=dataclasses.replace(r.data, sha256="ef" * 32)), "data.sha256"),
        (lambda r: dataclasses.replace(r, data=dataclasses.replace(r.data, n_evaluated=100)), "data.n_evaluated"),
        (lambda r: dataclasses.replace(r, model=dataclasses.replace(r.model, sample_shape=[3, 8, 8])),
         "model.sample_shape"),
        (lambda r: _settings_with(r, pgd={**r.settings["pgd"], "steps": 10}), "settings.pgd.steps"),
        (lambda r: _settings_with(r, seed=8), "settings.seed"),
        (lambda r: _settings_with(r, attacks=["fgsm"]), "settings.attacks"),
        (lambda r: _settings_with(r, eps=[0.1, 0.3]), "settings.eps"),
        (lambda r: _settings_with(r, target="random"), "settings.target"),
        (lambda r: _settings_with(r, attack_kwargs={"art:DeepFool": {"max_iter": 5}}), "settings.attack_kwargs"),
        (lambda r: _settings_with(r, onepixel={"pixels": 1}), "settings.onepixel"),
    ],
)  # fmt: skip
def test_baseline_mismatch_refused_unless_allowed(
    change: Callable[[AuditResult], AuditResult], field: str
) -> None:
    baseline = change(fixed_result())
    with pytest.raises(InputError) as info:
        _compare(fixed_result(), baseline)
    message = str(info.value)
    assert message.startswith("base/results.json: ")
    assert field in message and "--allow-mismatch" in message
    assert len(message.splitlines()) == 1
    assert info.value.exit_code == ExitCode.INPUT_ERROR

    outcomes = _compare(fixed_result(), baseline, allow_mismatch=True)
    assert outcomes and all(o.passed for o in outcomes)  # rows unchanged, so the comparison itself passes
    assert all(field in o.message and "--allow-mismatch" in o.message for o in outcomes)


def test_baseline_mismatch_names_only_what_differs() -> None:
    baseline = _settings_with(fixed_result(), pgd={**fixed_result().settings["pgd"], "steps": 10})
    with pytest.raises(InputError) as info:
        _compare(fixed_result(), baseline)
    message = str(info.value)
    assert "10 -> 40" in message  # baseline value, then this audit's
    assert "sha256" not in message and "sample_shape" not in message and "seed" not in message


def test_baseline_of_another_model_or_run_is_comparable() -> None:
    # the model under test changes between baseline and audit; so do timings and the run's own settings
    baseline = fixed_result()
    baseline = dataclasses.replace(
        baseline,
        model=dataclasses.replace(baseline.model, sha256="00" * 32, path="old.onnx"),
        created_utc="2025-01-01T00:00:00+00:00",
        settings={**baseline.settings, "batch_size": 8, "device": "cuda", "eps": [0.1 + 1e-12, 0.2]},
    )
    assert all(o.passed for o in _compare(fixed_result(), baseline))


@pytest.mark.parametrize("max_drop", [-0.01, 1.5, float("nan")])
def test_baseline_max_drop_must_be_a_fraction(max_drop: float) -> None:
    with pytest.raises(UsageError, match="--max-drop"):
        _compare(fixed_result(), fixed_result(), max_drop=max_drop)


# --------------------------------------------------------------------------------------------------
# JUnit XML


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(JUNIT_XSD))


def _outcome(name: str, passed: bool, message: str = "a message") -> CheckOutcome:
    check = Check(metric="clean_accuracy", min=0.5)
    return CheckOutcome(name=name, check=check, value=0.6, compared=0.6, passed=passed, message=message)


def test_schema_rejects_malformed_junit(junit_schema: xmlschema.XMLSchema) -> None:
    # the validator is live: these break the Jenkins schema
    assert not junit_schema.is_valid('<testsuites><testsuite name="x"/></testsuites>')  # no tests=
    assert not junit_schema.is_valid('<testsuites><testcase name="x"/></testsuites>')  # no suite
    assert not junit_schema.is_valid('<testsuites><testsuite tests="1"><testcase/></testsuite></testsuites>')
    assert junit_schema.is_valid('<testsuites><testsuite tests="0"/></testsuites>')


def test_junit_from_real_checks(junit_schema: xmlschema.XMLSchema) -> None:
    result = fixed_result()
    outcomes = evaluate_checks(
        result,
        [
            _min("robust_accuracy@linf:0.1=0.55"),  # passes (0.6)
            _min("robust_accuracy@linf:0.1=0.65"),  # fails
            _min("robust_accuracy@linf:0.3=0.1"),  # fails: no such row
            _min("clean_accuracy=0.9"),  # passes (0.95)
        ],
    ) + _compare(_lowered(result, "fgsm", 0.2, 0.05), result)  # 6 rows, 1 fails
    text = render_junit(outcomes, timestamp="2026-01-02T03:04:05")
    junit_schema.validate(text)
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 10
    assert suite.get("tests") == root.get("tests") == "10"
    assert suite.get("failures") == root.get("failures") == "3"
    assert suite.get("errors") == "0" and suite.get("skipped") == "0"
    assert suite.get("timestamp") == "2026-01-02T03:04:05"
    assert [c.get("name") for c in cases] == [o.name for o in outcomes]
    assert {c.get("classname") for c in cases} == {"robaudit.gate"}
    failures = [c.find("failure") for c in cases]
    assert [i for i, f in enumerate(failures) if f is not None] == [1, 2, 7]
    for outcome, case in zip(outcomes, cases, strict=True):
        failure = case.find("failure")
        if failure is not None:
            assert failure.get("type") == "threshold"
            assert failure.get("message") == outcome.message == failure.text


def test_junit_with_a_check_that_could_not_be_made(junit_schema: xmlschema.XMLSchema) -> None:
    xml = render_junit([_outcome("a", True)], errors=[("baseline", "not comparable: dataset differs")])
    junit_schema.validate(xml)
    root = ET.fromstring(xml)
    assert root.get("tests") == "2" and root.get("errors") == "1" and root.get("failures") == "0"
    error = root.find("testsuite/testcase[@name='baseline']/error")
    assert error is not None and error.get("message") == "not comparable: dataset differs"


def test_junit_no_checks_is_an_empty_suite(junit_schema: xmlschema.XMLSchema) -> None:
    text = render_junit([])
    junit_schema.validate(text)
    root = ET.fromstring(text)
    (suite,) = root.findall("testsuite")
    assert suite.get("tests") == "0" and suite.get("failures") == "0"
    assert suite.findall("testcase") == []
    assert suite.get("timestamp") is None
    assert suite.get("name") == "robaudit gate"


def test_junit_escapes_markup_in_names_and_messages(junit_schema: xmlschema.XMLSchema) -> None:
    name = "robust_accuracy@art:<Evil>&\"Co\":linf:0.1 >= 0.5 'q'"
    message = "value < 50% & \"quoted\" 'single' </failure><x>"
    outcomes = [_outcome(name, False, message), _outcome("ok & <fine>", True, "passed & <ok>")]
    text = render_junit(outcomes, suite_name='suite "<&>"')
    junit_schema.validate(text)
    assert "<Evil>" not in text and "<x>" not in text
    root = ET.fromstring(text)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == 'suite "<&>"'
    bad, ok = suite.findall("testcase")
    assert bad.get("name") == name
    failure = bad.find("failure")
    assert failure is not None and failure.get("message") == message and failure.text == message
    assert ok.get("name") == "ok & <fine>" and ok.find("failure") is None


def test_junit_replaces_characters_xml_cannot_hold(junit_schema: xmlschema.XMLSchema) -> None:
    text = render_junit([_outcome("a\x00b\x1bc", False, "line\x0bfeed")])
    junit_schema.validate(text)
    case = ET.fromstring(text).find("testsuite/testcase")
    assert case is not None and case.get("name") == "a\ufffdb\ufffdc"


def test_write_junit_is_atomic_and_matches_render(tmp_path: Path) -> None:
    outcomes = [_outcome("one", True), _outcome("two", False)]
    path = tmp_path / "reports" / "gate.xml"
    write_junit(outcomes, path, timestamp="2026-01-02T03:04:05")
    assert path.read_text(encoding="utf-8") == render_junit(outcomes, timestamp="2026-01-02T03:04:05")
    assert [p.name for p in path.parent.iterdir()] == ["gate.xml"]  # no temporary file left behind
    write_junit([], path)
    assert ET.parse(path).getroot().find("testsuite").get("tests") == "0"  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# eps at the precision it is written with, and printed one way everywhere


def _at(result: AuditResult, *eps: float) -> AuditResult:
    """The fixture with its worst-case rows moved to ``eps``, 0.40, 0.41, ... robust."""
    base = _row(result, WORST_CASE, 0.1)
    rows = [dataclasses.replace(base, eps=e, robust_accuracy=0.40 + i / 100) for i, e in enumerate(eps)]
    return dataclasses.replace(result, rows=rows)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("robust_accuracy@linf:0.0314=0.3", 0.40),  # 8/255 = 0.031372... is 0.0314 to 4 decimals
        ("robust_accuracy@linf:0.03137=0.3", 0.40),  # as a table with 4 digits used to print it
        ("robust_accuracy@linf:8/255=0.3", 0.40),
        ("robust_accuracy@linf:0.0313=0.3", None),  # 0.031372 is not 0.0313 to 4 decimals
        ("robust_accuracy@linf:0.031372549=0.3", 0.40),  # 9 decimals, and so it is
        ("robust_accuracy@linf:0.031372548=0.3", None),  # but not this
    ],
)
def test_eps_matches_at_the_precision_written(text: str, value: float | None) -> None:
    outcome = _one(_at(fixed_result(), 8 / 255), _min(text))
    assert outcome.value == (None if value is None else pytest.approx(value))
    assert outcome.passed is (value is not None)
    if value is not None:  # the message names the row it found, the name keeps the eps as written
        assert "eps=8/255" in outcome.message and text.split("@")[1].split("=")[0] in outcome.name


def test_a_fraction_matches_a_run_eps_written_as_its_rounding() -> None:
    # a run written at 0.0314 (a profile's threat.eps) ran 8/255 as its author wrote it to 4 decimals
    outcome = _one(_at(fixed_result(), 0.0314), _min("robust_accuracy@linf:8/255=0.3"))
    assert outcome.passed and outcome.value == pytest.approx(0.40)


@pytest.mark.parametrize(
    ("row_eps", "check"),
    [
        (0.0313, "8/255"),  # 8/255 = 0.031372... is not 0.0313 to 4 decimals
        (0.03, "8/255"),  # two significant digits: a budget of its own, not a rounding of 8/255
        (0.1, "1/8"),  # one significant digit: 0.125 rounds to it, but 0.1 is not 1/8
    ],
)
def test_a_fraction_does_not_match_a_coarse_or_different_run_eps(row_eps: float, check: str) -> None:
    outcome = _one(_at(fixed_result(), row_eps), _min(f"robust_accuracy@linf:{check}=0.3"))
    assert not outcome.passed and outcome.value is None


def test_a_fraction_that_rounds_to_two_run_eps_is_refused() -> None:
    outcome = _one(_at(fixed_result(), 0.0314, 0.03137), _min("robust_accuracy@linf:8/255=0.3"))
    assert not outcome.passed and outcome.value is None
    assert "worst-case:linf:0.0314 and worst-case:linf:0.03137" in outcome.message


def test_an_eps_that_rounds_from_two_rows_is_refused_naming_both() -> None:
    result = _at(fixed_result(), 0.031, 0.032)
    outcome = _one(result, _min("robust_accuracy@linf:0.03=0.3"))
    assert not outcome.passed and outcome.value is None
    assert "worst-case:linf:0.031 and worst-case:linf:0.032" in outcome.message
    assert "\n" not in outcome.message
    # written as a row shows it, the eps picks that row
    assert _one(result, _min("robust_accuracy@linf:0.032=0.3")).value == pytest.approx(0.41)


def test_an_eps_equal_to_a_row_wins_over_one_that_rounds_to_it() -> None:
    result = _at(fixed_result(), 8 / 255, 0.03)  # 8/255 is also 0.03 to 2 decimals
    assert _one(result, _min("robust_accuracy@linf:0.03=0.3")).value == pytest.approx(0.41)


def test_the_precision_survives_the_configuration_json() -> None:
    # a run folder saves config.json and --resume reloads it: the gate must pick the same rows
    from robaudit.config import AuditConfig

    checks = [
        dataclasses.asdict(_min("robust_accuracy@linf:0.0314=0.3")),  # the CLI's path
        {"metric": "robust_accuracy", "norm": "linf", "eps": 0.0314, "min": 0.3},  # a profile's float
        {"metric": "robust_accuracy", "norm": "linf", "eps": "0.10", "min": 0.3},
        {"metric": "robust_accuracy", "norm": "linf", "eps": "8/255", "min": 0.3},
    ]
    config = AuditConfig(model="m.onnx", eps=("8/255",), gate_checks=checks)
    again = AuditConfig.model_validate_json(config.model_dump_json())
    assert [c.eps_decimals for c in again.gate.checks] == [4, 4, 2, None]
    result = _at(fixed_result(), 8 / 255, 0.1)
    values = [_one(result, Check(**c.model_dump())).value for c in again.gate.checks]
    assert values == [pytest.approx(0.40), pytest.approx(0.40), pytest.approx(0.41), pytest.approx(0.40)]


def test_a_profile_gate_at_the_precision_written() -> None:
    from robaudit.config.profile import check_runnable, parse_profile

    def profile(eps: str, gate_eps: str) -> str:
        return (
            f"version: 1\nthreat: {{eps: [{eps}]}}\n"
            f"gate: {{checks: [{{metric: robust_accuracy, norm: linf, eps: {gate_eps}, min: 0.5}}]}}\n"
        )

    check_runnable(parse_profile(profile("8/255", "0.0314"), "p.yaml"), "p.yaml")  # accepted
    with pytest.raises(
        UsageError, match=r"^p.yaml: gate.checks\[0\]: eps 0.03 matches linf eps 0.031 and 0.032"
    ):
        check_runnable(parse_profile(profile("0.031, 0.032", "0.03"), "p.yaml"), "p.yaml")
    check_runnable(parse_profile(profile("0.0314", "8/255"), "p.yaml"), "p.yaml")  # 8/255 to 4 decimals
    with pytest.raises(UsageError, match="runs linf at eps 8/255 .it runs linf 0.03\\)"):
        check_runnable(parse_profile(profile("0.03", "8/255"), "p.yaml"), "p.yaml")


def test_eps_is_printed_the_same_way_in_every_report_and_message() -> None:
    import io

    from rich.console import Console

    from robaudit.report.html import render_html
    from robaudit.report.markdown import render_markdown
    from robaudit.report.terminal import render, render_gate

    base = fixed_result()
    rows = [dataclasses.replace(r, eps=8 / 255) for r in base.rows if r.eps == 0.1]
    result = dataclasses.replace(base, rows=rows, settings={**base.settings, "eps": [8 / 255]}, radius=[])
    outcomes = evaluate_checks(result, [_min("robust_accuracy@linf:8/255=0.9")])
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    render(result, console)
    render_gate(outcomes, console)
    texts = {
        "terminal": buffer.getvalue(),
        "markdown": render_markdown(result),
        "html": render_html(result),
        "gate": outcomes[0].message,
    }
    for name, text in texts.items():
        assert "8/255" in text, name
        for other in ("0.03137", "0.0313725", "0.0314"):
            assert other not in text, (name, other)


# --------------------------------------------------------------------------------------------------
# before the audit: a check on a row the run will not have, a baseline of other attack settings


def _config(**kwargs: object) -> object:
    from robaudit.config import AuditConfig

    return AuditConfig(model="m.onnx", **kwargs)


def test_precheck_refuses_a_row_the_run_will_not_have() -> None:
    from robaudit.gate.precheck import precheck_gate

    config = _config(
        attacks=("fgsm",),
        eps=(0.1,),
        gate_checks=[dataclasses.asdict(_min("robust_accuracy@pgd:linf:0.3=0.5"))],
    )
    with pytest.raises(UsageError) as refused:
        precheck_gate(config)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "no row pgd:linf:0.3" in message and "fgsm:linf:0.1, worst-case:linf:0.1" in message
    assert "\n" not in message
    for fine in ("robust_accuracy@fgsm:linf:0.1=0.5", "robust_accuracy@linf:0.1=0.5", "clean_accuracy=0.5"):
        precheck_gate(_config(attacks=("fgsm",), eps=(0.1,), gate_checks=[dataclasses.asdict(_min(fine))]))  # type: ignore[arg-type]


def test_precheck_names_rows_as_the_built_attacks_do() -> None:
    from robaudit.gate.precheck import precheck_gate

    def config(text: str) -> object:
        check = dataclasses.asdict(_min(text))
        return _config(attacks=[{"name": "pgd", "loss": "dlr"}], eps=(8 / 255,), gate_checks=[check])

    precheck_gate(config("robust_accuracy@pgd-dlr:linf:0.0314=0.5"))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no row pgd:linf:0.0314 .*pgd-dlr:linf:8/255"):
        precheck_gate(config("robust_accuracy@pgd:linf:0.0314=0.5"))  # type: ignore[arg-type]


def test_precheck_refuses_an_ambiguous_eps() -> None:
    from robaudit.gate.precheck import precheck_gate

    check = dataclasses.asdict(_min("robust_accuracy@linf:0.03=0.5"))
    with pytest.raises(UsageError, match="worst-case:linf:0.031 and worst-case:linf:0.032"):
        precheck_gate(_config(eps=(0.031, 0.032), gate_checks=[check]))  # type: ignore[arg-type]


def test_precheck_refuses_a_baseline_of_other_attack_settings() -> None:
    from robaudit.audit.attack_plan import plan_settings
    from robaudit.gate import BaselineNotComparable
    from robaudit.gate.precheck import possible_plans, precheck_gate

    def baseline_of(config: Any, plan: int = 0) -> AuditResult:
        settings = {**plan_settings(config, possible_plans(config)[plan]), "target": "none", "seed": 0}
        return dataclasses.replace(fixed_result(), settings=settings)

    ran = _config(attacks=("fgsm", "pgd"), eps=(0.1,), steps=10)
    precheck_gate(ran, baseline_of(ran))  # type: ignore[arg-type]
    fewer_steps = _config(attacks=("fgsm", "pgd"), eps=(0.1,), steps=5)
    with pytest.raises(BaselineNotComparable, match=r"settings.pgd.steps 10 -> 5") as refused:
        precheck_gate(fewer_steps, baseline_of(ran))  # type: ignore[arg-type]
    assert refused.value.exit_code == ExitCode.INPUT_ERROR and "--allow-mismatch" in str(refused.value)
    with pytest.raises(BaselineNotComparable, match=r"settings.eps \[0.1\] -> \[0.2\]"):
        precheck_gate(_config(attacks=("fgsm", "pgd"), eps=(0.2,), steps=10), baseline_of(ran))  # type: ignore[arg-type]
    allowed = _config(attacks=("fgsm", "pgd"), eps=(0.1,), steps=5, allow_mismatch=True, baseline="b.json")
    precheck_gate(allowed, baseline_of(ran))  # type: ignore[arg-type]
    # a model without gradients runs only one-pixel: its baseline is like for like with the same run
    mixed = _config(attacks=("fgsm", "onepixel"), eps=(0.1,))
    assert baseline_of(mixed, 1).settings["attacks"] == ["onepixel"]
    precheck_gate(mixed, baseline_of(mixed, 1))  # type: ignore[arg-type]
