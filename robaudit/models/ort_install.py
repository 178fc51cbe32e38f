"""Detect a broken or mixed ONNX Runtime install before it silently drops the CUDA provider.

onnxruntime and onnxruntime-gpu install into the same folder: with both present, whichever came last
wins, and uninstalling either breaks the other. ``pip check`` sees nothing wrong, so we look ourselves.
"""

from __future__ import annotations

import logging
from importlib import metadata
from types import ModuleType

from robaudit.errors import InputError

log = logging.getLogger(__name__)

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def installed_ort_distributions(path: list[str] | None = None) -> list[str]:
    """The ONNX Runtime builds of the most crowded install folder on ``path`` (default: sys.path).

    Only builds in one folder clash: a build in another folder of the path (a PYTHONPATH entry, say)
    shadows the rest cleanly, since Python imports the first ``onnxruntime`` it finds.
    """
    by_folder: dict[str, list[str]] = {}
    for dist in metadata.distributions(path=path) if path is not None else metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name in ORT_DISTRIBUTIONS:
            by_folder.setdefault(str(dist.locate_file("")), []).append(f"{name}=={dist.version}")
    return max(by_folder.values(), key=len, default=[])


def repair_command(found: list[str]) -> str:
    names = " ".join(f.split("==")[0] for f in found) or "onnxruntime onnxruntime-gpu"
    keep = "onnxruntime-gpu" if any(f.startswith("onnxruntime-gpu") for f in found) else "onnxruntime"
    return f"pip uninstall -y {names} && pip install {keep}"


def mixed_install_message(found: list[str]) -> str | None:
    if len(found) <= 1:
        return None
    return (
        f"ONNX Runtime: {len(found)} builds are installed into the same folder ({', '.join(found)}), so the last "
        f"one installed silently wins; repair with: {repair_command(found)}"
    )


def import_onnxruntime() -> ModuleType:
    found = installed_ort_distributions()
    message = mixed_install_message(found)
    if message:
        log.warning(message)
    try:
        import onnxruntime
    except ImportError as exc:
        raise InputError(
            f"ONNX Runtime cannot be imported ({exc}); repair the install with: {repair_command(found)}"
        ) from None
    if not hasattr(onnxruntime, "InferenceSession"):
        raise InputError(
            f"ONNX Runtime is broken (its files were removed by uninstalling one of two builds); repair with: "
            f"{repair_command(found)}"
        )
    return onnxruntime
