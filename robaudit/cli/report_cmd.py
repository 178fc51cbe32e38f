"""``robaudit report``: re-render reports from a saved results JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from robaudit.cli.common import fail, guarded
from robaudit.errors import ExitCode


def write_reports(
    result: object, console: Console, json_path: Path | None, html: Path | None, markdown: Path | None
) -> None:
    """Each report asked for, atomically, with a "wrote" line."""
    from robaudit.results import AuditResult, write_json_atomic

    assert isinstance(result, AuditResult)
    if json_path is not None:
        write_json_atomic(json_path, result.to_dict())
        console.print(f"wrote {json_path}", highlight=False, soft_wrap=True)
    if html is not None:
        from robaudit.report.html import write_html

        write_html(result, html)
        console.print(f"wrote {html}", highlight=False, soft_wrap=True)
    if markdown is not None:
        from robaudit.report.markdown import write_markdown

        write_markdown(result, markdown)
        console.print(f"wrote {markdown}", highlight=False, soft_wrap=True)


def report(
    results: Annotated[Path, typer.Argument(help="A results JSON written by robaudit scan --json.")],
    html: Annotated[Path | None, typer.Option(help="Write the HTML report.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the Markdown summary.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for internal errors.")] = False,
) -> None:
    """Re-render reports from a saved results JSON, without re-running the audit."""
    with guarded(debug):
        from robaudit.atomic import output_problem
        from robaudit.results import load_result

        for flag, path in (("--html", html), ("--markdown", markdown)):
            problem = output_problem(path) if path is not None else None
            if problem is not None:
                fail(f"{flag} {path}: {problem}", ExitCode.USAGE_ERROR)

        result = load_result(results)
        console = Console()
        if html is None and markdown is None:
            from robaudit.report.terminal import render

            render(result, console)
        write_reports(result, console, None, html, markdown)
