"""Progress on stderr: plain lines in a pipe (with a fake clock, and from a real subprocess), one bar on
a terminal, and what the runner reports to a sink."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from robaudit.api import run_audit
from robaudit.config import AuditConfig
from robaudit.report.progress import PlainProgress, QuietProgress, RichProgress, progress_for
from tests.conftest import HOLDOUT, SAMPLES


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_name_each_stage_once_and_give_the_runs_eta_every_30_s() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = PlainProgress(out, clock)
    task = progress.add_task("samples", 400)
    for shard in range(4):  # four shards of 100; each runs the clean pass, then fgsm, then pgd
        for stage in ("clean", "fgsm linf eps=0.1", "pgd linf eps=0.1"):
            progress.stage(stage)
            clock.now += 5.0
        progress.advance(task, 100)
        clock.now += 10.0 if shard == 0 else 0.0
    lines = out.getvalue().splitlines()
    assert lines == [
        "robaudit: 400 samples to audit",
        "robaudit: 0/400 samples, running clean",
        "robaudit: 0/400 samples, running fgsm linf eps=0.1",
        "robaudit: 0/400 samples, running pgd linf eps=0.1",
        # the first boundary 30 s after the last line (at 0:10): 200 done in 40 s, so 200 more take 40 s
        "robaudit: 200/400 samples, running pgd linf eps=0.1, 0:40 elapsed, eta 0:40",
        "robaudit: 400/400 samples done in 1:10",
    ]


def _sample_model() -> nn.Module:
    return torch.jit.load(str(SAMPLES / "mnist_cnn.pt"))  # type: ignore[no-any-return]


class _Recorder:
    def __init__(self) -> None:
        self.tasks: list[tuple[str, int]] = []
        self.advanced = 0
        self.stages: list[str] = []

    def add_task(self, description: str, total: int) -> int:
        self.tasks.append((description, total))
        return 0

    def advance(self, task: int, n: int) -> None:
        self.advanced += n

    def stage(self, description: str) -> None:
        self.stages.append(description)


def test_the_runner_reports_one_task_over_the_samples_and_each_stage_as_it_starts() -> None:
    config = AuditConfig(
        model=Path("in-memory"), data=str(HOLDOUT), limit=40, batch_size=20, attacks=("fgsm", "pgd"), steps=2,
        eps=(0.1,), checks=False,
    )  # fmt: skip
    sink = _Recorder()
    run_audit(config, progress=sink, module=_sample_model())
    assert sink.tasks == [("samples", 40)] and sink.advanced == 40
    assert sink.stages[:3] == ["clean", "fgsm linf eps=0.1", "pgd linf eps=0.1"]
    assert sink.stages.count("clean") == 2  # once per shard of 20


def test_a_sink_without_stage_still_works() -> None:
    class Old:
        def add_task(self, description: str, total: int) -> int:
            return 0

        def advance(self, task: int, n: int) -> None:
            return None

    config = AuditConfig(model=Path("in-memory"), data=str(HOLDOUT), limit=20, checks=False)
    assert run_audit(config, progress=Old(), module=_sample_model()).data.n_evaluated == 20


def test_a_terminal_gets_one_bar_naming_what_runs() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system=None)
    progress = progress_for(console, quiet=False)
    assert isinstance(progress, RichProgress)
    with progress:
        task = progress.add_task("samples", 40)
        progress.stage("pgd linf eps=0.1")
        progress.advance(task, 20)
        progress._progress.refresh()
        shown = buffer.getvalue()
    assert "samples" in shown and "20/40" in shown and "pgd linf eps=0.1" in shown
    piped = Console(file=io.StringIO(), width=100)
    assert isinstance(progress_for(piped, quiet=False), PlainProgress)
    assert isinstance(progress_for(console, quiet=True), QuietProgress)


def _scan(*extra: str) -> subprocess.CompletedProcess[str]:
    args = [str(SAMPLES / "mnist_cnn.pt"), "--data", str(HOLDOUT), "--limit", "20", "--batch-size", "10"]
    return subprocess.run(  # noqa: S603 - robaudit itself
        [sys.executable, "-m", "robaudit", "scan", *args, "--attack", "fgsm", "--no-checks", *extra],
        capture_output=True,  # stderr is a pipe, as in CI
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=300,
        check=False,
    )


def test_a_piped_scan_prints_plain_progress_lines_and_quiet_silences_them() -> None:
    run = _scan()
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == "robaudit: 20 samples to audit"
    assert "robaudit: 0/20 samples, running clean" in lines
    assert "robaudit: 0/20 samples, running fgsm linf eps=0.1" in lines
    assert lines[-1].startswith("robaudit: 20/20 samples done in ")
    assert "\x1b[" not in run.stderr and "━" not in run.stderr  # no bar, no cursor codes in a log
    quiet = _scan("--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "samples" not in quiet.stderr
    assert "clean accuracy" in quiet.stdout  # the results still print
