"""Pick the loader for a model file and resolve the device."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from robaudit.config import AuditConfig
from robaudit.errors import InputError, UsageError
from robaudit.models.base import ModelAdapter


class ModelHandle(Protocol):
    """A loaded model file, before it has seen data.

    ``declared_shape`` is the per-sample (C, H, W) the file declares, or None when the format does
    not say (TorchScript, state_dicts). ``bind`` finishes the adapter on a first batch of real data:
    it finds the class count and output kind, and checks a converted graph against its runtime.
    """

    path: Path
    declared_shape: tuple[int, int, int] | None
    notes: list[str]

    def accepts(self, sample_shape: tuple[int, int, int]) -> bool: ...

    def bind(self, sample_shape: tuple[int, int, int], probe_x01: torch.Tensor) -> ModelAdapter: ...

    def restore(self) -> None:
        """Undo what loading did to a user's model (eval mode, frozen weights)."""
        ...


def resolve_device(spec: str) -> torch.device:
    """``auto`` means CUDA when present, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0..cuda:"
                f"{torch.cuda.device_count() - 1}"
            )
    elif device.type != "cpu":
        raise UsageError(f"--device {spec}: unsupported device type; use auto, cpu, cuda or cuda:N")
    return device


# TensorFlow's formats, which robaudit does not read, and the command that turns each into ONNX.
_TENSORFLOW_FORMATS = {
    ".tflite": ("a TensorFlow Lite model", "python -m tf2onnx.convert --tflite {path} --output model.onnx"),
    ".h5": ("a Keras model", "python -m tf2onnx.convert --keras {path} --output model.onnx"),
    ".hdf5": ("a Keras model", "python -m tf2onnx.convert --keras {path} --output model.onnx"),
    ".keras": (
        "a Keras 3 model",
        "in Python: m = keras.saving.load_model('{path}'); m(numpy.zeros((1, *m.input_shape[1:]), 'float32')); "
        "m.export('model.onnx', format='onnx')",
    ),
    ".pb": (
        "a TensorFlow graph",
        "python -m tf2onnx.convert --graphdef {path} --inputs ... --outputs ... --output model.onnx",
    ),
}


def _tensorflow_format(path: Path) -> tuple[str, str] | None:
    """What TensorFlow format ``path`` holds, and how to convert it, or None. By content where it has a
    signature (TFLite's "TFL3", HDF5's magic), so a misnamed file is recognised too."""
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return (
                "a TensorFlow SavedModel",
                f"python -m tf2onnx.convert --saved-model {path} --output model.onnx",
            )
        return None
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head[4:8] == b"TFL3":
        kind, command = _TENSORFLOW_FORMATS[".tflite"]
    elif head == b"\x89HDF\r\n\x1a\n":
        kind, command = _TENSORFLOW_FORMATS[".h5"]
    elif path.suffix.lower() in _TENSORFLOW_FORMATS:
        kind, command = _TENSORFLOW_FORMATS[path.suffix.lower()]
    else:
        return None
    return kind, command.format(path=path)


def load_model(config: AuditConfig, device: torch.device) -> ModelHandle:
    path = config.model_path
    if not path.exists():
        raise InputError(f"{path}: no such model file; give a .onnx, TorchScript, .pt2 or state_dict file")
    foreign = _tensorflow_format(path)
    if foreign is not None:
        kind, command = foreign
        raise InputError(
            f"{path}: {kind}; robaudit reads ONNX and PyTorch models: convert it to ONNX ({command}) and "
            f"audit the .onnx file"
        )
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the model file itself")
    if path.suffix.lower() == ".onnx":
        from robaudit.models.onnx_model import load_onnx

        return load_onnx(path, config, device)
    from robaudit.models.torch_model import load_torch

    return load_torch(path, config, device)
