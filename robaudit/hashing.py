"""SHA-256 digests of model and data files, read in 1 MiB chunks so a large file is never held whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

CHUNK_BYTES = 1 << 20


def sha256_of(parts: Iterable[Path | bytes]) -> str:
    """The hex digest of ``parts`` one after another: a file's contents for a Path, bytes as they are
    (a header naming what follows, say, or a tensor's bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            digest.update(part)
            continue
        with part.open("rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The hex digest of one file's contents."""
    return sha256_of([path])
