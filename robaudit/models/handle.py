"""What the PyTorch and ONNX model handles share: the preprocessing the flags ask for, the shape test
of ``accepts``, the (C, H, W) a 4-D input declares, and running a fixed-batch module on any batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from robaudit.config import AuditConfig
from robaudit.models.base import Preprocessing, fixed_batch_module


def declared_sample_shape(dims: Sequence[int | None], layout: str) -> tuple[int, int, int] | None:
    """The per-sample (C, H, W) of a 4-D input whose dimensions are ``dims`` in ``layout``, or None when
    one of them is not fixed (a dynamic axis)."""
    c, h, w = (dims[1], dims[2], dims[3]) if layout == "nchw" else (dims[3], dims[1], dims[2])
    if c is None or h is None or w is None:
        return None
    return (int(c), int(h), int(w))


class FileHandle:
    """A loaded model file before it has seen data (the ``loading.ModelHandle`` protocol), less what
    each backend does itself: loading, ``bind``, and running one batch of zeros in ``_run_on_zeros``.

    ``layout`` is the model's input layout ("nchw" or "nhwc"), ``declared_shape`` the per-sample
    (C, H, W) the file declares (None when it does not say), ``fixed_batch`` the one batch size the
    model takes (None when any).
    """

    layout: str
    declared_shape: tuple[int, int, int] | None
    fixed_batch: int | None

    def __init__(self, path: Path, config: AuditConfig, device: torch.device) -> None:
        self.path = path
        self.config = config
        self.device = device
        self.notes: list[str] = []

    def _preprocessing(self) -> Preprocessing:
        c = self.config.preprocessing
        return Preprocessing(input_range=c.input_range, mean=c.mean, std=c.std, layout=self.layout)  # type: ignore[arg-type]

    def accepts(self, sample_shape: tuple[int, int, int]) -> bool:
        if self.declared_shape is not None:
            return self.declared_shape == sample_shape
        try:
            self._run_on_zeros(self._preprocessing(), sample_shape)
        except Exception:  # noqa: BLE001 - any failure means "not this shape"
            return False
        return True

    def _run_on_zeros(self, pre: Preprocessing, sample_shape: tuple[int, int, int]) -> None:
        """Run the model on one all-zero sample of ``sample_shape``; raises whatever the model raises."""
        raise NotImplementedError

    def _in_fixed_batches(self, module: Any, model_input: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        """``module`` taking any batch size: itself when the file fixes none, else run in chunks of the
        fixed size (through vmap for batch-1 graphs when ``model_input`` shows that it agrees)."""
        if self.fixed_batch is None:
            return module
        batched = fixed_batch_module(module, self.fixed_batch)
        if hasattr(batched, "probe"):
            batched.probe(model_input)
        return batched
