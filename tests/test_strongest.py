"""The built-in ``strongest`` profile: what ``profile show`` says of it, the cascade it runs under L∞ and
L2, and every adversarial example it reports re-checked here, independently, on ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from typer.testing import CliRunner

from robaudit.attacks.registry import REGISTRY
from robaudit.cli import app
from robaudit.config.explain import budget
from tests.conftest import HOLDOUT, SAMPLES

MODEL = SAMPLES / "mnist_cnn.onnx"


def invoke(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_show_explains_the_order_and_the_budget() -> None:
    result = invoke("profile", "show", "strongest")
    assert result.exit_code == 0, result.output
    comments = [line for line in result.stdout.splitlines() if line.startswith("#")]
    steps = [line.split(".", 1)[1].strip() for line in comments if line.strip("# ")[:2] in ("1.", "2.", "3.")]
    # The runner's order (cheapest first), each with the most passes it may spend on one sample.
    assert steps == [
        "apgd-ce: 100 steps: at most 100 gradient passes per sample",
        "apgd-t: 100 steps x 9 targets: at most 900 gradient passes per sample",
        "square: 5000 queries: at most 5000 forward passes (scores only) per sample",
    ]
    assert any("cascade" in line for line in comments) and any("Square" in line for line in comments)


def test_budget_multiplies_restarts_and_targets() -> None:
    assert budget({"steps": 10, "restarts": 3, "n_targets": 2}).endswith(
        "at most 60 gradient passes per sample"
    )
    assert budget({}) == "one step: at most 1 gradient pass per sample"


def _scan(tmp_path: Path, *extra: object) -> tuple[dict[str, Any], Path]:
    out, adv = tmp_path / "r.json", tmp_path / "adv.npz"
    result = invoke(
        "scan", MODEL, "--profile", "strongest", "--data", HOLDOUT, "--limit", "16", "--steps", "5",
        "--n-targets", "2", "--queries", "30", "--no-checks", "--json", out, "--save-adversarial", adv, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text(encoding="utf-8")), adv


def test_linf_cascade_and_every_example_rechecked_on_onnx_runtime(tmp_path: Path) -> None:
    report, adv = _scan(tmp_path, "--eps", "0.15")
    rows = [(r["attack"], r["norm"]) for r in report["rows"]]
    assert rows == [("apgd-ce", "linf"), ("apgd-t", "linf"), ("square", "linf"), ("worst-case", "linf")]
    worst = report["rows"][-1]
    saved = np.load(adv)
    assert len(saved["index"]) > 0 and len(saved["index"]) == worst["n_clean_correct"] - worst["n_robust"]
    with np.load(HOLDOUT) as data:
        x = data["x"][saved["index"]][:, None].astype(np.float32) / 255
        y = data["y"][saved["index"]]
    x_adv = saved["x_adv"]
    # Inside the threat model: the L∞ ball (float32 slack) and the [0, 1] box.
    assert np.abs(x_adv.astype(np.float64) - x).reshape(len(x), -1).max() <= 0.15 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # Re-checked on the reference runtime, here by a session of our own: every one is misclassified.
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x_adv.astype(np.float32)})[0]
    assert (logits.argmax(1) != y).all()
    assert (logits.argmax(1) == saved["adv_pred"]).all()


def test_l2_runs_the_attacks_registered_for_l2(tmp_path: Path) -> None:
    report, _ = _scan(tmp_path, "--norm", "l2", "--eps", "1.5")
    rows = [r["attack"] for r in report["rows"]]
    expected = [
        a for a in ("apgd-ce", "apgd-t", "square") if "l2" in REGISTRY[a.removesuffix("-ce")].threat_models
    ]
    assert rows == [*expected, "worst-case"] and {r["norm"] for r in report["rows"]} == {"l2"}
