"""A validated configuration through the audit, the reports and the gate to the exit code."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from robaudit.cli.common import fail, stderr
from robaudit.cli.report_cmd import write_reports
from robaudit.errors import ExitCode


def run_scan(config: Any, quiet: bool = False) -> None:
    from robaudit.allocator import tune_malloc

    tune_malloc()  # before the first tensor: this process's own allocator, never a library user's
    # The converted graph's modules warn about their own code on every forward pass (onnx2pytorch's
    # Gather indexes with a list); that is noise to someone auditing a model. The CLI owns this process's
    # warning filters; the library leaves its user's alone.
    warnings.filterwarnings("ignore", module=r"onnx2(pytorch|torch)\.")
    from robaudit.api import run_audit
    from robaudit.report.progress import progress_for
    from robaudit.report.terminal import render
    from robaudit.results import load_result

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (a CI job cancelled) stops the run like Ctrl-C

    signal.signal(signal.SIGTERM, _terminate)
    outputs = _outputs(config)
    for flag, path in outputs.items():
        if path is not None:
            _check_writable(flag, path)
    _check_no_overwrite(config, outputs)
    baseline = load_result(config.gate.baseline) if config.gate.baseline is not None else None  # fail early
    _precheck(config, baseline)
    console = Console()
    with progress_for(stderr, quiet) as progress:
        result = run_audit(config, progress=progress)
    render(result, console)
    # Reports first: a baseline that turns out not to match must not cost the finished audit.
    reports = config.reports
    write_reports(result, console, reports.json_, reports.html, reports.markdown)
    for path in (reports.per_sample, reports.save_adversarial):
        if path is not None:
            console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    _gate(config, result, baseline, console)


def _precheck(config: Any, baseline: Any) -> None:
    """A gate check on a row the run will not have, or a baseline of other attack settings, fails now
    rather than after the audit; the baseline's refusal goes to --junit as the gate's would."""
    from robaudit.gate import BaselineNotComparable
    from robaudit.gate.precheck import precheck_gate
    from robaudit.report.junit import write_junit

    try:
        precheck_gate(config, baseline)
    except BaselineNotComparable as exc:
        if config.reports.junit is not None:
            write_junit([], config.reports.junit, errors=[("baseline", str(exc))])
            stderr.print(f"wrote {config.reports.junit}", highlight=False, soft_wrap=True)
        raise


def _gate(config: Any, result: Any, baseline: Any, console: Console) -> None:
    """The gate's verdict: rendered, written as JUnit, and turned into the exit code."""
    from robaudit.api import gate_audit
    from robaudit.gate import EXIT_INTERRUPTED, BaselineNotComparable
    from robaudit.report.terminal import plural, render_gate

    try:
        verdict = gate_audit(result, config, baseline)
    except BaselineNotComparable as exc:
        if exc.junit_written is not None:  # a CI test reporter shows why the gate could not decide
            console.print(f"wrote {exc.junit_written}", highlight=False, soft_wrap=True)
        raise
    if verdict.outcomes:
        render_gate(verdict.outcomes, console)
    if verdict.junit_written is not None:
        console.print(f"wrote {verdict.junit_written}", highlight=False, soft_wrap=True)
    if verdict.exit_code == EXIT_INTERRUPTED:
        run_dir = config.run.run_dir
        where = f"; resume with robaudit scan --resume {run_dir}" if run_dir else ""
        stderr.print(
            f"robaudit: interrupted; wrote a partial report marked incomplete{where}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    elif verdict.exit_code == ExitCode.UNRELIABLE:
        # Unreliable numbers make the gate's verdict meaningless, so exit 4 outranks exit 1.
        console.print(
            f"[bold yellow]unreliable evaluation[/]: {plural(len(result.flags), 'reliability flag')} (--strict)"
        )
    if verdict.exit_code:
        raise typer.Exit(verdict.exit_code)


def _outputs(config: Any) -> dict[str, Path | None]:
    r = config.reports
    return {
        "--json": r.json_,
        "--html": r.html,
        "--markdown": r.markdown,
        "--per-sample": r.per_sample,
        "--save-adversarial": r.save_adversarial,
        "--junit": r.junit,
    }


def _check_no_overwrite(config: Any, outputs: dict[str, Path | None]) -> None:
    """Refuse an output that would replace one of the audit's inputs or another output: a report
    written over the model or the data destroys what the user asked to audit."""
    inputs = {
        "the model file": config.model.path,
        "the data": Path(config.data.path) if config.data.path is not None else None,
        "the labels file": config.data.labels,
        "the baseline": config.gate.baseline,
    }
    seen: dict[Path, str] = {}
    for what, path in inputs.items():
        if path is not None:
            seen.setdefault(Path(path).resolve(), what)
    for flag, out in outputs.items():
        if out is None:
            continue
        where = out.resolve()
        if where in seen:
            fail(
                f"{flag} {out}: is also {seen[where]}, which writing there would replace; give the output "
                f"another name",
                ExitCode.USAGE_ERROR,
            )
        seen[where] = f"the {flag} output"


def _check_writable(flag: str, path: Path) -> None:
    """Fail before the audit, not after it, when an output cannot be written. Creates nothing: a missing
    last folder is made when the report is written (``robaudit.atomic``), a deeper one is refused."""
    from robaudit.atomic import output_problem

    problem = output_problem(path)
    if problem is not None:
        fail(f"{flag} {path}: {problem}", ExitCode.USAGE_ERROR)
