"""The bound propagation core (robaudit.certify): sound against dense sampling of the ball, CROWN at least
as tight as IBP, and exact on a linear model. The wiring into audits is not there yet."""

from __future__ import annotations

import pytest
import torch

from robaudit.certify.bounds import InputSet, margin_lower_bounds
from robaudit.certify.milp import forward
from robaudit.certify.ops import Linear, Op, ReLU

CLASSES = 3


def _random_net(seed: int) -> list[Op]:
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(6, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, CLASSES)]
    ops: list[Op] = []
    for i, layer in enumerate(layers):
        ops.append(Linear(layer.weight.detach().double(), layer.bias.detach().double()))
        if i < len(layers) - 1:
            ops.append(ReLU())
    return ops


def _sampled_margins(ops: list[Op], x0: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The smallest logit_y - logit_j seen over 4000 random points of the ball ∩ box, (N, K-1)."""
    gen = torch.Generator().manual_seed(1)
    d = torch.randn(4000, *x0.shape, dtype=torch.float64, generator=gen)
    if norm == "linf":
        d = d.sign() * torch.rand(d.shape, dtype=torch.float64, generator=gen) * eps
    else:
        radius = torch.rand(4000, x0.shape[0], 1, dtype=torch.float64, generator=gen) * eps
        d = d / d.norm(dim=-1, keepdim=True) * radius
    logits = forward(ops, (x0 + d).clamp(0, 1))
    margins = logits.gather(2, y.expand(4000, -1)[..., None]) - logits  # (S, N, K)
    keep = torch.ones(x0.shape[0], CLASSES, dtype=torch.bool)
    keep[torch.arange(x0.shape[0]), y] = False
    return margins.amin(0)[keep].view(x0.shape[0], CLASSES - 1)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.1)])
def test_bounds_are_sound_and_crown_is_at_least_as_tight_as_ibp(seed: int, norm: str, eps: float) -> None:
    ops = _random_net(seed)
    x0 = torch.rand(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1
    y = forward(ops, x0).argmax(1)
    ibp, _ = margin_lower_bounds(ops, InputSet(x0, eps, norm), y, "ibp", CLASSES)
    crown, _ = margin_lower_bounds(ops, InputSet(x0, eps, norm), y, "crown", CLASSES)
    seen = _sampled_margins(ops, x0, y, eps, norm)
    assert bool((ibp <= seen + 1e-9).all())  # a lower bound never above a margin actually reached
    assert bool((crown <= seen + 1e-9).all())
    assert bool((crown >= ibp - 1e-12).all())
    assert bool((crown > ibp + 1e-9).any())  # the backward relaxation adds something on these networks


def test_crown_is_exact_on_a_linear_model() -> None:
    torch.manual_seed(3)
    w, b = torch.randn(CLASSES, 6, dtype=torch.float64), torch.randn(CLASSES, dtype=torch.float64)
    x0 = torch.rand(5, 6, dtype=torch.float64) * 0.5 + 0.25  # eps 0.1 keeps the cube inside the box
    y = (x0 @ w.T + b).argmax(1)
    crown, _ = margin_lower_bounds([Linear(w, b)], InputSet(x0, 0.1, "linf"), y, "crown", CLASSES)
    for i in range(5):
        others = [j for j in range(CLASSES) if j != int(y[i])]
        for col, j in enumerate(others):
            diff = w[int(y[i])] - w[j]
            closed_form = float(diff @ x0[i] + b[int(y[i])] - b[j] - 0.1 * diff.abs().sum())
            assert float(crown[i, col]) == pytest.approx(closed_form, abs=1e-9)
