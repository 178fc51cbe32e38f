"""Atomic file output: write a temporary file in the target's folder, then rename it into place.

A crash, a full disk or an exception while rendering never leaves half a report, and an existing
file is only replaced by a complete one. A missing last folder is created (``reports/x.json`` in a
fresh checkout), but no more: a path that runs two folders deep into nothing is most likely a typo,
and the command line refuses it before the audit (``output_problem``). The file gets the usual permissions (0666 minus the umask),
not mkstemp's private 0600, so CI artifacts stay readable.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_problem(path: Path | str) -> str | None:
    """Why ``write_atomic`` could not write ``path``, as the end of a one-line error, or None."""
    path = Path(path)
    if path.is_dir():
        return "is a folder; give a file name"
    folder = path.parent
    into = folder if folder.exists() else folder.parent  # the folder that must exist and take a new entry
    if not into.exists():
        return (
            f"cannot write there ({into} does not exist, and only a missing last folder is created); "
            f"create it first, or choose another folder"
        )
    if not into.is_dir():
        return f"cannot write there ({into} is a file); choose a writable folder"
    if not os.access(into, os.W_OK | os.X_OK):
        return f"cannot write there ({into} is not writable); choose a writable folder"
    return None


def _make_folder(folder: Path) -> None:
    """Create ``folder`` when only it is missing, never its parents."""
    if folder.is_dir():
        return
    if not folder.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, "no such folder, and only a missing last folder is created", str(folder.parent)
        )
    folder.mkdir(exist_ok=True)


def write_atomic(path: Path | str, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    _make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    data = text.encode("utf-8")

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    write_atomic(path, write)
