"""Audits on Ray: the same per-sample records and rows as the in-process run, and a one-line error without Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


def _scan(
    tmp: Path, name: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[bytes, list[dict[str, object]]]:
    out = tmp / name
    out.mkdir()
    cmd = [
        sys.executable, "-m", "robaudit", "scan", str(SAMPLES / "mnist_cnn.pt"),
        "--data", str(SAMPLES / "mnist_holdout.npz"), "--limit", "30", "--batch-size", "8",
        "--attack", "fgsm", "--attack", "pgd", "--steps", "5", "--eps", "0.1", "--no-checks", "--quiet",
        "--json", str(out / "r.json"), "--per-sample", str(out / "s.jsonl"), *extra,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((out / "r.json").read_text())["rows"]
    for row in rows:
        row.pop("seconds", None)
    return (out / "s.jsonl").read_bytes(), rows


def test_two_workers_give_the_in_process_records_and_rows(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    # Ray runs each worker on one thread, and a CPU convolution's float rounding depends on its thread
    # count (the 7th digit of a confidence): the in-process run is compared at one thread too.
    local_samples, local_rows = _scan(tmp_path, "local", env={**os.environ, "OMP_NUM_THREADS": "1"})
    # Shards of 16 do not divide the 30 samples; PGD draws a random start per sample. A shard size that
    # is not a multiple of the batch size changes the batches' sizes, and with them the float rounding
    # of a convolution (confidences differ in the 7th digit): identity is asserted on the aligned grid.
    ray_samples, ray_rows = _scan(tmp_path, "ray", "--workers", "2", "--shard-size", "16")
    assert ray_samples == local_samples
    assert ray_rows == local_rows


def test_workers_without_ray_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "block" / "sitecustomize.py"
    blocker.parent.mkdir()
    blocker.write_text("import sys\nsys.modules['ray'] = None\n")
    cmd = [
        sys.executable,
        "-m",
        "robaudit",
        "scan",
        str(SAMPLES / "mnist_cnn.pt"),
        "--limit",
        "4",
        "--workers",
        "2",
    ]
    env = {"PYTHONPATH": str(blocker.parent), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "robaudit[ray]" in lines[0], done.stderr
