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


def load_model(config: AuditConfig, device: torch.device) -> ModelHandle:
    path = Path(config.model)
    if not path.exists():
        raise InputError(f"{path}: no such model file; give a .onnx, TorchScript, .pt2 or state_dict file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the model file itself")
    if path.suffix.lower() == ".onnx":
        from robaudit.models.onnx_model import load_onnx

        return load_onnx(path, config, device)
    from robaudit.models.torch_model import load_torch

    return load_torch(path, config, device)
