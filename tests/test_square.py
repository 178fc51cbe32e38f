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
