"""Load a hostile ONNX file in a child process first, where a crash or a hang cannot take robaudit down.

The ONNX checker and ONNX Runtime's session creation are C++ that parses untrusted bytes. They run
once in a child Python (``python -m robaudit.isolated FILE``) with a time limit and an address-space
limit; only when the child finishes does robaudit load the model itself. The child imports onnx and
onnxruntime, not torch, so the check costs well under a second on a typical model. A plain
subprocess, not multiprocessing: spawning through multiprocessing re-imports the caller's main
script, which a library must not do to its users.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from robaudit.errors import InputError

TIMEOUT_S = 120.0
MIN_ADDRESS_SPACE = 8 << 30  # ONNX Runtime maps its libraries and arenas; 8 GiB leaves room for that


def _load(model_file: str) -> None:
    """The child's work: parse, check and open the model; Python errors are the parent's to report."""
    import onnx
    import onnxruntime

    data = Path(model_file).read_bytes()
    try:
        onnx.checker.check_model(onnx.load_model_from_string(data))
    except Exception:  # noqa: BLE001 - only crashes and hangs matter here
        pass
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001
        pass


def _limit_memory(address_space: int) -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    except (ValueError, OSError):
        pass  # a platform without the limit still gets the process boundary and the timeout


def preflight(
    data: bytes, path: Path, timeout_s: float = TIMEOUT_S, address_space: int | None = None
) -> None:
    """Raise InputError when checking or loading ``data`` crashes, hangs or exhausts memory."""
    address_space = address_space or max(MIN_ADDRESS_SPACE, 16 * len(data))
    with tempfile.TemporaryDirectory(prefix="robaudit-") as folder:
        model_file = Path(folder) / "model.onnx"
        model_file.write_bytes(data)
        try:
            done = subprocess.run(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-m", "robaudit.isolated", str(model_file)],
                capture_output=True,
                timeout=timeout_s,
                preexec_fn=(lambda: _limit_memory(address_space)) if os.name == "posix" else None,  # noqa: PLW1509
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise InputError(
                f"{path}: checking and loading the model did not finish in {timeout_s:.0f} s in an isolated "
                "process; refused (a crafted graph can make the ONNX parser loop); re-export the model"
            ) from None
    if done.returncode != 0:
        code = done.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise InputError(
            f"{path}: the ONNX checker or ONNX Runtime crashed on this model ({how}) in an isolated process; "
            "refused; re-export the model with a current exporter"
        )


if __name__ == "__main__":
    _load(sys.argv[1])
