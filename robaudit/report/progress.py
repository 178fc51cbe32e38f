"""The runner's progress on stderr: a Rich bar on a terminal, plain lines in a pipe or a CI log.

The runner reports one task, the run's samples, advanced as each shard finishes (every attack of the
run has then finished on those samples), and ``stage`` names what starts running within a shard. So the
one ETA worth showing is the whole run's, and the line beside it says what runs now.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

HEARTBEAT_SECONDS = 30.0  # a plain line at least this often, at the next stage or shard boundary


class RichProgress:
    """On a terminal: one bar over the run's samples with the run's ETA, and what runs now."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[now]}"),
            console=console,
            transient=False,
        )
        self._started = False
        self._task: int | None = None

    def __enter__(self) -> RichProgress:
        return self  # the display starts with the first task, so errors while loading print no bar

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started:
            if self._task is not None:
                self._progress.update(self._task, now="")  # type: ignore[arg-type]
            self._progress.stop()

    def add_task(self, description: str, total: int) -> int:
        if not self._started:
            self._progress.start()
            self._started = True
        self._task = int(self._progress.add_task(description, total=total, now=""))
        return self._task

    def advance(self, task: int, n: int) -> None:
        self._progress.advance(task, n)  # type: ignore[arg-type]

    def stage(self, description: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, now=description)  # type: ignore[arg-type]


def _clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """In a pipe or a CI log: one line when a stage first runs, one at least every 30 s with the samples
    done and the run's ETA (at the next stage or shard boundary: the runner calls no one in between), and
    one when every sample is done. No cursor movement, so a log shows each line once."""

    def __init__(self, stream: IO[str], clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._total = 0
        self._done = 0
        self._now = ""
        self._seen: set[str] = set()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def add_task(self, description: str, total: int) -> int:
        self._start = self._last = self._clock()
        self._total, self._done = total, 0
        self._line(f"{total} samples to audit")
        return 0

    def advance(self, task: int, n: int) -> None:
        self._done += n
        if self._done >= self._total:
            self._line(
                f"{self._done}/{self._total} samples done in {_clock_text(self._clock() - self._start)}"
            )
        else:
            self._heartbeat()

    def stage(self, description: str) -> None:
        self._now = description
        if description not in self._seen:
            self._seen.add(description)
            # Once samples are done there is an ETA to give (Ray's shard lines: a new text each time).
            self._line(f"{self._counts()}, running {description}" + (self._timing() if self._done else ""))
        else:
            self._heartbeat()

    def _counts(self) -> str:
        return f"{self._done}/{self._total} samples"

    def _timing(self) -> str:
        elapsed = self._clock() - self._start
        eta = "unknown" if not self._done else _clock_text(elapsed * (self._total - self._done) / self._done)
        return f", {_clock_text(elapsed)} elapsed, eta {eta}"

    def _heartbeat(self) -> None:
        if self._clock() - self._last < HEARTBEAT_SECONDS:
            return
        self._line(f"{self._counts()}, running {self._now}{self._timing()}")

    def _line(self, text: str) -> None:
        self._last = self._clock()
        self._stream.write(f"robaudit: {text}\n")
        self._stream.flush()


class QuietProgress:
    """``--quiet``: nothing."""

    def __enter__(self) -> QuietProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def add_task(self, description: str, total: int) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        return None


def progress_for(console: Console, quiet: bool) -> RichProgress | PlainProgress | QuietProgress:
    """The display for ``console`` (stderr): a bar on a terminal, lines otherwise, nothing when quiet."""
    if quiet:
        return QuietProgress()
    if console.is_terminal:
        return RichProgress(console)
    return PlainProgress(console.file)
