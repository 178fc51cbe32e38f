"""The Square attack: its threat models, per-sample seeds, masked gradients, and torchattacks' Square."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.attacks.pgd import PGD
from robaudit.attacks.rng import sample_seeds
from robaudit.attacks.square import Square
from robaudit.audit.verification import verify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = torch.jit.load(str(ROOT / "sample_models" / "mnist_cnn.pt")).eval()
    data = np.load(ROOT / "sample_models" / "mnist_holdout.npz")
    x = torch.from_numpy(data["x"][:40, None].astype(np.float32) / 255)
    y = torch.from_numpy(data["y"][:40])
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return model, x[keep], y[keep]


def _seeds(n: int) -> torch.Tensor:
    return torch.from_numpy(sample_seeds(0, np.arange(n)))


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.2)])
def test_square_stays_inside_and_fools(
    lenet: tuple[nn.Module, torch.Tensor, torch.Tensor], norm: str, eps: float
) -> None:
    model, x, y = lenet
    x_adv = Square(queries=300)(model, x, y, eps=eps, norm=norm, seeds=_seeds(len(y)))
    verify(x_adv, x, eps, norm, "square")  # raises outside the ball or the box
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert int(fooled.sum()) >= len(y) // 4


def test_square_seeded_and_batch_independent(lenet: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = lenet
    attack = Square(queries=100)
    seeds = _seeds(len(y))
    whole = attack(model, x, y, eps=0.15, norm="linf", seeds=seeds)
    again = attack(model, x, y, eps=0.15, norm="linf", seeds=seeds)
    half = attack(model, x[5:], y[5:], eps=0.15, norm="linf", seeds=seeds[5:])
    assert torch.equal(whole, again)
    assert torch.equal(whole[5:], half)
    other = attack(model, x, y, eps=0.15, norm="linf", seeds=seeds + 1)
    assert not torch.equal(whole, other)


class Saturated(nn.Module):
    """Logits scaled by 1e4, then log-softmax rounded: the gradient is zero almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.log_softmax(self.inner(x) * 1e4, 1)
        return z + (z.round() - z).detach()  # rounded values, with a straight-through of nothing useful


def test_square_beats_pgd_on_masked_gradients(lenet: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = lenet
    masked = Saturated(model)
    seeds = _seeds(len(y))
    pgd = PGD(steps=10)(masked, x, y, eps=0.2, norm="linf", seeds=seeds)
    sq = Square(queries=300)(masked, x, y, eps=0.2, norm="linf", seeds=seeds)
    verify(sq, x, 0.2, "linf", "square")
    with torch.no_grad():
        fooled_pgd = int((masked(pgd).argmax(1) != y).sum())
        fooled_sq = int((masked(sq).argmax(1) != y).sum())
    assert fooled_sq > fooled_pgd


def test_linf_step_rewrites_one_window_with_a_sign_that_changes_it() -> None:
    """The proposal touches one s x s window per sample, sets it to x ± eps (one sign per channel,
    clipped to the box), and skips a sign draw that would leave the window as it is."""
    gen = torch.Generator().manual_seed(3)
    n, c, h, w, eps = 64, 3, 12, 12, 0.1
    x = torch.rand(n, c, h, w, generator=gen)
    x[: n // 2] = 0.0  # at the box's corner: "minus eps" leaves these pixels where they are
    best = (x + eps * torch.where(torch.rand(x.shape, generator=gen) < 0.5, -1.0, 1.0)).clamp(0, 1)
    best[: n // 2] = 0.0  # ... and the current best is that corner, so only "plus" changes the window
    u = torch.rand(n, 5 + 8 * c, generator=gen)
    p = 0.1
    side = round((p * h * w) ** 0.5)
    cand = Square._linf_step(x, best, u, p, eps)
    for i in range(n):
        changed = (cand[i] != best[i]).any(0).nonzero()
        rows, cols = changed[:, 0], changed[:, 1]
        assert len(changed) > 0
        assert int(rows.max() - rows.min()) < side and int(cols.max() - cols.min()) < side
        top, left = int(rows.min()), int(cols.min())
        window = (slice(None), slice(top, top + side), slice(left, left + side))
        # Inside the window every channel is x + s*eps for a single sign s, clipped to the box.
        plus = (x[i] + eps).clamp(0, 1)[window]
        minus = (x[i] - eps).clamp(0, 1)[window]
        got = cand[i][window]
        per_channel = [torch.equal(got[k], plus[k]) or torch.equal(got[k], minus[k]) for k in range(c)]
        assert all(per_channel)
        if i < n // 2:  # at the corner, a draw with "plus" on some channel was taken
            assert bool((got == plus).flatten(1).all(1).any()) and not torch.equal(got, best[i][window])
