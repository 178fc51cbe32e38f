"""Reliability flags on hand-built results, and --strict's exit code 4 on a real run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from robaudit.checks import clean_sanity, eps_monotonicity, reliability_flags, runtime_transfer
from robaudit.cli import app
from robaudit.results import AuditResult
from tests.conftest import small_cnn
from tests.report_fixture import fixed_result
from tests.test_report_json import validate_result


def with_row(result: AuditResult, index: int, **changes: object) -> AuditResult:
    rows = list(result.rows)
    rows[index] = dataclasses.replace(rows[index], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(result, rows=rows)


def test_a_sound_result_raises_no_flag() -> None:
    assert reliability_flags(fixed_result()) == []


def test_clean_sanity_fires_near_chance() -> None:
    result = fixed_result()  # 3 classes: chance 33.3%, so the line is at 38.3%
    assert clean_sanity(dataclasses.replace(result, clean_accuracy=0.39)) == []
    (flag,) = clean_sanity(dataclasses.replace(result, clean_accuracy=0.38))
    assert flag.code == "clean-sanity" and "38.0%" in flag.message and "33.3%" in flag.message


def test_runtime_transfer_fires_on_any_disagreement() -> None:
    result = fixed_result()  # fgsm at 0.1: 190 - 150 = 40 confirmed
    (flag,) = runtime_transfer(with_row(result, 0, n_fooled_converted=41))
    assert flag.code == "runtime-transfer" and "41 samples fooled on the converted graph, 40" in flag.message


def test_eps_monotonicity_fires_when_robust_accuracy_rises() -> None:
    result = fixed_result()  # fgsm: 150 robust at 0.1, 60 at 0.2
    raised = with_row(result, 3, n_robust=151, robust_accuracy=151 / 200)
    (flag,) = eps_monotonicity(raised)
    assert flag.code == "eps-monotonicity" and "fgsm linf" in flag.message and "75.5%" in flag.message
    validate_result(dataclasses.replace(raised, flags=reliability_flags(raised)).to_dict())


def test_strict_exits_4_on_a_model_at_chance(tmp_path: Path) -> None:
    """A random-weight CNN scores about 10% on real MNIST images: the clean-sanity flag fires."""
    model = tmp_path / "random.pt"
    torch.jit.save(torch.jit.script(small_cnn(11).eval()), str(model))
    data = tmp_path / "d.npz"
    with np.load(Path(__file__).resolve().parent.parent / "sample_models" / "mnist_holdout.npz") as npz:
        np.savez(data, x=npz["x"][:200], y=npz["y"][:200])
    runner = CliRunner()
    plain = runner.invoke(app, ["scan", str(model), "--data", str(data)])
    assert plain.exit_code == 0, plain.output
    assert "flag clean-sanity" in " ".join(plain.stdout.split())
    strict = runner.invoke(
        app, ["scan", str(model), "--data", str(data), "--strict", "--fail-under", "clean_accuracy=0.9"]
    )
    assert strict.exit_code == 4, strict.output  # unreliable outranks the failed gate
    assert "unreliable evaluation: 1 reliability flag (--strict)" in " ".join(strict.stdout.split())
