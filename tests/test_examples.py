"""The CI examples in examples/ run as written: every command line in them is executed here.

The jobs run in a scratch folder that links the repository's sample models and examples, so the
outputs land there. ``pip install -e .`` is the one line not executed (the test runs inside that
very install); it is checked to be the README's install command instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

EXAMPLES = REPO / "examples"
INSTALL = "pip install -e ."


def github_commands() -> list[str]:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text(encoding="utf-8"))
    return [step["run"] for step in workflow["jobs"]["audit"]["steps"] if "run" in step]


def gitlab_commands() -> list[str]:
    job = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text(encoding="utf-8"))["robustness"]
    return [*job["script"], *job["after_script"]]


def run_job(commands: list[str], workdir: Path) -> list[subprocess.CompletedProcess[str]]:
    for name in ("sample_models", "examples"):
        (workdir / name).symlink_to(REPO / name)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GITHUB_STEP_SUMMARY": str(workdir / "step-summary.md"),
    }
    done = []
    for command in commands:
        if command == INSTALL:
            continue
        done.append(
            subprocess.run(  # noqa: S603 - the example's own command line
                ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
            )
        )
    return done


@pytest.mark.parametrize("commands", [github_commands(), gitlab_commands()], ids=["github", "gitlab"])
def test_ci_example_runs_end_to_end(commands: list[str], tmp_path: Path) -> None:
    assert INSTALL in commands
    assert INSTALL in (REPO / "README.md").read_text(encoding="utf-8")  # the same install as the Quick start
    results = run_job(commands, tmp_path)
    for result in results:
        assert result.returncode == 0, (result.args, result.stdout[-2000:], result.stderr[-2000:])
    out = tmp_path / "robaudit-out"
    assert {p.name for p in out.iterdir()} >= {"results.json", "report.html", "summary.md", "gate.xml"}
    assert "gate passed: 2 checks" in results[-2].stdout
    junit = (out / "gate.xml").read_text(encoding="utf-8")
    assert junit.count("<testcase") == 2 and "<failure" not in junit
    if (tmp_path / "step-summary.md").exists():
        assert (tmp_path / "step-summary.md").read_text(encoding="utf-8") == (out / "summary.md").read_text(
            encoding="utf-8"
        )


def test_ci_example_fails_the_job_when_the_gate_fails(tmp_path: Path) -> None:
    """The same job with a stricter threshold: exit code 1, and the JUnit file shows the failure."""
    command = "robaudit scan --profile examples/audit.yaml --fail-under robust_accuracy@linf:0.1=0.99"
    (result,) = run_job([command], tmp_path)
    assert result.returncode == 1, result.stderr
    junit = (tmp_path / "robaudit-out" / "gate.xml").read_text(encoding="utf-8")
    assert junit.count("<testcase") == 3 and junit.count("<failure") == 1
    assert (tmp_path / "robaudit-out" / "report.html").exists()  # the reports are written before failing
