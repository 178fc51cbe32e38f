"""APGD and APGD-T: their threat models, per-sample seeds, strength against PGD, and targets capped by classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.attacks.apgd import APGD, APGDT
from robaudit.attacks.pgd import PGD
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.verification import verify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = torch.jit.load(str(ROOT / "sample_models" / "mnist_cnn.pt")).eval()
    data = np.load(ROOT / "sample_models" / "mnist_holdout.npz")
    x = torch.from_numpy(data["x"][:48, None].astype(np.float32) / 255)
    y = torch.from_numpy(data["y"][:48])
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return model, x[keep], y[keep]


def _seeds(n: int) -> torch.Tensor:
    return torch.from_numpy(sample_seeds(0, np.arange(n)))


def _fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(1) != y).sum())


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.5), ("l1", 10.0)])
def test_apgd_stays_inside_and_fools_as_many_as_pgd(
    lenet: tuple[nn.Module, torch.Tensor, torch.Tensor], norm: str, eps: float
) -> None:
    model, x, y = lenet
    seeds = _seeds(len(x))
    x_apgd = APGD(steps=20)(model, x, y, eps=eps, norm=norm, seeds=seeds)
    verify(x_apgd, x, eps, norm, "apgd-ce")  # raises when a candidate leaves the ball or the box
    x_pgd = PGD(steps=20)(model, x, y, eps=eps, norm=norm, seeds=seeds)
    fooled_apgd, fooled_pgd = _fooled(model, x_apgd, y), _fooled(model, x_pgd, y)
    assert fooled_apgd > 0
    # Equal iterations; APGD's schedule should not lose to PGD's fixed step by more than one sample.
    assert fooled_apgd >= fooled_pgd - 1, (fooled_apgd, fooled_pgd)


def test_apgd_seeded_and_batch_independent(lenet: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = lenet
    attack = APGD(steps=10, early_stop=False)
    seeds = _seeds(len(x))
    whole = attack(model, x, y, eps=0.1, norm="linf", seeds=seeds)
    again = attack(model, x, y, eps=0.1, norm="linf", seeds=seeds)
    part = attack(model, x[:7], y[:7], eps=0.1, norm="linf", seeds=seeds[:7])
    assert torch.equal(whole, again)
    assert torch.allclose(whole[:7], part, atol=1e-6)


def test_apgd_t_fools_and_caps_targets_at_the_classes_there_are(
    lenet: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    full, x, y = lenet

    def four_classes(inputs: torch.Tensor) -> torch.Tensor:  # LeNet's logits of the digits 0-3 only
        return full(inputs)[:, :4]

    with torch.no_grad():
        keep = (y < 4) & (four_classes(x).argmax(1) == y)
    x, y = x[keep], y[keep]
    assert len(x) >= 5
    # Nine targets asked for, three other classes exist: it must cap them (no index error), stay inside
    # the threat model and fool some of the samples.
    x_adv = APGDT(steps=10, n_targets=9)(four_classes, x, y, eps=0.2, norm="linf", seeds=_seeds(len(x)))
    verify(x_adv, x, 0.2, "linf", "apgd-t")
    with torch.no_grad():
        assert int((four_classes(x_adv).argmax(1) != y).sum()) > 0
