"""CROWN's intermediate bounds as computed for speed (only the elements that need one, the first
linear op's transpose read off its weights, samples grouped by count) against the plain algorithm:
every element of every later layer bounded by a backward pass from its unit vector. Same margins, and
sound against dense sampling, on a small CNN with max pools and a small MLP. α-CROWN: sound, never
below CROWN."""

from __future__ import annotations

import math

import pytest
import torch

from robaudit.certify.alpha import alpha_margin_lower_bounds
from robaudit.certify.bounds import (
    Bounds,
    InputSet,
    backward_bound,
    crown_pre_bounds,
    margin_lower_bounds,
    margin_specs,
)
from robaudit.certify.milp import forward
from robaudit.certify.ops import LINEAR_OPS, ChannelAffine, Conv, Linear, MaxPool, Op, ReLU, Reshape

CLASSES = 3


def _cnn(seed: int) -> list[Op]:
    torch.manual_seed(seed)
    c1, c2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 6, 3)
    f1, f2 = torch.nn.Linear(6, 8), torch.nn.Linear(8, CLASSES)

    def conv(m: torch.nn.Conv2d, shape: tuple[int, int, int]) -> Conv:
        w, b = m.weight.detach().double(), m.bias.detach().double()
        return Conv(w, b, m.stride, m.padding, m.dilation, m.groups, shape)  # type: ignore[arg-type]

    return [  # a batch norm (folded) before the second ReLU: its unit vectors go through ``back``
        conv(c1, (1, 8, 8)), ReLU(), MaxPool((2, 2)),
        conv(c2, (4, 4, 4)), ChannelAffine(torch.rand(6).double() + 0.5, torch.randn(6).double(), 3),
        ReLU(), MaxPool((2, 2)),
        Reshape((6, 1, 1), (6,)),
        Linear(f1.weight.detach().double(), f1.bias.detach().double()), ReLU(),
        Linear(f2.weight.detach().double(), f2.bias.detach().double()),
    ]  # fmt: skip


def _mlp(seed: int) -> list[Op]:
    torch.manual_seed(seed)
    sizes = [(64, 24), (24, 24), (24, CLASSES)]
    ops: list[Op] = [Reshape((1, 8, 8), (64,))]
    for i, (a, b) in enumerate(sizes):
        layer = torch.nn.Linear(a, b)
        ops.append(Linear(layer.weight.detach().double(), layer.bias.detach().double()))
        if i < len(sizes) - 1:
            ops.append(ReLU())
    return ops


def _plain_pre_bounds(ops: list[Op], inputs: InputSet) -> list[Bounds | None]:
    """Every element of every nonlinear op's input after the first, by its own backward pass."""
    pre: list[Bounds | None] = [None] * len(ops)
    lo, hi = inputs.box
    first = True
    for i, op in enumerate(ops):
        if isinstance(op, LINEAR_OPS):
            lo, hi = op.ibp(lo, hi)
            continue
        if not first:
            n, shape = lo.shape[0], lo.shape[1:]
            eye = torch.eye(math.prod(shape), dtype=torch.float64).view(-1, *shape)
            lam = torch.cat([eye, -eye]).unsqueeze(0).expand(n, *(-1,) * eye.ndim)
            bound = backward_bound(ops, i, lam, pre, inputs)
            lo = torch.maximum(lo, bound[:, : len(eye)].view_as(lo))
            hi = torch.minimum(hi, -bound[:, len(eye) :].view_as(hi))
        first = False
        pre[i] = (lo, hi)
        lo, hi = op.ibp(lo, hi)
    return pre


def _sampled_min_margin(ops: list[Op], x0: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The smallest logit_y - logit_j seen over 3000 random corners and points of the L∞ ball ∩ box."""
    gen = torch.Generator().manual_seed(2)
    d = torch.randn(3000, *x0.shape, dtype=torch.float64, generator=gen).sign() * eps
    d[1500:] *= torch.rand(d[1500:].shape, dtype=torch.float64, generator=gen)
    logits = forward(ops, (x0 + d).clamp(0, 1).flatten(0, 1)).view(3000, len(y), CLASSES)
    margins = logits.gather(2, y.expand(3000, -1)[..., None]) - logits
    best = margins.amin(0)
    best[torch.arange(len(y)), y] = math.inf
    return best.amin(1)


@pytest.mark.parametrize("build", [_cnn, _mlp])
@pytest.mark.parametrize("seed", range(3))
def test_fast_intermediate_bounds_give_the_plain_margins_and_stay_sound(build, seed: int) -> None:
    ops = build(seed)
    x0 = torch.rand(12, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    y = forward(ops, x0).argmax(1)
    eps = 0.08
    inputs = InputSet(x0, eps, "linf")
    fast = crown_pre_bounds(ops, inputs, "crown", crown_max=10**6)
    plain = _plain_pre_bounds(ops, inputs)
    specs = margin_specs(y, CLASSES, torch.float64)
    fast_margin = backward_bound(ops, len(ops), specs, fast, inputs)
    plain_margin = backward_bound(ops, len(ops), specs, plain, inputs)
    torch.testing.assert_close(fast_margin, plain_margin, rtol=0, atol=1e-9)
    tightened = 0
    for i, op in enumerate(ops):  # the ReLUs' unstable elements carry the same bounds
        if isinstance(op, ReLU) and i > 1:
            (flo, fhi), (plo, phi) = fast[i], plain[i]  # type: ignore[misc]
            open_ = (plo < 0) & (phi > 0)
            tightened += int(open_.sum())
            torch.testing.assert_close(flo[open_], plo[open_], rtol=0, atol=1e-9)
            torch.testing.assert_close(fhi[open_], phi[open_], rtol=0, atol=1e-9)
            assert bool((flo <= plo + 1e-9).all() & (fhi >= phi - 1e-9).all())  # and no tighter
    seen = _sampled_min_margin(ops, x0, y, eps)
    assert bool((fast_margin.amin(1) <= seen + 1e-9).all())
    assert tightened > 0  # later ReLUs have unstable units: CROWN did work


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "pad", "dil", "groups", "side"),
    [(1, 4, 3, 1, 1, 1, 1, 8), (4, 6, 3, 2, 1, 1, 2, 9), (2, 3, 3, 1, 2, 2, 1, 7), (2, 4, 2, 2, 0, 1, 1, 7)],
)
def test_conv_rows_are_the_transpose_of_unit_vectors(cin, cout, k, stride, pad, dil, groups, side) -> None:
    gen = torch.Generator().manual_seed(cin + cout + k)
    w = torch.randn(cout, cin // groups, k, k, dtype=torch.float64, generator=gen)
    b = torch.randn(cout, dtype=torch.float64, generator=gen)
    conv = Conv(w, b, (stride, stride), (pad, pad), (dil, dil), groups, (cin, side, side))
    out_shape = conv.forward(torch.zeros(1, cin, side, side, dtype=torch.float64)).shape[1:]
    idx = torch.randint(0, math.prod(out_shape), (3, 7), generator=gen)
    eye = torch.eye(math.prod(out_shape), dtype=torch.float64)
    want, want_bias = conv.back(eye[idx].view(3, 7, *out_shape))
    got, got_bias = conv.rows(idx)
    assert torch.equal(got, want) and torch.equal(got_bias, want_bias)
    lin = Linear(torch.randn(5, 4, dtype=torch.float64, generator=gen), torch.randn(5, dtype=torch.float64))
    rows, bias = lin.rows(torch.tensor([[0, 3], [4, 4]]))
    want, want_bias = lin.back(torch.eye(5, dtype=torch.float64)[torch.tensor([[0, 3], [4, 4]])])
    assert torch.equal(rows, want) and torch.equal(bias, want_bias)


@pytest.mark.parametrize("build", [_cnn, _mlp])
def test_alpha_crown_is_sound_and_never_below_crown(build) -> None:
    ops = build(5)
    x0 = torch.rand(10, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = forward(ops, x0).argmax(1)
    inputs = InputSet(x0, 0.08, "linf")
    crown, _ = margin_lower_bounds(ops, inputs, y, "crown", CLASSES)
    alpha = alpha_margin_lower_bounds(ops, inputs, y, CLASSES, steps=8)
    assert bool((alpha >= crown).all())
    assert bool((alpha > crown + 1e-6).any())  # the optimised slopes improve some spec
    assert bool((alpha.amin(1) <= _sampled_min_margin(ops, x0, y, 0.08) + 1e-9).all())
