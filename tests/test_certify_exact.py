"""Exact verification (robaudit.certify.milp) and exact one-pixel verdicts (robaudit.certify.onepixel_exact):
bracketed by CROWN below and by attacks and sampling above, equal to known answers (a closed form, a
grid search, a brute-force sweep), counterexamples that really fool, and an honest 'unknown'."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robaudit.certify.bounds import InputSet, margin_lower_bounds
from robaudit.certify.milp import exact_min_margin, exact_verdicts, forward
from robaudit.certify.onepixel_exact import onepixel_exact
from robaudit.certify.ops import Conv, Linear, MaxPool, Op, ReLU, Reshape

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


def _mlp_ops(widths: list[int], seed: int, scale: float = 1.0) -> list[Op]:
    gen = torch.Generator().manual_seed(seed)
    ops: list[Op] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = torch.randn(b, a, dtype=torch.float64, generator=gen) * scale / math.sqrt(a)
        ops.append(Linear(w, torch.randn(b, dtype=torch.float64, generator=gen) * 0.1))
        if i < len(widths) - 2:
            ops.append(ReLU())
    return ops


def _margins(ops: list[Op], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min_j (logit_y - logit_j) per row of x, y broadcast against x's leading axes."""
    logits = forward(ops, x.reshape(-1, *x.shape[-1:])).reshape(*x.shape[:-1], -1)
    own = logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1))
    others = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[-1]).bool(), -math.inf)
    return own[..., 0] - others.max(-1).values


def _attacked_margins(ops: list[Op], x0: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per sample of x0 (N, d), the smallest margin seen at 500 random points of the ball ∩ box, 500 of
    its corners, and along 30 steps of signed-gradient descent on the margin from 10 of them."""
    gen = torch.Generator().manual_seed(0)
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    pts = lo + (hi - lo) * torch.rand(1000, *x0.shape, dtype=torch.float64, generator=gen)
    pts[:500] = torch.where(pts[:500] > (lo + hi) / 2, hi, lo)
    best = _margins(ops, pts, y).min(0).values
    x = pts[:10].clone()
    for _ in range(30):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(_margins(ops, x, y).sum(), x)
        x = torch.minimum(torch.maximum(x.detach() - eps / 10 * g.sign(), lo), hi)
        best = torch.minimum(best, _margins(ops, x, y).min(0).values)
    return best


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.08, 0.2]))
def test_crown_at_most_exact_at_most_attack_on_random_networks(seed: int, eps: float) -> None:
    ops = _mlp_ops([5, 12, 12, 3], seed, scale=2.0)
    x = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = forward(ops, x).argmax(1)
    inputs = InputSet(x, eps, "linf")
    ibp = margin_lower_bounds(ops, inputs, y, "ibp", 3)[0].min(1).values
    crown = margin_lower_bounds(ops, inputs, y, "crown", 3)[0].min(1).values
    exact = exact_min_margin(ops, x, y, eps, time_limit_s=20)
    attacked = _attacked_margins(ops, x, y, eps)
    verdicts, _ = exact_verdicts(ops, x, y, eps, "linf", time_limit_s=20)
    for i, r in enumerate(exact):
        assert r.upper - r.lower < 1e-5  # the program finished: the bracket is closed
        if abs(r.lower) > 1e-5:  # the sign-only programs agree with the minimised margin
            assert verdicts[i] is (r.lower > 0)
        assert float(ibp[i]) <= float(crown[i]) + 1e-9
        assert float(crown[i]) <= r.lower + 1e-6
        assert r.upper <= float(attacked[i]) + 1e-6


def test_exact_equals_a_grid_search_on_a_2d_problem() -> None:
    ops = _mlp_ops([2, 10, 10, 2], seed=4, scale=2.0)
    x0 = torch.tensor([[0.45, 0.55]], dtype=torch.float64)
    y, eps = int(forward(ops, x0).argmax()), 0.3
    n = 801
    axis = [torch.linspace(float(c) - eps, float(c) + eps, n, dtype=torch.float64).clamp(0, 1) for c in x0[0]]
    grid = torch.cartesian_prod(*axis)
    grid_min = float(_margins(ops, grid, torch.tensor(y)).min())
    lipschitz = 1.0
    for op in ops:  # a Lipschitz constant (L2) of both logits: the product of the layers' norms
        if isinstance(op, Linear):
            lipschitz *= float(torch.linalg.matrix_norm(op.weight, 2))
    spacing = 2 * eps / (n - 1)
    (r,) = exact_min_margin(ops, x0, torch.tensor([y]), eps, time_limit_s=20)
    assert r.upper - r.lower < 1e-6
    assert r.upper <= grid_min + 1e-9  # the exact minimum is at most any grid point's margin
    assert grid_min - r.lower <= 2 * lipschitz * spacing * math.sqrt(2) / 2  # and the grid gets close


def test_exact_on_a_linear_model_equals_the_closed_form() -> None:
    gen = torch.Generator().manual_seed(3)
    w, b = (
        torch.randn(4, 6, dtype=torch.float64, generator=gen),
        torch.randn(4, dtype=torch.float64, generator=gen),
    )
    x0 = torch.rand(4, 6, dtype=torch.float64, generator=gen)  # near the box's faces: the box binds
    y, eps = (x0 @ w.T + b).argmax(1), 0.15
    results = exact_min_margin([Linear(w, b)], x0, y, eps)
    for i, r in enumerate(results):
        lo, hi = (x0[i] - eps).clamp(0, 1), (x0[i] + eps).clamp(0, 1)
        closed = min(
            float(torch.where(d > 0, lo, hi) @ d + b[int(y[i])] - b[j])
            for j in range(4)
            if j != int(y[i])
            for d in [w[int(y[i])] - w[j]]
        )
        assert r.lower == pytest.approx(closed, abs=1e-6)
        assert r.upper == pytest.approx(closed, abs=1e-6)


def test_counterexamples_are_in_the_ball_and_box_and_misclassified() -> None:
    ops = _mlp_ops([6, 16, 16, 4], seed=7, scale=2.0)
    x = torch.rand(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    y, eps = forward(ops, x).argmax(1), 0.4
    verdicts, examples = exact_verdicts(ops, x, y, eps, "linf", time_limit_s=20)
    attacked = _attacked_margins(ops, x, y, eps)
    assert False in verdicts and True in verdicts  # both outcomes happen at this eps
    for i, (v, ce) in enumerate(zip(verdicts, examples, strict=True)):
        assert v is not None
        if v is False:
            assert ce is not None
            assert float((ce - x[i]).abs().max()) <= eps + 1e-9
            assert float(ce.min()) >= 0 and float(ce.max()) <= 1
            logits = forward(ops, ce[None])[0]
            assert bool((logits > logits[int(y[i])]).any())
        else:
            assert float(attacked[i]) > 0  # certified: no attack fools it


def test_every_correct_sample_certifies_as_eps_goes_to_zero() -> None:
    ops = _mlp_ops([6, 16, 16, 4], seed=2, scale=2.0)
    x = torch.rand(10, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = forward(ops, x).argmax(1)
    verdicts, _ = exact_verdicts(ops, x, y, 1e-7, "linf", time_limit_s=10)
    assert verdicts == [True] * 10


def test_exact_refuses_l2() -> None:
    ops = _mlp_ops([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match="linf"):
        exact_verdicts(ops, torch.rand(1, 3, dtype=torch.float64), torch.tensor([0]), 0.1, "l2")


def test_a_time_limit_too_short_gives_unknown() -> None:
    ops = _mlp_ops([20, 80, 80, 10], seed=11, scale=1.5)
    x = torch.rand(6, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    y, eps = forward(ops, x).argmax(1), 0.05
    short, _ = exact_verdicts(ops, x, y, eps, "linf", time_limit_s=0.02)
    full, _ = exact_verdicts(ops, x, y, eps, "linf", time_limit_s=30)
    crown = margin_lower_bounds(ops, InputSet(x, eps, "linf"), y, "crown", 10)[0].min(1).values
    hard = [i for i in range(6) if full[i] is True and float(crown[i]) <= 0]  # needed a real search
    assert hard
    assert all(short[i] is None for i in hard)


def _tiny_cnn(seed: int) -> list[Op]:
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=gen)
    w2 = torch.randn(3, 36, dtype=torch.float64, generator=gen) * 0.5
    return [
        Conv(w1, torch.zeros(4, dtype=torch.float64), (1, 1), (1, 1), (1, 1), 1, (1, 6, 6)),
        ReLU(),
        MaxPool((2, 2)),
        Reshape((4, 3, 3), (36,)),
        Linear(w2, torch.randn(3, dtype=torch.float64, generator=gen)),
    ]


def test_onepixel_exact_equals_a_brute_force_sweep() -> None:
    ops = _tiny_cnn(0)
    x = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x64 = x.double() / 255
    y = forward(ops, x64).argmax(1)
    y[0] = (y[0] + 1) % 3  # one sample misclassified from the start
    result = onepixel_exact(ops, x, y)
    brute = []
    levels = torch.arange(256, dtype=torch.float64) / 255
    for i in range(10):
        imgs = x64[i].reshape(1, 36).repeat(36 * 256, 1)
        imgs[torch.arange(36 * 256), torch.arange(36).repeat_interleave(256)] = levels.repeat(36)
        logits = forward(ops, imgs.reshape(-1, 1, 6, 6))
        brute.append(not bool((logits > logits[:, int(y[i]) : int(y[i]) + 1]).any()))
    assert result.verdicts == brute
    assert True in brute and brute.count(False) >= 2
    assert 0 < result.skipped_fraction < 1
    for i, ce in enumerate(result.counterexamples):
        if ce is not None:
            assert int((ce != x64[i]).sum()) <= 1
            assert bool(((ce * 255).round() == ce * 255).all())  # on the 8-bit grid
            logits = forward(ops, ce[None])[0]
            assert bool((logits > logits[int(y[i])]).any())


def _sample_mlp() -> tuple[torch.nn.Module, list[Op]]:
    model = torch.jit.load(str(SAMPLES / "mnist_mlp_adv.pt")).eval()
    state = model.state_dict()
    ops: list[Op] = [Reshape((1, 28, 28), (784,))]
    for k, name in enumerate(["1", "3", "5"]):
        ops.append(Linear(state[f"{name}.weight"].double(), state[f"{name}.bias"].double()))
        if k < 2:
            ops.append(ReLU())
    return model, ops


def test_exact_on_the_sample_mlp_matches_its_model_and_brackets() -> None:
    model, ops = _sample_mlp()
    hold = np.load(SAMPLES / "mnist_holdout.npz")
    x = torch.from_numpy(hold["x"][:3]).double().unsqueeze(1) / 255  # image 0 needs the program at 0.1
    y = torch.from_numpy(hold["y"][:3])
    with torch.no_grad():
        assert torch.allclose(model(x.float()).double(), forward(ops, x), atol=1e-4)
    eps = 0.1
    verdicts, examples = exact_verdicts(ops, x, y, eps, "linf", time_limit_s=20)
    crown = margin_lower_bounds(ops, InputSet(x, eps, "linf"), y, "crown", 10)[0].min(1).values
    attacked = _attacked_margins(ops, x.flatten(1), y, eps)
    for i, v in enumerate(verdicts):
        if float(crown[i]) > 0:
            assert v is True  # CROWN certified: exact agrees
        if v is True:
            assert float(attacked[i]) > 0
        if v is False:
            ce = examples[i]
            assert ce is not None and float((ce - x[i]).abs().max()) <= eps + 1e-9
            with torch.no_grad():
                assert int(model(ce[None].float()).argmax()) != int(y[i])
