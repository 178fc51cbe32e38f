"""The command line: parse flags, call the library, render, exit with a documented code.

One module per command (``scan``, ``report``, ``profile``); heavy libraries (torch, onnx) are imported
inside commands so that ``robaudit --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from robaudit import __version__
from robaudit.cli import profile_cmd, report_cmd, scan, transfer_cmd
from robaudit.cli.common import EXIT_CODES_HELP, log_to_stderr

app = typer.Typer(
    name="robaudit",
    help="Audit how easily an image classifier is fooled by adversarial examples.\n\n"
    "Attack results only upper-bound true robustness: a stronger attack can only find more adversarial "
    "examples.\n\n" + EXIT_CODES_HELP,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Audit how easily an image classifier is fooled by adversarial examples."""


app.command("scan", epilog=EXIT_CODES_HELP)(scan.scan)
app.command("report", epilog=EXIT_CODES_HELP)(report_cmd.report)
app.command("transfer", epilog=EXIT_CODES_HELP)(transfer_cmd.transfer)
app.add_typer(profile_cmd.profile_app, name="profile")


def main() -> None:
    app(prog_name="robaudit")


__all__ = ["app", "log_to_stderr", "main"]
