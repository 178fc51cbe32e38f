"""Check that robaudit writes the same results as a base revision, apart from timings and timestamps.

Each scenario runs twice, one run after the other in the current virtual environment: once with the
code of the base revision (a temporary ``git worktree``) and once with the new code (the working tree,
or another revision with ``--new``), as ``python -m robaudit`` with ``PYTHONPATH`` set to the tree.
Both runs see the same paths: a scratch folder holding a ``sample_models`` link to the tree's own
sample models, so every path a report records is the same. Scenarios:

``readme``
    The README's sample scans: ``--eps 0.1 --eps 0.2`` on ``mnist_cnn.onnx`` and
    ``mnist_cnn_adv.onnx`` with the holdout data, and the Quick start scan (``--eps 0.1``).
``standard``
    ``--profile standard --limit 100`` on ``mnist_cnn.onnx`` with the holdout data. The limit is
    100, not 200: one-pixel (population 400, 100 generations, about 1.9 s per sample on an idle
    2-core CPU) made 200 samples take 22 minutes on 2 shared cores, 21 of them in one-pixel.
``resume``
    ``--attack fgsm --attack pgd`` on 640 samples in batches of 64 with ``--run-dir``, stopped with
    SIGTERM once a few batches are saved (the folder is polled, not slept on), then
    ``robaudit scan --resume DIR``, which writes the run's own ``--json`` and ``--per-sample``
    again; both are compared. ``--resume`` takes no other settings, so the output paths are the
    first run's.
``gate``
    A baseline JSON from a ``--no-checks`` scan of ``mnist_cnn_adv.onnx``, then a scan of
    ``mnist_cnn.onnx`` with ``--baseline base.json --max-drop 0.02 --fail-under
    robust_accuracy@linf:0.1=0.2 --junit gate.xml``, whose baseline checks fail (exit 1): the JSON
    reports, the exit code and the JUnit XML are compared.

What is compared: every JSON report parsed and written back in its own key order, without
``created_utc``, every key named ``seconds`` or ending in ``_seconds``, and the ``timings`` object
(nothing in ``environment`` varies between two runs in one virtual environment); JSON Lines line by
line, the same way; JUnit XML as text without its ``time`` and ``timestamp`` attributes; and the
gated scan's exit code (every other scan must exit 0, the interrupted one 130). Terminal output is
not compared (its progress bars show elapsed times).

Usage (from the repository root, with the project's virtual environment active)::

    python scripts/check_same_results.py [--base REV] [--new REV] [--keep DIR] [--scenario NAME ...]

``--base`` defaults to 79af416, ``--new`` to the working tree; ``--keep DIR`` keeps every run's
output under ``DIR/base`` and ``DIR/new``. Prints a verdict and the wall time per scenario and side,
and a unified diff of the first differences. Exit status 0 when every scenario wrote the same
results, 1 otherwise (a difference, or a run that failed).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "79af416"
COMMAND_TIMEOUT_S = 1800
DIFF_LINES = 60

MODEL = "sample_models/mnist_cnn.onnx"
ADV_MODEL = "sample_models/mnist_cnn_adv.onnx"
DATA = ["--data", "sample_models/mnist_holdout.npz"]
STANDARD_LIMIT = 100
RESUME_ARGS = [MODEL, *DATA, "--limit", "640", "--batch-size", "64", "--attack", "fgsm", "--attack", "pgd"]
RESUME_STOP_AFTER = 3  # saved batches (of 10) before SIGTERM
GATE_ARGS = ["--limit", "300", "--attack", "fgsm", "--attack", "pgd", "--eps", "0.1", "--eps", "0.2"]

# JUnit attributes that hold wall-clock values.
_JUNIT_CLOCK = re.compile(r'\s(?:time|timestamp)="[^"]*"')


class ScenarioError(Exception):
    """A run did not do what the scenario needs (crashed, wrong exit code, nothing written)."""


@dataclass(frozen=True)
class Tree:
    """Code to run: ``root`` goes on PYTHONPATH and provides ``sample_models``."""

    label: str
    root: Path


@dataclass
class SideResult:
    artefacts: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


Scenario = Callable[[Tree, Path], dict[str, str]]


# --- normalisation -------------------------------------------------------------------------------


def _is_clock_key(key: str) -> bool:
    return key in {"created_utc", "seconds", "timings"} or key.endswith("_seconds")


def strip_clock(value: Any) -> Any:
    """``value`` without the keys that hold wall-clock times or timestamps, at any depth."""
    if isinstance(value, dict):
        return {k: strip_clock(v) for k, v in value.items() if not _is_clock_key(k)}
    if isinstance(value, list):
        return [strip_clock(v) for v in value]
    return value


def normalise_json(text: str) -> str:
    return json.dumps(strip_clock(json.loads(text)), indent=2, ensure_ascii=False) + "\n"


def normalise_jsonl(text: str) -> str:
    lines = [json.dumps(strip_clock(json.loads(line)), ensure_ascii=False) for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def normalise_junit(text: str) -> str:
    return _JUNIT_CLOCK.sub("", text)


def read_json(path: Path) -> str:
    if not path.is_file():
        raise ScenarioError(f"{path.name} was not written")
    return normalise_json(path.read_text(encoding="utf-8"))


# --- running robaudit ----------------------------------------------------------------------------


def robaudit_env(tree: Tree) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree.root), "CUDA_VISIBLE_DEVICES": ""}


def robaudit_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "robaudit", *args]


def run_robaudit(tree: Tree, work: Path, args: Sequence[str], expect: Sequence[int] = (0,)) -> int:
    """Run ``robaudit ARGS`` in ``work`` with ``tree``'s code; its output goes to ``work/log.txt``."""
    with (work / "log.txt").open("a", encoding="utf-8") as log:
        log.write(f"$ robaudit {' '.join(args)}\n")
        log.flush()
        done = subprocess.run(
            robaudit_command(args),
            cwd=work,
            env=robaudit_env(tree),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        log.write(f"[exit {done.returncode}]\n")
    if done.returncode not in expect:
        raise ScenarioError(f"robaudit {' '.join(args)} exited {done.returncode}:\n{log_tail(work)}")
    return done.returncode


def log_tail(work: Path, lines: int = 15) -> str:
    text = (work / "log.txt").read_text(encoding="utf-8", errors="replace")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def check_imports(tree: Tree, scratch: Path) -> None:
    """``python -m robaudit`` must run the tree's code, not an installed copy. Only the package is
    located, not imported, so a tree that fails to import is reported by the scenarios instead."""
    where = subprocess.run(
        [sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('robaudit').origin)"],
        cwd=scratch,
        env=robaudit_env(tree),
        capture_output=True,
        text=True,
        check=False,
    )
    expected = (tree.root / "robaudit" / "__init__.py").resolve()
    if where.returncode != 0 or Path(where.stdout.strip()).resolve() != expected:
        raise SystemExit(f"{tree.label}: robaudit is not found in {tree.root}: {where.stdout}{where.stderr}")


# --- scenarios -----------------------------------------------------------------------------------


def scenario_readme(tree: Tree, work: Path) -> dict[str, str]:
    scans = {
        "cnn.json": [MODEL, *DATA, "--eps", "0.1", "--eps", "0.2"],
        "cnn_adv.json": [ADV_MODEL, *DATA, "--eps", "0.1", "--eps", "0.2"],
        "quick_start.json": [MODEL, *DATA, "--eps", "0.1"],
    }
    for name, args in scans.items():
        run_robaudit(tree, work, ["scan", *args, "--json", name])
    return {name: read_json(work / name) for name in scans}


def scenario_standard(tree: Tree, work: Path) -> dict[str, str]:
    args = [MODEL, *DATA, "--profile", "standard", "--limit", str(STANDARD_LIMIT)]
    run_robaudit(tree, work, ["scan", *args, "--json", "standard.json"])
    return {"standard.json": read_json(work / "standard.json")}


def interrupt_when_saved(tree: Tree, work: Path, args: Sequence[str], run_dir: Path) -> int:
    """Start ``robaudit ARGS``, send SIGTERM once ``RESUME_STOP_AFTER`` batches are saved in
    ``run_dir``; the exit code."""
    with (work / "log.txt").open("a", encoding="utf-8") as log:
        log.write(f"$ robaudit {' '.join(args)}  # SIGTERM after {RESUME_STOP_AFTER} batches\n")
        log.flush()
        process = subprocess.Popen(
            robaudit_command(args), cwd=work, env=robaudit_env(tree), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + COMMAND_TIMEOUT_S
            while len(list(run_dir.glob("batch-*.npz"))) < RESUME_STOP_AFTER:
                if process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=COMMAND_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        log.write(f"[exit {code}; {len(list(run_dir.glob('batch-*.npz')))} batches saved]\n")
    return code


def scenario_resume(tree: Tree, work: Path) -> dict[str, str]:
    run_dir = work / "run"
    outputs = ["--json", "resumed.json", "--per-sample", "samples.jsonl"]
    args = ["scan", *RESUME_ARGS, "--run-dir", run_dir.name, *outputs]
    code = interrupt_when_saved(tree, work, args, run_dir)
    if code != 130:
        raise ScenarioError(f"the interrupted scan exited {code}, not 130:\n{log_tail(work)}")
    partial = json.loads((work / "resumed.json").read_text(encoding="utf-8"))
    if partial.get("complete") is not False:
        raise ScenarioError("the interrupted scan's JSON is not marked incomplete")
    run_robaudit(tree, work, ["scan", "--resume", run_dir.name])
    return {
        "resumed.json": read_json(work / "resumed.json"),
        "samples.jsonl": normalise_jsonl((work / "samples.jsonl").read_text(encoding="utf-8")),
    }


def scenario_gate(tree: Tree, work: Path) -> dict[str, str]:
    baseline = ["scan", ADV_MODEL, *DATA, *GATE_ARGS, "--no-checks", "--json", "base.json"]
    run_robaudit(tree, work, baseline)  # without the probes: a baseline's flags play no part in the gate
    gate = ["--baseline", "base.json", "--max-drop", "0.02", "--fail-under", "robust_accuracy@linf:0.1=0.2"]
    reports = ["--json", "gated.json", "--junit", "gate.xml"]
    code = run_robaudit(tree, work, ["scan", MODEL, *DATA, *GATE_ARGS, *gate, *reports], expect=range(256))
    junit = work / "gate.xml"
    if not junit.is_file():
        raise ScenarioError(f"gate.xml was not written (exit {code}):\n{log_tail(work)}")
    return {
        "base.json": read_json(work / "base.json"),
        "gated.json": read_json(work / "gated.json"),
        "gate.xml": normalise_junit(junit.read_text(encoding="utf-8")),
        "exit_code": f"{code}\n",
    }


SCENARIOS: dict[str, Scenario] = {
    "readme": scenario_readme,
    "standard": scenario_standard,
    "resume": scenario_resume,
    "gate": scenario_gate,
}


# --- trees, comparison, main ---------------------------------------------------------------------


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextmanager
def worktree(rev: str, path: Path) -> Iterator[Path]:
    """A detached worktree of ``rev`` at ``path``, removed afterwards."""
    git(
        "worktree", "add", "--detach", "--quiet", str(path), git("rev-parse", "--verify", f"{rev}^{{commit}}")
    )
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def run_side(scenario: Scenario, tree: Tree, work: Path, keep: Path) -> SideResult:
    """Run one scenario with one tree in ``work`` (the same path for both trees), then move its
    files to ``keep``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "sample_models").symlink_to(tree.root / "sample_models", target_is_directory=True)
    result = SideResult()
    start = time.monotonic()
    try:
        result.artefacts = scenario(tree, work)
    except (ScenarioError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        result.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ScenarioError) else str(exc)
    result.seconds = time.monotonic() - start
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(keep, ignore_errors=True)
    shutil.move(work, keep)
    return result


def first_differences(base: dict[str, str], new: dict[str, str]) -> list[str]:
    """A unified diff of the artefacts that differ, cut at ``DIFF_LINES`` lines."""
    lines: list[str] = []
    for name in sorted(set(base) | set(new)):
        a, b = base.get(name, ""), new.get(name, "")
        if a != b:
            lines += difflib.unified_diff(
                a.splitlines(), b.splitlines(), f"base/{name}", f"new/{name}", n=2, lineterm=""
            )
    return lines[:DIFF_LINES] + (
        [f"... ({len(lines) - DIFF_LINES} more diff lines)"] if len(lines) > DIFF_LINES else []
    )


def say(text: str) -> None:
    print(text, flush=True)  # a verdict shows as soon as its scenario ends, also in a CI log


def compare(name: str, base: SideResult, new: SideResult) -> bool:
    """Print the scenario's verdict; whether both sides ran and wrote the same results."""
    times = f"base {base.seconds:.0f} s, new {new.seconds:.0f} s"
    if base.error or new.error:
        say(f"[{name}] FAILED TO RUN ({times})")
        for label, side in (("base", base), ("new", new)):
            if side.error:
                say(f"  {label}: {side.error}")
        return False
    if base.artefacts == new.artefacts:
        say(f"[{name}] identical: {', '.join(sorted(base.artefacts))} ({times})")
        return True
    say(f"[{name}] DIFFERENT ({times})")
    say("\n".join("  " + line for line in first_differences(base.artefacts, new.artefacts)))
    return False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--base", default=DEFAULT_BASE, help=f"revision to compare with (default {DEFAULT_BASE})"
    )
    parser.add_argument("--new", default=None, help="revision to check (default: the working tree)")
    parser.add_argument("--keep", type=Path, default=None, help="keep every run's files under this folder")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="run only this scenario (repeatable)"
    )
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, scratch: Path, base_root: Path, new_root: Path) -> bool:
    keep = args.keep.resolve() if args.keep else scratch / "kept"
    trees = (Tree("base", base_root), Tree("new", new_root))
    for tree in trees:
        check_imports(tree, scratch)
    identical = True
    for name in args.scenario or list(SCENARIOS):
        sides = [
            run_side(SCENARIOS[name], tree, scratch / "work" / name, keep / tree.label / name)
            for tree in trees
        ]
        identical = compare(name, *sides) and identical
    return identical


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="robaudit-same-"))
    try:
        with worktree(args.base, scratch / "base-tree") as base_root:
            new = args.new
            new_label = f"revision {new}" if new else f"the working tree {REPO}"
            say(f"comparing {new_label} with {args.base} ({git('rev-parse', '--short', args.base)})")
            if new is None:
                identical = run_all(args, scratch, base_root, REPO)
            else:
                with worktree(new, scratch / "new-tree") as new_root:
                    identical = run_all(args, scratch, base_root, new_root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say("all scenarios identical" if identical else "results differ (or a run failed)")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
