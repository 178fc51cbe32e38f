"""Interrupt a real scan mid-run, resume it, and get the uninterrupted run's results sample for sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from robaudit.cli import app
from tests.conftest import HOLDOUT, SAMPLES

ARGS = [
    str(SAMPLES / "mnist_cnn.pt"), "--data", str(HOLDOUT), "--limit", "400", "--batch-size", "40",
    "--attack", "fgsm", "--attack", "pgd", "--steps", "40", "--eps", "0.1", "--eps", "0.2", "--no-checks",
]  # fmt: skip


def comparable(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in report["rows"]]


def test_sigterm_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    run_dir, interrupted_json = tmp_path / "run", tmp_path / "interrupted.json"
    env = {**os.environ, "PYTHONPATH": str(SAMPLES.parent)}
    process = subprocess.Popen(  # noqa: S603 - robaudit itself
        [
            sys.executable,
            "-m",
            "robaudit",
            "scan",
            *ARGS,
            "--run-dir",
            str(run_dir),
            "--json",
            str(interrupted_json),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while len(list(run_dir.glob("batch-*.npz"))) < 2:  # let two batches finish, then stop it
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no batch finished in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted; wrote a partial report marked incomplete" in err and f"--resume {run_dir}" in err
    partial = json.loads(interrupted_json.read_text(encoding="utf-8"))
    finished = len(list(run_dir.glob("batch-*.npz")))
    assert partial["complete"] is False and 2 <= finished < 10
    assert partial["data"]["n_requested"] == 400
    # the figures cover the finished batches only
    assert partial["rows"][0]["n_samples"] == partial["data"]["n_evaluated"] == 40 * finished
    assert f"INCOMPLETE: {40 * finished} of 400 samples evaluated" in out
    assert partial["notes"][0].startswith("INCOMPLETE: interrupted after")

    resumed = CliRunner().invoke(app, ["scan", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    final = json.loads(interrupted_json.read_text(encoding="utf-8"))  # the same --json path, now complete
    assert final["complete"] is True

    reference = tmp_path / "reference.json"
    direct = CliRunner().invoke(app, ["scan", *ARGS, "--json", str(reference)])
    assert direct.exit_code == 0, direct.output
    expected = json.loads(reference.read_text(encoding="utf-8"))
    assert comparable(final) == comparable(expected)
    assert final["gallery"] == expected["gallery"] and final["radius"] == expected["radius"]


def test_resume_takes_no_other_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["scan", "--resume", str(tmp_path), "--eps", "0.3"])
    assert result.exit_code == 2 and "takes no other settings" in result.output
    result = CliRunner().invoke(app, ["scan", "--resume", str(tmp_path / "none")])
    assert result.exit_code == 3 and "no config.json there" in result.output


def test_resume_with_a_model_argument_names_the_argument(tmp_path: Path) -> None:
    model = str(SAMPLES / "mnist_cnn.pt")
    result = CliRunner().invoke(app, ["scan", "--resume", str(tmp_path), model])
    assert result.exit_code == 2 and "(got MODEL)" in result.output, result.output
    result = CliRunner().invoke(app, ["scan", "--resume", str(tmp_path), "--no-checks"])
    assert result.exit_code == 2 and "(got --no-checks)" in result.output, result.output


def test_a_run_with_auto_batch_size_saves_the_batch_it_chose(tmp_path: Path) -> None:
    """Saved batches are cut at the chosen size, so the run directory records that size, not "auto":
    a resumed run must cut the same batches."""
    run_dir = tmp_path / "run"
    args = [str(SAMPLES / "mnist_cnn.pt"), "--data", str(HOLDOUT), "--limit", "50", "--attack", "fgsm"]
    first = CliRunner().invoke(
        app,
        [
            "scan",
            *args,
            "--batch-size",
            "auto",
            "--run-dir",
            str(run_dir),
            "--json",
            str(tmp_path / "a.json"),
        ],
    )
    assert first.exit_code == 0, first.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert (
        saved["run"]["batch_size"]
        == json.loads((tmp_path / "a.json").read_text())["settings"]["batch_size"]
        == 64
    )
    before = json.loads((tmp_path / "a.json").read_text())
    again = CliRunner().invoke(
        app, ["scan", "--resume", str(run_dir)]
    )  # writes a.json again, from the folder
    assert again.exit_code == 0, again.output
    assert comparable(json.loads((tmp_path / "a.json").read_text())) == comparable(before)


def test_resume_refuses_a_model_or_data_changed_since_the_run_began(tmp_path: Path) -> None:
    """A run folder's saved batches describe one model on one dataset: resuming after either changed
    would mix two audits into one report."""
    import numpy as np

    model, data, run_dir = tmp_path / "model.onnx", tmp_path / "data.npz", tmp_path / "run"
    model.write_bytes((SAMPLES / "mnist_cnn.onnx").read_bytes())
    data.write_bytes(HOLDOUT.read_bytes())
    args = [str(model), "--data", str(data), "--limit", "40", "--batch-size", "20", "--attack", "fgsm"]
    first = CliRunner().invoke(app, ["scan", *args, "--run-dir", str(run_dir), "--no-checks"])
    assert first.exit_code == 0, first.output
    fingerprint = json.loads((run_dir / "inputs.json").read_text(encoding="utf-8"))
    assert set(fingerprint) == {"model_sha256", "data_sha256"}

    model.write_bytes((SAMPLES / "mnist_cnn_adv.onnx").read_bytes())
    changed = CliRunner().invoke(app, ["scan", "--resume", str(run_dir)])
    assert changed.exit_code == 3, changed.output
    assert "the model changed since the run in this folder began" in " ".join(changed.output.split())

    model.write_bytes((SAMPLES / "mnist_cnn.onnx").read_bytes())
    with np.load(HOLDOUT) as held:
        x, y = held["x"].copy(), held["y"]
    x[0] = 255 - x[0]
    np.savez(data, x=x, y=y)
    changed = CliRunner().invoke(app, ["scan", "--resume", str(run_dir)])
    assert changed.exit_code == 3 and "the data changed" in " ".join(changed.output.split())

    data.write_bytes(HOLDOUT.read_bytes())  # both restored: the run resumes
    assert CliRunner().invoke(app, ["scan", "--resume", str(run_dir)]).exit_code == 0
