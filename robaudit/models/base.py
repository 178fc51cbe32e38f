"""The ModelAdapter: one interface over PyTorch and ONNX classifiers.

Attacks see a function from images on the [0, 1] scale, NCHW, on the device, to logits. Mapping to
the model's own input range, normalisation, layout changes and output conversion all live here, so
eps is always measured on the user's pixel scale mapped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import nn

OutputKind = Literal["logits", "probabilities", "log-probabilities"]


@dataclass(frozen=True)
class Preprocessing:
    """How [0, 1] NCHW images become the model's input tensor."""

    input_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: Literal["nchw", "nhwc"] = "nchw"

    def apply(self, x01: torch.Tensor) -> torch.Tensor:
        lo, hi = self.input_range
        x = x01 if (lo, hi) == (0.0, 1.0) else x01 * (hi - lo) + lo
        if self.mean is not None or self.std is not None:
            channels = x.shape[1]
            mean = torch.tensor(self.mean or (0.0,), dtype=x.dtype, device=x.device)
            std = torch.tensor(self.std or (1.0,), dtype=x.dtype, device=x.device)
            mean = mean.expand(channels) if mean.numel() == 1 else mean
            std = std.expand(channels) if std.numel() == 1 else std
            x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        return x


@dataclass(frozen=True)
class Capabilities:
    """What the runner may do with a model."""

    backend: Literal["torch", "onnx"]
    gradients: bool
    converter: str | None = None
    gradient_note: str | None = None  # why gradients are unavailable, in words
    parity_max_abs_diff: float | None = None  # converted graph vs ONNX Runtime on the first batch
    # When gradients come from a surrogate that approximates the runtime (a quantized graph's float
    # twin): its largest logit difference from the runtime on the first batch; 0 for a faithful one.
    surrogate_gap: float = 0.0

    @property
    def attack_margin(self) -> float:
        """How far a wrong class must lead on the attacked model for a hit to hold on the runtime: twice
        the surrogate's gap (each logit may be off by up to the gap); 0 for a faithful model."""
        return 2 * self.surrogate_gap

    runtime_provider: str | None = None


def detect_output_kind(raw: torch.Tensor) -> OutputKind:
    """Non-negative rows that sum to 1 are probabilities; exp-rows that sum to 1 are log-probabilities.
    A single score per sample (a binary classifier) is a sigmoid probability when every one lies in
    [0, 1], else a logit."""
    raw = raw.detach().double()
    if raw.ndim == 2 and raw.shape[1] == 1:
        return "probabilities" if bool(((raw >= 0) & (raw <= 1)).all()) else "logits"
    if raw.ndim != 2 or raw.shape[1] < 2:
        return "logits"
    if bool((raw >= 0).all()) and torch.allclose(raw.sum(1), torch.ones_like(raw[:, 0]), atol=1e-3):
        return "probabilities"
    if bool((raw <= 0).all()) and torch.allclose(raw.exp().sum(1), torch.ones_like(raw[:, 0]), atol=1e-3):
        return "log-probabilities"
    return "logits"


def output_classes(width: int) -> int:
    """The classes a model with ``width`` output scores tells apart: one score is a binary classifier."""
    return 2 if width == 1 else width


def to_logits(raw: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """Scores whose softmax is the model's distribution, safe to differentiate.

    Log-probabilities already are such scores. Probabilities are saturated: their gradients vanish
    (gradient masking), so we take the log, the best that can be done when no logit layer is reachable.
    A single score (N, 1) is a binary classifier's: class 1's logit z, made (-z/2, z/2), whose softmax
    is (1 - sigmoid(z), sigmoid(z)); a sigmoid probability p gives z = log p - log(1 - p). Split in
    halves, not (0, z): with a constant class-0 logit the cross-entropy gradient is exactly zero once
    sigmoid(z) rounds to 1 in float32 (z > 17), since only class 0's softmax term is left and its logit
    does not move; split, that term carries the gradient, as it does for any two-logit model.
    """
    if raw.shape[1] == 1:
        if kind == "logits":
            z = raw
        else:
            log_p = (
                raw if kind == "log-probabilities" else torch.log(raw.clamp_min(torch.finfo(raw.dtype).tiny))
            )
            log_p = log_p.clamp_max(-torch.finfo(raw.dtype).eps / 2)  # p < 1, so that log(1 - p) is finite
            z = log_p - torch.log(-torch.expm1(log_p))
        return torch.cat([-0.5 * z, 0.5 * z], 1)
    if kind == "probabilities":
        return torch.log(raw.clamp_min(torch.finfo(raw.dtype).tiny))
    return raw


Batch = TypeVar("Batch", np.ndarray, torch.Tensor)


def in_chunks(fn: Callable[[Batch], Batch], x: Batch, size: int) -> Batch:
    """``fn``, which takes batches of exactly ``size`` samples, on a batch ``x`` of any size: split into
    chunks of that size, the last one padded with copies of its last sample, whose outputs are dropped.
    For numpy arrays (a runtime's input) and tensors (a module's) alike."""
    outs = []
    for start in range(0, x.shape[0], size):
        chunk = x[start : start + size]
        n = chunk.shape[0]
        if n < size:
            if isinstance(chunk, torch.Tensor):
                chunk = torch.cat([chunk, chunk[-1:].expand(size - n, *chunk.shape[1:])])
            else:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
        outs.append(fn(chunk)[:n])
    return torch.cat(outs) if isinstance(x, torch.Tensor) else np.concatenate(outs)


def chunked(
    fn: Callable[[np.ndarray], np.ndarray], fixed_batch: int | None
) -> Callable[[np.ndarray], np.ndarray]:
    """Run a fixed-batch runtime on any batch (see ``in_chunks``); ``fn`` itself when no batch size is fixed."""
    if fixed_batch is None:
        return fn
    size = fixed_batch

    def run(x: np.ndarray) -> np.ndarray:
        return in_chunks(fn, x, size)

    return run


def fixed_batch_module(module: torch.nn.Module, fixed_batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch-1 graphs (a Reshape to [1, -1], say) run on a whole batch through vmap when it works,
    else sample by sample; both keep gradients."""

    def looped(x: torch.Tensor) -> torch.Tensor:
        return in_chunks(module, x, fixed_batch)

    if fixed_batch != 1:
        return looped

    def vmapped(x: torch.Tensor) -> torch.Tensor:
        return torch.func.vmap(lambda xi: module(xi.unsqueeze(0)).squeeze(0))(x)

    def choose(x: torch.Tensor) -> torch.Tensor:
        return state["fn"](x)

    state: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"fn": looped}

    def probe(x: torch.Tensor) -> None:
        try:
            with torch.no_grad():
                fast = vmapped(x[:2])
                slow = looped(x[:2])
            if fast.shape == slow.shape and torch.allclose(fast, slow, atol=1e-5, rtol=1e-4):
                state["fn"] = vmapped
        except Exception:  # noqa: BLE001 - vmap is an optimisation; the loop is always right
            pass

    choose.probe = probe  # type: ignore[attr-defined]
    return choose


class ModelAdapter:
    """Logits in pixel space for one classifier.

    ``logits`` is differentiable (PyTorch, or the PyTorch conversion of an ONNX graph) and is what
    attacks call; ``predict_logits`` is what the runner trusts for every reported prediction (ONNX
    Runtime for ONNX files, so a conversion error cannot make a model look weaker than it is).
    """

    def __init__(
        self,
        *,
        name: str,
        sample_shape: tuple[int, int, int],
        num_classes: int,
        preprocessing: Preprocessing,
        output_kind: OutputKind,
        device: torch.device,
        capabilities: Capabilities,
        torch_model: nn.Module | Callable[[torch.Tensor], torch.Tensor] | None,
        runtime: Callable[[np.ndarray], np.ndarray] | None = None,
        detected_output_kind: OutputKind | None = None,
    ) -> None:
        self.name = name
        self.sample_shape = sample_shape
        self.num_classes = num_classes
        self.preprocessing = preprocessing
        self.output_kind = output_kind
        # What the first batch's outputs look like, when --output named a kind instead of auto.
        self.detected_output_kind = detected_output_kind or output_kind
        self.device = device
        self.capabilities = capabilities
        self._torch_model = torch_model
        self._runtime = runtime

    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        """Differentiable logits for x on the [0, 1] scale, shape (N, C, H, W) -> (N, K)."""
        if self._torch_model is None:
            raise RuntimeError(f"{self.name}: no differentiable model ({self.capabilities.gradient_note})")
        raw = self._torch_model(self.preprocessing.apply(x01))
        return to_logits(raw.reshape(raw.shape[0], -1), self.output_kind)

    @torch.inference_mode()
    def predict_logits(self, x01: torch.Tensor) -> torch.Tensor:
        """Logits from the reference runtime, without gradients, on the adapter's device."""
        if self._runtime is None:
            return self.logits(x01).float()
        model_input = self.preprocessing.apply(x01).detach().cpu().numpy().astype(np.float32, copy=False)
        raw = torch.from_numpy(np.ascontiguousarray(self._runtime(model_input))).to(self.device)
        return to_logits(raw.reshape(raw.shape[0], -1).float(), self.output_kind)


class InDtype(torch.nn.Module):
    """A float16, bfloat16 or float64 model seen as float32: the input is cast to the model's type and
    the scores back (autograd differentiates through both casts)."""

    def __init__(self, inner: Callable[..., Any], dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x.to(self.dtype))
        return out.float() if isinstance(out, torch.Tensor) else out
