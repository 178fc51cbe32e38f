"""Run the parsing of a hostile ONNX file where a crash or a hang cannot take robaudit down.

Two steps parse untrusted bytes:

- The ONNX checker and ONNX Runtime's session creation (C++). They run once in a fresh child Python
  (``python -m robaudit.models.isolated check FILE``) with a time limit and an address-space limit; only
  when the child finishes does robaudit open the model itself. The child imports onnx and
  onnxruntime, not torch, so this costs well under a second.
- The conversion to PyTorch (onnx2pytorch, onnx2torch): Python that walks the graph and builds
  tensors from it. It is first tried in a forked child (``run_forked``), which already holds torch and
  the converters, so the trial costs the conversion alone. Forking a process that has threads is
  fragile (a lock another thread held at the fork stays held in the child), so a forked trial that
  fails is not believed: it is confirmed in a fresh child Python (``... convert FILE``), whose verdict
  counts. The parent converts only when a trial finished.

Plain subprocesses, not multiprocessing: spawning through multiprocessing re-imports the caller's main
script, which a library must not do to its users.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from robaudit.errors import InputError, is_out_of_memory

TIMEOUT_S = 120.0
MIN_ADDRESS_SPACE = 8 << 30  # ONNX Runtime maps its libraries and arenas; 8 GiB leaves room for that
_OUT_OF_MEMORY = 3  # the children's exit code for a failed allocation


def _check(model_file: str) -> None:
    """Parse, check and open the model; Python errors are the parent's to report."""
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


def _convert(model_file: str, converter: str) -> None:
    """Convert the model to PyTorch with ``converter`` as the parent would; exit code 3 for a failed
    allocation."""
    import onnx

    from robaudit.models.conversion import trial_convert

    try:
        trial_convert(onnx.load_model_from_string(Path(model_file).read_bytes()), converter)
    except Exception as exc:  # noqa: BLE001 - other Python errors are the parent's to meet itself
        if is_out_of_memory(exc):
            sys.exit(_OUT_OF_MEMORY)


def _limit_memory(address_space: int) -> None:
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    except (ValueError, OSError):
        pass  # a platform without the limit still gets the process boundary and the timeout


def _address_space_in_use() -> int | None:
    """This process's virtual size (VmSize), so a forked child's limit can sit above what it inherits."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _trouble(returncode: int, address_space: int) -> str | None:
    """A child's exit status in words, or None when it finished."""
    if returncode < 0:
        return f"crashed (signal {signal.Signals(-returncode).name})"
    if returncode == _OUT_OF_MEMORY:
        return f"ran out of memory (limit {address_space / 2**30:.1f} GiB)"
    if returncode != 0:
        return f"failed (exit code {returncode})"
    return None


def run_child(
    task: str,
    data: bytes,
    timeout_s: float,
    address_space: int,
    meanwhile: Callable[[], object] | None = None,
    args: tuple[str, ...] = (),
) -> int | None:
    """Run ``task`` (check or convert, with ``args`` after the model file) on ``data`` in a fresh child
    Python: its exit status, or None when it did not finish in time. ``meanwhile`` runs here while the
    child works (it must not touch the model); the time limit counts from the child's start."""
    with tempfile.TemporaryDirectory(prefix="robaudit-") as folder:
        model_file = Path(folder) / "model.onnx"
        model_file.write_bytes(data)
        deadline = time.monotonic() + timeout_s
        child = subprocess.Popen(  # noqa: S603 - this interpreter, this module
            [sys.executable, "-m", "robaudit.models.isolated", task, str(model_file), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: _limit_memory(address_space)) if os.name == "posix" else None,  # noqa: PLW1509
        )
        try:
            if meanwhile is not None:
                meanwhile()
            return child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
        finally:
            if child.poll() is None:  # timed out, or ``meanwhile`` raised
                child.kill()
                child.wait()


def run_forked(
    work: Callable[[], object], timeout_s: float = TIMEOUT_S, extra_memory: int = MIN_ADDRESS_SPACE
) -> str | None:
    """Run ``work`` in a forked child with a time limit and ``extra_memory`` bytes of address space
    beyond what it inherits. Returns None when it finished, else why not, in words. Where fork is
    missing (Windows), ``work`` is not tried and "fork unavailable" is returned."""
    if not hasattr(os, "fork"):
        return "fork unavailable"
    in_use = _address_space_in_use()
    with warnings.catch_warnings():  # Python 3.12+ warns about forking a threaded process: the caller
        warnings.simplefilter("ignore", DeprecationWarning)  # confirms any failure in a fresh process
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage cannot see it
        code = 0
        try:
            # Inherited native objects (an ONNX Runtime session and its thread pool, say) must not be
            # finalised here: their destructors wait for threads that do not exist in the child.
            gc.disable()
            faulthandler.disable()  # a crash is reported by the parent in one line, not as a dump here
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            if in_use is not None:
                _limit_memory(in_use + extra_memory)
            work()
        except BaseException as exc:  # noqa: BLE001 - other Python errors are the caller's to meet itself
            code = _OUT_OF_MEMORY if is_out_of_memory(exc) else 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout_s
    pause = 0.001
    while True:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"did not finish in {timeout_s:g} s"
        time.sleep(pause)
        pause = min(2 * pause, 0.05)
    return _trouble(os.waitstatus_to_exitcode(status), extra_memory)


def trial_conversion(
    work: Callable[[], object],
    serialise: Callable[[], bytes],
    size: int,
    *,
    converter: str,
    timeout_s: float = TIMEOUT_S,
    address_space: int | None = None,
) -> str | None:
    """Try the conversion ``work`` (by ``converter``) of a model of ``size`` bytes where it cannot hurt:
    forked first, and in a fresh child Python, given the model's bytes from ``serialise``, only when the
    forked trial fails (so a large model is not serialised again on the usual path). None when a trial
    finished."""
    address_space = address_space or max(MIN_ADDRESS_SPACE, 16 * size)
    if run_forked(work, timeout_s, address_space) is None:
        return None
    returncode = run_child("convert", serialise(), timeout_s, address_space, args=(converter,))
    if returncode is None:
        return f"did not finish in {timeout_s:g} s"
    return _trouble(returncode, address_space)


def preflight(
    data: bytes,
    path: Path,
    timeout_s: float = TIMEOUT_S,
    address_space: int | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> None:
    """Raise InputError when checking or loading ``data`` crashes, hangs or exhausts memory. The caller's
    ``meanwhile`` (work that does not touch the model) runs while the child checks it."""
    address_space = address_space or max(MIN_ADDRESS_SPACE, 16 * len(data))
    code = run_child("check", data, timeout_s, address_space, meanwhile)
    if code == 0:
        return
    if code is None:
        raise InputError(
            f"{path}: checking and loading the model did not finish in {timeout_s:.0f} s in an isolated "
            "process; refused (a crafted graph can make the ONNX parser loop); re-export the model"
        )
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    raise InputError(
        f"{path}: the ONNX checker or ONNX Runtime crashed on this model ({how}) in an isolated process; "
        "refused; re-export the model with a current exporter"
    )


if __name__ == "__main__":
    if sys.argv[1] == "check":
        _check(sys.argv[2])
    else:
        _convert(sys.argv[2], sys.argv[3])
