"""From the model the attacks use to the chain of ops bound propagation understands.

The walker runs ``adapter.logits`` (preprocessing, the PyTorch module or an ONNX file's checked
conversion, and the scores-to-logits step) once on a real batch under a dispatch mode that records
every ATen operation touching the input. That sees the same operations whatever the model's form:
an eager module, TorchScript, or either ONNX converter's graph. The recorded operations must form a
chain (each takes the previous one's output and constants); every other tensor is a constant (weights,
mean/std). Each operation becomes an op of ``certify.ops``, or the walk stops with a one-line note
naming the first one that is not supported. Last, the chain is run on the batch and must reproduce the
model's logits: a walk that misread something gives no certificate rather than a wrong one.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from robaudit.certify.ops import (
    ChannelAffine,
    Conv,
    Linear,
    MaxPool,
    Op,
    Permute,
    ReLU,
    Reshape,
    avgpool_as_conv,
)

if TYPE_CHECKING:
    from robaudit.models import ModelAdapter

SUPPORTED = "Linear, Conv2d, ReLU, BatchNorm, Flatten/Reshape, AvgPool, MaxPool with stride = kernel"
_IDENTITY = {"clone", "detach", "alias", "contiguous", "lift_fresh", "lift_fresh_copy", "_to_copy", "to"}
_RESHAPE = {"view", "_unsafe_view", "reshape", "flatten", "squeeze", "unsqueeze", "expand"}
_SOFTMAX_TAIL = {"_softmax", "_log_softmax", "log", "clamp_min", "view", "_unsafe_view", "reshape"}


class Unsupported(Exception):
    """The model holds an operation the bounds do not cover; the message names it."""


@dataclass(frozen=True)
class Walk:
    """The chain of ops (None when the model has none) and, when None, why in one line."""

    ops: list[Op] | None
    note: str | None
    num_classes: int
    sample_shape: tuple[int, ...]


@dataclass
class _Step:
    name: str
    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    out: Any
    live_in: list[torch.Tensor]


class _Recorder(TorchDispatchMode):
    """Records the operations whose inputs derive from the traced input (the others make constants)."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.live: dict[int, torch.Tensor] = {id(x): x}
        self.steps: list[_Step] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        live_in = [
            a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor) and id(a) in self.live
        ]
        if live_in:
            self.steps.append(_Step(func.overloadpacket.__name__, func, args, kwargs, out, live_in))
            for o in tree_leaves(out):
                if isinstance(o, torch.Tensor):
                    self.live[id(o)] = o  # kept referenced, so that no id is reused
        return out


_CACHE: weakref.WeakKeyDictionary[Any, Walk] = weakref.WeakKeyDictionary()


def walk_adapter(adapter: ModelAdapter, probe: torch.Tensor) -> Walk:
    """The adapter's chain of ops, walked once per adapter on ``probe`` (a few samples on [0, 1])."""
    cached = _CACHE.get(adapter)
    if cached is None:
        cached = walk(adapter.logits, probe.to(adapter.device), adapter.num_classes)
        _CACHE[adapter] = cached
    return cached


def walk(logits: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor, num_classes: int) -> Walk:
    """The chain of ops that computes ``logits`` (images on [0, 1] to (N, K)), checked on ``probe``."""
    x = probe[:2].float().clone() if len(probe) >= 2 else torch.cat([probe, probe]).float()
    try:
        with torch.no_grad():
            recorder = _Recorder(x)
            with recorder:
                out = logits(x)
        ops = _chain(recorder.steps, x, out)
        _check_reproduces(ops, logits, x)
    except Unsupported as exc:
        return Walk(None, f"certify: no certificate: {exc}", num_classes, tuple(x.shape[1:]))
    except Exception as exc:  # noqa: BLE001 - a graph the walker misreads gets no certificate, never a crash
        note = f"certify: no certificate: the model's graph could not be read ({type(exc).__name__}: {exc})"
        return Walk(None, note.splitlines()[0], num_classes, tuple(x.shape[1:]))
    return Walk(ops, None, num_classes, tuple(x.shape[1:]))


def _chain(steps: list[_Step], x: torch.Tensor, out: torch.Tensor) -> list[Op]:
    """Translate the steps that lead to ``out`` into ops, in order."""
    needed = _needed(steps, out)
    steps = [s for i, s in enumerate(steps) if i in needed]
    steps = _strip_softmax_tail(steps)
    ops: list[Op] = []
    current = x
    n = x.shape[0]
    for step in steps:
        if len(step.live_in) != 1 or step.live_in[0] is not current:
            what = (
                "adds two activations (a residual connection)"
                if step.name in ("add", "add_")
                else ("branches (an activation used twice)")
            )
            raise Unsupported(f"the model {what} at {step.name}; supported: {SUPPORTED}")
        result = step.out[0] if isinstance(step.out, (tuple, list)) else step.out
        if not isinstance(result, torch.Tensor) or result.ndim < 1 or result.shape[0] != n:
            raise Unsupported(f"{step.name} mixes samples of a batch; supported: {SUPPORTED}")
        op = _translate(step, current, result)
        if op is not None:
            ops.append(op)
        current = result
    if not any(isinstance(op, (Linear, Conv)) for op in ops) or current.ndim != 2:
        raise Unsupported(f"the model's logits do not come from a linear layer; supported: {SUPPORTED}")
    return ops


def _needed(steps: list[_Step], out: torch.Tensor) -> set[int]:
    """The steps the output depends on (a model may compute things on the input it then drops)."""
    producer: dict[int, int] = {}
    for i, s in enumerate(steps):
        for o in tree_leaves(s.out):
            if isinstance(o, torch.Tensor):
                producer[id(o)] = i
    needed: set[int] = set()
    todo = [id(out)]
    while todo:
        found = producer.get(todo.pop())
        if found is None or found in needed:
            continue
        needed.add(found)
        todo.extend(id(t) for t in steps[found].live_in)
    return needed


def _strip_softmax_tail(steps: list[_Step]) -> list[_Step]:
    """Drop a final softmax or log-softmax (and the log the adapter takes of probabilities): logit_y -
    logit_j is unchanged by them, so the margin is certified on the scores before them."""
    for i in range(len(steps) - 1, -1, -1):
        if steps[i].name in ("_softmax", "_log_softmax"):
            tail = steps[i:]
            if all(s.name in _SOFTMAX_TAIL for s in tail) and _last_axis(steps[i]):
                return steps[:i]
            break
        if steps[i].name not in _SOFTMAX_TAIL:
            break
    return steps


def _last_axis(step: _Step) -> bool:
    dim = int(step.args[1])
    return dim in (-1, step.args[0].ndim - 1) and step.args[0].ndim == 2


def _f64(t: Any) -> torch.Tensor:
    return torch.as_tensor(t).detach().to(torch.float64)


def _translate(step: _Step, x: torch.Tensor, out: torch.Tensor) -> Op | None:
    """One op for ``step`` (None for a step that changes nothing), or Unsupported naming it."""
    name, a = step.name, step.args
    shape = tuple(x.shape[1:])
    if name in _IDENTITY:
        if out.dtype not in (torch.float32, torch.float64) or out.shape != x.shape:
            raise Unsupported(f"the model computes in {out.dtype} ({name}); supported: float32 and float64")
        return None
    if name in _RESHAPE:
        if out.numel() != x.numel():
            raise Unsupported(f"{name} changes the number of elements; supported: {SUPPORTED}")
        return None if out.shape == x.shape else Reshape(shape, tuple(out.shape[1:]))
    if name in ("permute", "transpose"):
        dims = _permutation(name, a, x.ndim)
        return Permute(tuple(d - 1 for d in dims[1:]))
    if name in ("relu", "relu_") or name in ("clamp_min", "clamp_min_") and float(a[1]) == 0.0:
        return ReLU()
    if name in ("convolution", "_convolution"):
        return _conv(a, shape)
    if name in ("addmm", "mm"):
        return _linear(name, a, x, step.kwargs)
    if name in ("max_pool2d_with_indices", "max_pool2d"):
        return _maxpool(a)
    if name in ("avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d"):
        return _avgpool(name, a, shape, tuple(out.shape[1:]))
    if name in ("_native_batch_norm_legit_no_training", "native_batch_norm"):
        return _batch_norm(name, a, x)
    if name in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "rsub"):
        return _elementwise(step, x)
    raise Unsupported(f"the model uses {name}, which the bounds do not cover; supported: {SUPPORTED}")


def _permutation(name: str, a: Sequence[Any], ndim: int) -> list[int]:
    if name == "permute":
        dims = [int(d) % ndim for d in a[1]]
    else:
        dims = list(range(ndim))
        i, j = int(a[1]) % ndim, int(a[2]) % ndim
        dims[i], dims[j] = dims[j], dims[i]
    if dims[0] != 0:
        raise Unsupported(f"{name} moves the batch axis; supported: {SUPPORTED}")
    return dims


def _pair(v: Any) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (int(v[0]), int(v[-1]))


def _conv(a: Sequence[Any], shape: tuple[int, ...]) -> Conv:
    if len(shape) != 3 or a[1].ndim != 4 or bool(a[6]):
        raise Unsupported(f"a convolution other than Conv2d; supported: {SUPPORTED}")
    weight = _f64(a[1])
    bias = _f64(a[2]) if a[2] is not None else weight.new_zeros(weight.shape[0])
    return Conv(weight, bias, _pair(a[3]), _pair(a[4]), _pair(a[5]), int(a[8]), shape)


def _linear(name: str, a: Sequence[Any], x: torch.Tensor, kwargs: dict[str, Any]) -> Linear:
    bias, inp, weight_t = (a[0], a[1], a[2]) if name == "addmm" else (None, a[0], a[1])
    if inp is not x or x.ndim != 2 or kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1:
        raise Unsupported(f"a matrix product other than a Linear layer ({name}); supported: {SUPPORTED}")
    weight = _f64(weight_t).T.contiguous()
    b = _f64(bias).expand(weight.shape[0]).clone() if bias is not None else weight.new_zeros(weight.shape[0])
    return Linear(weight, b)


def _maxpool(a: Sequence[Any]) -> MaxPool:
    kernel = _pair(a[1])
    stride = _pair(a[2]) if len(a) > 2 and a[2] else kernel
    padding = _pair(a[3]) if len(a) > 3 else (0, 0)
    dilation = _pair(a[4]) if len(a) > 4 else (1, 1)
    ceil = bool(a[5]) if len(a) > 5 else False
    if stride != kernel or padding != (0, 0) or dilation != (1, 1) or ceil:
        raise Unsupported(f"a MaxPool with overlapping windows, padding or ceil mode; supported: {SUPPORTED}")
    return MaxPool(kernel)


def _avgpool(name: str, a: Sequence[Any], shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Conv:
    c, h, w = shape
    if name == "avg_pool2d":
        kernel = _pair(a[1])
        stride = _pair(a[2]) if len(a) > 2 and a[2] else kernel
        padding = _pair(a[3]) if len(a) > 3 else (0, 0)
        if padding != (0, 0) or (len(a) > 4 and a[4]) or (len(a) > 6 and a[6] is not None):
            raise Unsupported(f"an AvgPool with padding, ceil mode or a divisor; supported: {SUPPORTED}")
        return avgpool_as_conv(c, kernel, stride, shape)  # type: ignore[arg-type]
    oh, ow = out_shape[-2:]
    if h % oh or w % ow:
        raise Unsupported(f"an adaptive AvgPool with uneven windows; supported: {SUPPORTED}")
    kernel = (h // oh, w // ow)
    return avgpool_as_conv(c, kernel, kernel, shape)  # type: ignore[arg-type]


def _batch_norm(name: str, a: Sequence[Any], x: torch.Tensor) -> ChannelAffine:
    if name == "native_batch_norm" and bool(a[5]):
        raise Unsupported("a BatchNorm in training mode; supported: BatchNorm in eval mode")
    eps = float(a[7] if name == "native_batch_norm" else a[6])
    var = _f64(a[4])
    weight = _f64(a[1]) if a[1] is not None else torch.ones_like(var)
    bias = _f64(a[2]) if a[2] is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + eps)
    return ChannelAffine(scale, bias - _f64(a[3]) * scale, x.ndim - 1)


def _elementwise(step: _Step, x: torch.Tensor) -> ChannelAffine:
    """x + c, x - c, c - x, x * c, x / c with a constant c that is the same along every axis but the
    channel axis (mean/std, an input range, a scalar)."""
    name = step.name.rstrip("_")
    first_live = step.args[0] is x
    other = step.args[1] if first_live else step.args[0]
    if isinstance(other, torch.Tensor) and any(other is t for t in step.live_in):
        raise Unsupported(f"the model {name}s two activations; supported: {SUPPORTED}")
    alpha = float(step.kwargs.get("alpha", 1.0))
    c = _per_channel(other, x)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if name == "add":
        scale, shift = (one, c * alpha) if first_live else (one * alpha, c)
    elif name == "sub":
        scale, shift = (one, -c * alpha) if first_live else (-one * alpha, c)
    elif name == "rsub":
        scale, shift = -one * alpha, c
    elif name == "mul":
        scale, shift = c, zero
    elif first_live:
        scale, shift = 1.0 / c, zero
    else:
        raise Unsupported(f"the model divides by an activation; supported: {SUPPORTED}")
    return ChannelAffine(scale, shift, x.ndim - 1)


def _per_channel(other: Any, x: torch.Tensor) -> torch.Tensor:
    """The constant as one value per channel (axis 1), or Unsupported when it varies along another axis."""
    full = _f64(other).expand(1, *x.shape[1:]) if x.ndim > 1 else _f64(other).expand(1)
    channels = x.shape[1] if x.ndim > 1 else 1
    per = full.reshape(channels, -1) if x.ndim > 1 else full.reshape(1, 1)
    if not bool((per == per[:, :1]).all()):
        raise Unsupported(f"an elementwise constant that varies within a channel; supported: {SUPPORTED}")
    return per[:, 0].clone()


def forward(ops: Sequence[Op], x: torch.Tensor) -> torch.Tensor:
    """The chain on images x (N, C, H, W) on [0, 1], in float64."""
    x = x.to(torch.float64)
    for op in ops:
        x = op.forward(x)
    return x


def _check_reproduces(ops: list[Op], logits: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    """The chain must give the model's logits (up to a shift per sample, which a removed softmax adds)
    on the probe and on random points, or it was misread."""
    gen = torch.Generator().manual_seed(0)
    points = torch.cat([x, torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)])
    with torch.no_grad():
        want = torch.log_softmax(logits(points).double(), 1)
    got = torch.log_softmax(forward(ops, points), 1)
    scale = 1.0 + float(want.abs().max())
    gap = float((got - want).abs().max())
    if not math.isfinite(gap) or gap > 1e-3 * scale:
        raise Unsupported(f"the bound graph does not reproduce the model's logits (off by {gap:.3g})")
