"""What every command shares: the one-line error, the guard that turns exceptions into exit codes, and
where log records go."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn, TextIO

import typer
from rich.console import Console

from robaudit.errors import ExitCode, RobauditError, one_line

EXIT_CODES_HELP = (
    "Exit codes: 0 passed; 1 gate failed; 2 usage or profile error; 3 unreadable or unsafe input; "
    "4 unreliable evaluation (--strict); 5 out of resources; 70 internal error."
)

stderr = Console(stderr=True)


def fail(message: str, code: int) -> NoReturn:
    stderr.print(f"robaudit: error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def guarded(debug: bool, interrupted: str | None = None) -> Iterator[None]:
    """Every error as one line with its documented exit code; a traceback only with ``--debug``.
    ``interrupted``: the message for Ctrl-C (None lets KeyboardInterrupt through)."""
    try:
        yield
    except RobauditError as exc:
        fail(str(exc), exc.exit_code)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        fail(interrupted, 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            traceback.print_exc()
        fail(
            f"internal error: {type(exc).__name__}: {one_line(exc)}; rerun with --debug for the traceback",
            ExitCode.INTERNAL_ERROR,
        )


class _StderrAtEmit(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not when the handler was made, so a
    second in-process run (a test runner, a notebook) never writes to the first run's closed stream."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def log_to_stderr() -> None:
    """Warnings from robaudit's modules (an ONNX Runtime install problem, say) as plain lines on stderr."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[_StderrAtEmit()])
