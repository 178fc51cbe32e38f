"""α-CROWN (Xu et al. 2021) on the margin: CROWN with each unstable ReLU's lower slope a free α ∈ [0, 1].

Any lower line through the origin with slope in [0, 1] lies below the ReLU on its interval, so CROWN's
bound is sound for every choice of α, per spec. α starts at CROWN's adaptive slopes and is moved by a
few steps of projected gradient ascent (Adam, then clipped to [0, 1]) on the sum of the bounds (the
specs are independent, each has its own α). The best bound each spec reached is kept: every one of
them is sound, so their maximum is, and it is never below CROWN's (step 0 is CROWN itself). The
intermediate bounds stay as given (CROWN's or IBP's); only the last backward pass is optimised.
"""

from __future__ import annotations

import torch

from robaudit.certify.bounds import (
    Bounds,
    InputSet,
    margin_lower_bounds,
    margin_specs,
    relax_back,
    relu_relaxation,
)
from robaudit.certify.ops import Op, ReLU


def alpha_bound(
    ops: list[Op],
    lam: torch.Tensor,
    pre: list[Bounds | None],
    inputs: InputSet,
    steps: int,
    lr: float = 0.5,
) -> torch.Tensor:
    """A lower bound (N, M) of lam·(output of ``ops``) over the input set, lam (N, M, *out); at least
    CROWN's with the same ``pre``."""
    n, m = lam.shape[:2]
    slopes: dict[int, tuple[torch.Tensor, ...]] = {}
    alphas: dict[int, torch.Tensor] = {}
    for i, op in enumerate(ops):
        bounds = pre[i]
        if isinstance(op, ReLU) and bounds is not None:
            low, gap, intercept = relu_relaxation(bounds)
            unstable = (bounds[0] < 0).unsqueeze(1) & (bounds[1] > 0).unsqueeze(1)
            slopes[i] = (low, low + gap, intercept, unstable)
            alphas[i] = low.expand(n, m, *low.shape[2:]).clone().requires_grad_()
    best = None
    optimiser = torch.optim.Adam(list(alphas.values()), lr=lr) if alphas else None
    with torch.enable_grad():
        for step in range(steps + 1):
            bound = _backward(ops, lam, pre, inputs, slopes, alphas)
            best = bound.detach() if best is None else torch.maximum(best, bound.detach())
            if step == steps or optimiser is None:
                break
            optimiser.zero_grad()
            (-bound.sum()).backward()
            optimiser.step()
            with torch.no_grad():
                for alpha in alphas.values():
                    alpha.clamp_(0.0, 1.0)
    assert best is not None
    return best


def _backward(
    ops: list[Op],
    lam: torch.Tensor,
    pre: list[Bounds | None],
    inputs: InputSet,
    slopes: dict[int, tuple[torch.Tensor, ...]],
    alphas: dict[int, torch.Tensor],
) -> torch.Tensor:
    """``bounds.backward_bound`` over all of ``ops`` with the unstable ReLUs' lower slopes ``alphas``."""
    const = lam.new_zeros(lam.shape[:2])
    for i in range(len(ops) - 1, -1, -1):
        if i in alphas:
            low, up, intercept, unstable = slopes[i]
            lower = torch.where(unstable, alphas[i], low)
            neg = lam.clamp_max(0)
            const = const + (neg * intercept).flatten(2).sum(-1)
            lam = lam.clamp_min(0) * lower + neg * up
            continue
        lam, c = relax_back(ops[i], lam, pre[i], None)
        const = const + c
    return inputs.minimise(lam) + const


def alpha_margin_lower_bounds(
    ops: list[Op],
    inputs: InputSet,
    y: torch.Tensor,
    num_classes: int,
    steps: int,
    crown_max: int = 4096,
) -> torch.Tensor:
    """``bounds.margin_lower_bounds`` by CROWN, then its margin pass optimised by α (same intermediate
    bounds): lower bounds (N, K-1) on logit_y - logit_j, never below CROWN's."""
    crown, pre = margin_lower_bounds(ops, inputs, y, "crown", num_classes, crown_max=crown_max)
    specs = margin_specs(y, num_classes, inputs.x0.dtype)
    return torch.maximum(crown, alpha_bound(ops, specs, pre, inputs, steps))
