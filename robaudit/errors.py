"""Errors, each mapped to one documented exit code (the contract CI systems rely on).

Every error is shown to the user as one line that names the file, the field and a fix; no traceback
unless ``--debug`` is given.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Stable exit codes. Never renumber: CI pipelines depend on them."""

    OK = 0
    GATE_FAILED = 1
    USAGE_ERROR = 2
    INPUT_ERROR = 3
    UNRELIABLE = 4
    OUT_OF_RESOURCES = 5
    INTERNAL_ERROR = 70


class RobauditError(Exception):
    """Base class: an error the user can fix, shown as one line."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class UsageError(RobauditError):
    """Bad command-line flags or profile values."""

    exit_code = ExitCode.USAGE_ERROR


class InputError(RobauditError):
    """A model or data file that cannot be read, is unsafe to read, or does not fit the model."""

    exit_code = ExitCode.INPUT_ERROR


class ResourceError(RobauditError):
    """Out of memory (host or device) or disk."""

    exit_code = ExitCode.OUT_OF_RESOURCES


class VerificationError(RobauditError):
    """An attack returned a point outside its threat model. This is a bug in an attack, never a success."""

    exit_code = ExitCode.INTERNAL_ERROR


def is_out_of_memory(exc: BaseException) -> bool:
    """GPU or host allocation failure. PyTorch reports a failed host allocation as a RuntimeError and a
    GPU one as torch.cuda.OutOfMemoryError (a RuntimeError too); matched by name so this module stays
    free of torch."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


def one_line(exc: BaseException, limit: int = 200, *, all_lines: bool = False) -> str:
    """An exception's message on one line, cut to ``limit`` characters.

    By default the last non-blank line of a multi-line message (TorchScript puts its own traceback
    first and the actual error last). With ``all_lines``, every non-blank line joined, with runs of
    whitespace made single spaces: a model loader's message spreads one error over several lines (a
    state_dict mismatch lists the missing and the unexpected keys apart); a message that opens with
    TorchScript's traceback still gives only its last line.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not all_lines:
        text = lines[-1] if lines else type(exc).__name__
    else:
        if len(lines) > 1 and "TorchScript" in lines[0]:
            lines = lines[-1:]
        text = " ".join(" ".join(lines).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
