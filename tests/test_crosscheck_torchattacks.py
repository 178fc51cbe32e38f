"""Cross-checks against torchattacks (Harry Kim's PyTorch ports of APGD and Square) on the sample LeNet.

Each tool is seeded, so both counts are fixed; the check is that robaudit's APGD and Square are the same
attacks as the reference ports, not stronger or weaker by more than noise. On 100 images one point is
one sample. The tolerance of one point is the seed-to-seed spread measured for each tool on these
images (APGD-10 at L∞ 0.1: 75-76 robust of 100 over three seeds for either tool; Square-100: 95 and 96),
so a real difference in the attack (a wrong step schedule, a wrong window size) shows as more than one.
torchattacks is a test dependency only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from torch import nn

from robaudit.attacks.apgd import APGD
from robaudit.attacks.rng import sample_seeds
from robaudit.attacks.square import Square
from robaudit.audit.verification import verify
from sample_models.lenet import LeNet
from tests.conftest import HOLDOUT, SAMPLES

EPS = 0.1


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = LeNet()
    model.load_state_dict(torch.load(SAMPLES / "mnist_cnn_state.pt", weights_only=True))
    model.eval().requires_grad_(False)
    with np.load(HOLDOUT) as data:
        x = torch.from_numpy(data["x"][:100, None].astype(np.float32) / 255)
        y = torch.from_numpy(data["y"][:100].astype(np.int64))
    return model, x, y


def robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum())


def seeds(n: int) -> torch.Tensor:
    return torch.from_numpy(sample_seeds(0, np.arange(n)))


def test_apgd_matches_torchattacks(lenet: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = lenet
    ours = APGD(steps=10, loss="ce")(model, x, y, eps=EPS, norm="linf", seeds=seeds(len(x)))
    verify(ours, x, EPS, "linf", "apgd-ce")  # inside the ball and the box, or it raises
    theirs = torchattacks.APGD(model, eps=EPS, steps=10, loss="ce", n_restarts=1, seed=0)(x, y)
    r_ours, r_theirs = robust(model, ours, y), robust(model, theirs, y)
    assert r_ours < robust(model, x, y)  # it attacked
    assert abs(r_ours - r_theirs) <= 1, (r_ours, r_theirs)


def test_square_matches_torchattacks(lenet: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = lenet
    ours = Square(queries=100)(model, x, y, eps=EPS, norm="linf", seeds=seeds(len(x)))
    verify(ours, x, EPS, "linf", "square")
    theirs = torchattacks.Square(model, eps=EPS, n_queries=100, n_restarts=1, seed=0)(x, y)
    r_ours, r_theirs = robust(model, ours, y), robust(model, theirs, y)
    assert r_ours < robust(model, x, y)
    assert abs(r_ours - r_theirs) <= 1, (r_ours, r_theirs)
