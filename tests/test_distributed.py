"""Audits on Ray: the same per-sample records and rows as the in-process run, whatever the number of
workers, a worker killed mid-run or a driver interrupted and resumed; a worker that sees another model
file is refused; a one-line error without Ray.

One local Ray runtime (two CPUs) serves the whole module. Ray runs each CPU worker on one thread, and a
CPU convolution's float rounding depends on the thread count, so the in-process reference runs on one
thread too (and the process's thread count is put back after it: later tests compare subprocesses).
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch

from robaudit.api import run_audit
from robaudit.audit import distributed
from robaudit.audit.preparation import prepare
from robaudit.audit.shard import ShardSettings
from robaudit.config import AuditConfig
from robaudit.errors import InputError
from robaudit.hashing import sha256_file
from robaudit.report.progress import PlainProgress
from robaudit.results import AuditResult
from tests.conftest import HOLDOUT, SAMPLES

CNN = SAMPLES / "mnist_cnn.pt"
# 18 samples in shards of 4 (the last one 2: the shard size does not divide the run), a batch a shard.
N, SHARD = 18, 4
SHARDS = -(-N // SHARD)


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    yield ray
    ray.shutdown()


def _config(out: Path, **run: Any) -> AuditConfig:
    # FGSM, PGD with its random start, and one-pixel (a small population): every kind of per-sample draw.
    return AuditConfig(
        model=run.pop("model", CNN), data=str(HOLDOUT), limit=N, batch_size=run.pop("batch_size", SHARD),
        shard_size=SHARD, attacks=("fgsm", "pgd", "onepixel"), steps=3, eps=(0.1,), population=8, generations=2,
        checks=False, per_sample_path=out, **run,
    )  # fmt: skip


def _rows(result: AuditResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(json.dumps(result.to_dict()))["rows"]
    for row in rows:
        row.pop("seconds", None)
    return rows


@contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(
    ray_runtime: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[bytes, list[dict[str, Any]]]:
    """The in-process run on one thread: its per-sample records and its JSON rows."""
    out = tmp_path_factory.mktemp("reference") / "s.jsonl"
    with _one_thread():
        result = run_audit(_config(out))
    return out.read_bytes(), _rows(result)


class _Recorder:
    """A progress sink that can act on the driver when a shard finishes (kill a worker, press Ctrl-C)."""

    def __init__(self, on_advance: Any = None) -> None:
        self.advanced = 0
        self.stages: list[str] = []
        self.on_advance = on_advance

    def add_task(self, description: str, total: int) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        self.advanced += n
        if self.on_advance is not None:
            self.on_advance(self)

    def stage(self, description: str) -> None:
        self.stages.append(description)


def test_one_and_two_workers_give_the_in_process_records_and_rows(
    ray_runtime: Any, reference: tuple[bytes, list[dict[str, Any]]], tmp_path: Path
) -> None:
    sink = _Recorder()
    one = run_audit(_config(tmp_path / "1.jsonl", workers=1), progress=sink)
    assert (tmp_path / "1.jsonl").read_bytes() == reference[0]
    assert _rows(one) == reference[1]
    assert sink.advanced == N  # every sample once on the driver's display, shards and workers beside it
    assert sink.stages[-1] == f"on Ray: {SHARDS}/{SHARDS} shards done, 1/1 workers alive"
    # Two workers, each choosing its batch size on its own device: auto picks at least a shard, so the
    # batches are the reference's (one per shard) and so is every float.
    lines = io.StringIO()
    two = run_audit(
        _config(tmp_path / "2.jsonl", workers=2, batch_size="auto"), progress=PlainProgress(lines)
    )
    assert (tmp_path / "2.jsonl").read_bytes() == reference[0]
    assert _rows(two) == reference[1]
    note = next(n for n in two.notes if n.startswith("shards ran on 2 Ray workers, 2 alive at the end"))
    assert "2 on cpu at batch size" in note and "worked out on each worker's device" in note
    text = lines.getvalue().splitlines()
    assert f"robaudit: {N}/{N} samples done" in lines.getvalue(), text
    shard_lines = [line for line in text if "shards done" in line and "2/2 workers alive" in line]
    assert any(f"{SHARDS}/{SHARDS} shards done" in line for line in shard_lines), text
    assert any(" elapsed, eta " in line for line in shard_lines), text


def _kill_a_worker(sink: _Recorder) -> None:
    """SIGKILL one of this test's Ray worker processes (a descendant of this process), the first time."""
    if sink.advanced != SHARD:
        return
    workers = [
        p for p in psutil.Process().children(recursive=True) if "ShardWorker" in " ".join(p.cmdline())
    ]  # fmt: skip
    assert workers, "no Ray worker process found"
    os.kill(workers[0].pid, signal.SIGKILL)


def test_a_worker_killed_mid_run_has_its_shards_retried_with_the_same_result(
    ray_runtime: Any,
    reference: tuple[bytes, list[dict[str, Any]]],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # After the first shard, each worker has another shard running or queued: the killed one's are lost.
    sink = _Recorder(_kill_a_worker)
    result = run_audit(_config(tmp_path / "s.jsonl", workers=2), progress=sink)
    assert any(note.startswith("a Ray worker died:") and "retried" in note for note in result.notes), (
        result.notes
    )
    assert (tmp_path / "s.jsonl").read_bytes() == reference[0]
    assert _rows(result) == reference[1]
    assert result.complete
    # Ray's core worker warns on the driver's stderr when an actor that may restart has constructor
    # arguments in the object store (they may be gone by the restart): the inputs' refs go with each call.
    assert "constructor arguments in the object store" not in capfd.readouterr().err


def _interrupt_after(shards: int) -> _Recorder:
    def press_ctrl_c(sink: _Recorder) -> None:
        if sink.advanced >= shards * SHARD:
            raise KeyboardInterrupt

    return _Recorder(press_ctrl_c)


def test_an_interrupted_run_resumes_on_other_worker_counts_and_in_process(
    ray_runtime: Any, reference: tuple[bytes, list[dict[str, Any]]], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # In process, stopped as the second shard ends (the in-process runner reports a shard before it
    # saves it: one saved); on 2 workers, stopped again; on 1 worker, stopped again; finished in process.
    # Each leg saves its shards in the run folder and the next one loads them.
    legs: list[tuple[int, int | None, int]] = [(0, 2, 1), (2, 2, 2), (1, 3, 3), (0, None, SHARDS)]
    for i, (workers, stop, saved) in enumerate(legs):
        sink = _interrupt_after(stop) if stop is not None else _Recorder()
        with _one_thread():
            result = run_audit(
                _config(tmp_path / f"{i}.jsonl", workers=workers, run_dir=run_dir), progress=sink
            )
        assert result.complete == (stop is None), i
        assert len(list(run_dir.glob("batch-*.npz"))) == saved, i
    assert (tmp_path / f"{len(legs) - 1}.jsonl").read_bytes() == reference[0]
    assert _rows(result) == reference[1]


def test_exact_counterexamples_come_back_from_a_worker_as_in_process(
    ray_runtime: Any, tmp_path: Path
) -> None:
    """--certify exact on one Ray worker: the cascade's exact step (its per-sample records, the saved
    counterexamples and the rows) is what the in-process run gives."""
    from tests.test_exact_counterexamples import mlp_files

    model, data = mlp_files(tmp_path)

    def audit(name: str, workers: int) -> AuditResult:
        config = AuditConfig(
            model=model, data=str(data), attacks=("fgsm",), eps=(0.1,), certify="exact", checks=False,
            batch_size=8, shard_size=8, workers=workers, per_sample_path=tmp_path / f"{name}.jsonl",
            adversarial_path=tmp_path / f"{name}.npz",
        )  # fmt: skip
        with _one_thread():
            return run_audit(config)

    local, remote = audit("local", 0), audit("ray", 1)
    assert next(r for r in local.rows if r.attack == "exact").n_fooled_by_attack  # something to carry
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert _rows(remote) == _rows(local)
    with np.load(tmp_path / "ray.npz") as a, np.load(tmp_path / "local.npz") as b:
        assert np.array_equal(a["x_adv"], b["x_adv"]) and list(a["attack"]) == list(b["attack"])


def test_a_worker_that_sees_another_model_file_is_refused_in_one_line(
    ray_runtime: Any, tmp_path: Path
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(CNN.read_bytes())
    config = _config(tmp_path / "s.jsonl", model=model, workers=1)
    prepared = prepare(config)
    driver_sha = sha256_file(model)
    # The shared path changes under the run: the worker reads another model there than the driver did.
    model.write_bytes((SAMPLES / "mnist_cnn_adv.pt").read_bytes())
    try:
        with pytest.raises(InputError) as refused:
            distributed.run_distributed(
                config, prepared, ShardSettings.from_config(config, prepared.batch_size), driver_sha
            )
    finally:
        prepared.restore()
    message = str(refused.value)
    assert "\n" not in message
    assert str(model) in message and "different model file" in message


def test_workers_without_ray_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "block" / "sitecustomize.py"
    blocker.parent.mkdir()
    blocker.write_text("import sys\nsys.modules['ray'] = None\n")
    cmd = [sys.executable, "-m", "robaudit", "scan", str(CNN), "--limit", "4", "--workers", "2"]
    env = {"PYTHONPATH": f"{blocker.parent}{os.pathsep}{SAMPLES.parent}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "robaudit[ray]" in lines[0], done.stderr
