"""Exact verification's counterexamples as adversarial examples: projected, verified, re-predicted.

Exact verification (``certify.milp`` under L∞, the one-pixel sweep) runs on the bound ops, in float64,
on the PyTorch module the attacks use (for ONNX files, the conversion). A point it finds is counted as
fooled only the way an attack's candidate is: projected into the threat model in the input's float32
(the ball ∩ [0, 1] box; the one-pixel sweep's levels k/255 already lie on the grid of 8-bit data),
checked against the threat model by ``verification.verify``, and re-predicted on the reference runtime
(ONNX Runtime for ONNX files, the majority of ``evals`` passes for a random model). A point that
runtime still classifies correctly (float32 rounding, the conversion's gap) is not counted: its sample
stays refuted but unconfirmed, robust in the attacked figure and unknown in the bracket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.attacks.norms import lp_norm
from robaudit.audit.records import EXACT
from robaudit.audit.verification import majority_predict, verify

if TYPE_CHECKING:
    from robaudit.models import ModelAdapter


@dataclass(frozen=True)
class Confirmed:
    """The counterexamples the reference runtime misclassifies: their batch rows, the points (n, C, H, W)
    float32 on the model's device, and what the runtime predicted, with the perturbations' sizes."""

    rows: np.ndarray
    x_adv: torch.Tensor
    pred: np.ndarray
    conf: np.ndarray
    sizes: dict[str, np.ndarray]


def project(point: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """``point`` (n, C, H, W), any float dtype, as float32 inside the threat model around ``x`` (n, C, H,
    W) float32: under L∞, clipped to [x - eps, x + eps] ∩ [0, 1]; for one pixel, clipped to [0, 1] (the
    sweep changed one pixel of ``x`` in float64, and float32 -> float64 -> float32 is exact, so every
    other pixel comes back equal to ``x``'s)."""
    p = point.to(x.device, torch.float32)
    if norm == "linf":
        p = torch.minimum(torch.maximum(p, x - eps), x + eps)
    return p.clamp(0.0, 1.0)


def confirm(
    adapter: ModelAdapter,
    x: torch.Tensor,
    y: torch.Tensor,
    examples: dict[int, torch.Tensor],
    counted: np.ndarray,
    threat: tuple[str, float],
    evals: int,
) -> Confirmed:
    """Of ``examples`` (batch row -> image from ``certify.run``) on rows where ``counted`` holds (the
    samples the cascade attacks), those the reference runtime misclassifies. ``x`` (N, C, H, W) float32
    and ``y`` (N,) are the batch on the model's device. Raises ``VerificationError`` for a projected
    point outside the threat model, which would be a bug here, never a success."""
    norm, eps = threat
    rows = np.asarray(sorted(r for r in examples if counted[r]), np.int64)
    if len(rows) == 0:
        empty = np.zeros(0)
        return Confirmed(rows, x[:0], empty.astype(np.int64), empty, {k: empty for k in ("linf", "l2", "l0")})
    idx = torch.from_numpy(rows).to(x.device)
    x0, y0 = x[idx], y[idx]
    x_adv = project(torch.stack([examples[int(r)] for r in rows]), x0, norm, eps)
    verify(x_adv, x0, eps, norm, EXACT)
    pred_t, conf_t, _ = majority_predict(adapter.predict_logits, x_adv, y0, evals, clean=False)
    pred = pred_t.cpu().numpy().astype(np.int64)
    fooled = pred != y0.cpu().numpy()
    delta = (x_adv - x0).double()
    sizes = {k: lp_norm(delta, k).cpu().numpy()[fooled] for k in ("linf", "l2", "l0")}
    keep = torch.from_numpy(fooled).to(x.device)
    conf = conf_t.cpu().numpy().astype(np.float64)[fooled]
    return Confirmed(rows[fooled], x_adv[keep], pred[fooled], conf, sizes)
