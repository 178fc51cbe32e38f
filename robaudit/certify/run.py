"""Certification of one batch at one threat model, as the shard runs it after the stage's attacks.

Per sample the outcome is a code: ``CERTIFIED`` (the margin's lower bound over the ball ∩ box is
above the tolerance), ``NOT_CERTIFIED`` (wrong on clean input, or the bound does not reach it),
``REFUTED`` (exact verification found a point of the ball the model misclassifies, which the attacks
missed; the point is returned beside the codes, for the shard to confirm on the reference runtime and
count as fooled), or ``NULL`` (no certificate ran: another norm, or a model the bounds do not cover).

The bounds are computed on the PyTorch module the attacks use (for ONNX files, the conversion whose
parity with ONNX Runtime was checked); the reported predictions come from the reference runtime. So a
margin must clear twice the conversion's measured logit gap, plus a float32 rounding allowance, to
count: a certificate is never granted on a margin the runtime could round the other way.

A sample both certified and fooled by a verified attack would mean a bug in the bounds or the walk:
``CertificationError``, an internal error, never a silent figure.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.certify import onepixel_run
from robaudit.certify.bounds import InputSet, margin_lower_bounds, sizes
from robaudit.certify.ops import Op, ReLU
from robaudit.certify.walk import Walk, walk_adapter
from robaudit.errors import VerificationError

if TYPE_CHECKING:
    from robaudit.models import ModelAdapter

NULL, NOT_CERTIFIED, CERTIFIED, REFUTED = -1, 0, 1, 2
CERTIFIED_NORMS = ("linf", "l2")
ROUNDING_TOLERANCE = 1e-4  # float32 logits of a LeNet-sized model differ from float64 by ~1e-6
EXACT_MAX_RELUS = 2048  # auto runs exact only on models with at most this many ReLU units
CROWN_CHUNK = 64  # samples per bound computation (CROWN's memory grows with the batch)
# CROWN bounds a hidden layer with one backward pass per element that needs it (the unstable ones),
# each as wide as the widest layer below it: hidden layers get CROWN's bounds only while elements x
# widest stays under this. An MLP's do. A LeNet's do not: measured on mnist_cnn_adv (1 thread), its
# 128-unit dense layer costs about 0.55 s per image at L∞ 0.05, about 30x PGD-40 (with IBP's bounds
# there CROWN costs about what PGD-40 does), for 27% certified instead of 1% at 0.02 and none either
# way at 0.05 (100 images); the 3,200-element conv layer costs 4.5 s per image more. The margin itself
# always gets CROWN's. Under L2 the layer before the first ReLU is bounded from the ball itself on the
# same budget (else from the L∞ cube around it, which is much looser).
CROWN_HIDDEN_BUDGET = 2**18

# (ops, x, y, eps, norm, time_limit_s) -> (per-sample True/False/None, counterexamples)
ExactFn = Callable[
    [list[Op], torch.Tensor, torch.Tensor, float, str, float],
    tuple[list[bool | None], list[torch.Tensor | None]],
]


# Exact verification's counterexamples: batch row -> the image (C, H, W) float64 on [0, 1] that the
# bound ops misclassify (a REFUTED sample's; the reference runtime has not checked it yet).
Counterexamples = dict[int, torch.Tensor]


class CertificationError(VerificationError):
    """A certified sample was fooled by a verified attack: the bounds are wrong somewhere (a bug)."""


def methods_used(method: str, norm: str, walk: Walk | None, eps: float | None = None) -> str | None:
    """What certified this threat model, as the results record it (None: nothing ran). One pixel
    (l0, eps 1) on greyscale images: the bounds alone, or with the exact sweep ("crown+exact")."""
    if method != "none" and eps is not None and onepixel_run.covers(norm, eps, walk):
        return method if method in ("ibp", "crown") else "crown+exact"
    if method == "none" or norm not in CERTIFIED_NORMS or walk is None or walk.ops is None:
        return None
    if method in ("ibp", "crown"):
        return method
    if exact_function() is None or norm != "linf":
        return "crown"
    if method == "auto" and relu_units(walk.ops, walk.sample_shape) > EXACT_MAX_RELUS:
        return "crown"
    return "crown+exact"


def exact_function() -> ExactFn | None:
    """``robaudit.certify.milp.exact_verdicts``, imported on first use (scipy's MILP); None when that
    module is not installed with this robaudit."""
    if importlib.util.find_spec("robaudit.certify.milp") is None:
        return None
    milp = importlib.import_module("robaudit.certify.milp")
    return milp.exact_verdicts


def relu_units(ops: list[Op], sample_shape: tuple[int, ...]) -> int:
    """ReLU elements per sample: what sizes an exact program (one binary per unstable one)."""
    probe = torch.zeros(1, *sample_shape, dtype=torch.float64)
    total = 0
    for op in ops:
        if isinstance(op, ReLU):
            total += probe[0].numel()
        probe = op.forward(probe)
    return total


def tolerance(adapter: ModelAdapter) -> float:
    """How far above zero a margin's lower bound must be to certify (see the module docstring)."""
    caps = adapter.capabilities
    gap = (caps.parity_max_abs_diff or 0.0) + caps.surrogate_gap
    return ROUNDING_TOLERANCE + 2 * gap


def certify_batch(
    adapter: ModelAdapter,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: np.ndarray,
    fooled: np.ndarray,
    norm: str,
    eps: float,
    method: str,
    time_limit: float,
) -> tuple[np.ndarray, Counterexamples]:
    """Codes (N,) int8 for images ``x`` (N, C, H, W) on [0, 1] with labels ``y`` at (norm, eps), and the
    counterexample of each REFUTED sample.

    ``correct``: which samples the reference runtime classifies correctly (only those can certify);
    ``fooled``: which samples a verified attack fooled at this threat model. Exact verification runs only on the samples neither certified by
    CROWN nor fooled.
    """
    codes = np.full(len(y), NULL, np.int8)
    walk = walk_adapter(adapter, x)
    used = methods_used(method, norm, walk)
    if used is None or walk.ops is None:
        return codes, {}
    ops = [_on_cpu(op) for op in walk.ops]
    x64, y_cpu = x.detach().to("cpu", torch.float64), y.detach().cpu()
    with torch.no_grad():
        bounds = _margin_bounds(ops, x64, y_cpu, eps, norm, "ibp" if used == "ibp" else "crown", walk)
    codes[:] = np.where(correct & (bounds > tolerance(adapter)), CERTIFIED, NOT_CERTIFIED)
    if used == "crown+exact":
        return codes, _exact(ops, x64, y_cpu, eps, norm, time_limit, codes, correct & ~fooled)
    return codes, {}


def certify_onepixel_batch(
    adapter: ModelAdapter,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: np.ndarray,
    fooled: np.ndarray,
    method: str,
) -> tuple[np.ndarray, np.ndarray, Counterexamples]:
    """Codes (N,) for the one-pixel threat model (``onepixel_run``), the positions swept per sample
    (-1: none) and the sweep's counterexamples; all NULL when it does not apply (colour images, a model
    the bounds do not cover)."""
    codes = np.full(len(y), NULL, np.int8)
    swept = np.full(len(y), -1, np.int64)
    walk = walk_adapter(adapter, x)
    if method == "none" or not onepixel_run.covers("l0", 1.0, walk) or walk.ops is None:
        return codes, swept, {}
    ops = [_on_cpu(op) for op in walk.ops]
    codes[:] = NOT_CERTIFIED
    x64, y_cpu = x.detach().to("cpu", torch.float64), y.detach().cpu()
    examples: Counterexamples = {}
    swept = onepixel_run.certify_onepixel(
        ops, x64, y_cpu, walk.num_classes, correct, fooled, method, tolerance(adapter), codes, examples
    )
    return codes, swept, examples


def check_sound(codes: np.ndarray, fooled: np.ndarray, indices: np.ndarray, where: str) -> None:
    """Raise ``CertificationError`` naming the first sample both certified and fooled."""
    both = np.flatnonzero((codes == CERTIFIED) & fooled)
    if len(both):
        raise CertificationError(
            f"internal error: sample {int(indices[both[0]])} is certified at {where} and an attack fooled it "
            f"({len(both)} such samples); the certificate is wrong, this is a bug: please report it"
        )


def _margin_bounds(
    ops: list[Op], x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, method: str, walk: Walk
) -> np.ndarray:
    """The smallest margin lower bound per sample, computed ``CROWN_CHUNK`` samples at a time."""
    widths = sizes(ops, x[:1])
    crown_max = CROWN_HIDDEN_BUDGET // max(widths)
    prefix_max = CROWN_HIDDEN_BUDGET // widths[0]  # L2: the first layer from the ball, where it is small
    out = []
    for start in range(0, len(y), CROWN_CHUNK):
        part = slice(start, start + CROWN_CHUNK)
        inputs = InputSet(x[part], eps, norm)
        lower, _ = margin_lower_bounds(ops, inputs, y[part], method, walk.num_classes, crown_max, prefix_max)
        out.append(lower.amin(1))
    return torch.cat(out).numpy() if out else np.zeros(0)


def _exact(
    ops: list[Op],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    time_limit: float,
    codes: np.ndarray,
    candidates: np.ndarray,
) -> Counterexamples:
    """Exact verdicts for the candidates CROWN left undecided, written into ``codes``; a sample the
    solver did not decide in time keeps NOT_CERTIFIED (it counts as unknown). Returns the refuted
    samples' counterexamples (inside the ball ∩ box, misclassified by the ops in float64)."""
    exact = exact_function()
    rows = np.flatnonzero(candidates & (codes == NOT_CERTIFIED))
    if exact is None or len(rows) == 0:
        return {}
    verdicts, points = exact(ops, x[rows], y[rows], eps, norm, time_limit)
    examples: Counterexamples = {}
    for row, verdict, point in zip(rows.tolist(), verdicts, points, strict=True):
        if verdict is True:
            codes[row] = CERTIFIED
        elif verdict is False:
            codes[row] = REFUTED
            if point is not None:
                examples[row] = point.reshape(x.shape[1:])
    return examples


def _on_cpu(op: Op) -> Op:
    """The op with its tensors on the CPU: bounds run there whatever the model's device (they are
    float64, which GPUs run slowly, and small next to the attacks)."""
    moved = {
        f.name: getattr(op, f.name).cpu()
        for f in dataclasses.fields(op)
        if isinstance(getattr(op, f.name), torch.Tensor)
    }
    return dataclasses.replace(op, **moved)


def note_for(method: str, norm: str, walk: Walk | None, eps: float | None = None) -> str | None:
    """Why a threat model has no certificate, or only part of what was asked, in one line."""
    if method == "none" or eps is not None and onepixel_run.covers(norm, eps, walk):
        return None
    if norm == "l0" and (walk is None or walk.ops is not None):
        return (
            "certify: l0 threat models are not certified except 1 pixel on greyscale images "
            "(certificates cover linf, l2 and one pixel of a single-channel image)"
        )
    if norm not in CERTIFIED_NORMS:
        return f"certify: {norm} threat models are not certified (certificates cover linf and l2)"
    if walk is None or walk.ops is None:
        return walk.note if walk is not None else None
    if method in ("exact", "auto") and norm != "linf":
        return (
            "certify: exact verification covers linf only (a MILP has no L2 ball); l2 is certified by CROWN"
        )
    if method in ("exact", "auto") and exact_function() is None:
        return "certify: exact verification (robaudit.certify.milp) is not installed; CROWN was used"
    units = relu_units(walk.ops, walk.sample_shape)
    if method == "auto" and units > EXACT_MAX_RELUS:
        return (
            f"certify auto: the model has {units} ReLU units, over {EXACT_MAX_RELUS} for exact verification; "
            "CROWN only"
        )
    return None
