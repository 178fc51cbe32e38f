"""FGM and PGD under L1 respect the [0, 1] box: eps changes the result, and a note says when the box binds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.api import run_audit
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.norms import lp_norm
from robaudit.attacks.pgd import PGD
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.verification import verify
from robaudit.config import AuditConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = torch.jit.load(str(ROOT / "sample_models" / "mnist_cnn.pt")).eval()
    with np.load(ROOT / "sample_models" / "mnist_holdout.npz") as data:
        x = torch.from_numpy(data["x"][:40, None].astype(np.float32) / 255)
        y = torch.from_numpy(data["y"][:40].astype(np.int64))
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return model, x[keep], y[keep], torch.from_numpy(sample_seeds(0, np.arange(int(keep.sum()))))


def _fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(1) != y).sum())


def test_fgm_l1_spends_eps_inside_the_box_so_eps_changes_the_result(
    lenet: tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """The plain L1 step put all of eps on one pixel and the box clipped it: eps 1, 2 and 10 gave one point."""
    model, x, y, seeds = lenet
    points = {eps: FGSM()(model, x, y, eps=eps, norm="l1", seeds=seeds) for eps in (1.0, 2.0, 10.0)}
    for eps, x_adv in points.items():
        verify(x_adv, x, eps, "l1", "fgsm")  # inside the L1 ball
        assert bool((x_adv >= 0).all() and (x_adv <= 1).all())  # and the box
        assert float(lp_norm(x_adv - x, "l1").min()) >= 0.999 * eps  # the whole budget is spent
    assert not torch.equal(points[1.0], points[2.0]) and not torch.equal(points[2.0], points[10.0])
    assert _fooled(model, points[10.0], y) > _fooled(model, points[1.0], y)


def test_pgd_l1_projects_onto_ball_and_box_and_spends_its_budget(
    lenet: tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """Projecting onto the ball and then clipping sheds mass at every step (robust samples ended near
    4.97 of eps 5); the projection onto the intersection keeps the whole budget in play."""
    model, x, y, seeds = lenet
    x, y, seeds = x[:12], y[:12], seeds[:12]
    x_adv = PGD(steps=5)(model, x, y, eps=5.0, norm="l1", seeds=seeds)
    verify(x_adv, x, 5.0, "l1", "pgd")
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    with torch.no_grad():
        robust = model(x_adv).argmax(1) == y
    assert int(robust.sum()) > 0
    assert float(lp_norm(x_adv - x, "l1")[robust].min()) >= 0.999 * 5.0


class Bright(nn.Module):
    """Class 1 by a margin no change of a 4x4 image can undo; the loss still pulls every pixel down."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        return torch.stack([torch.zeros_like(mean), 10.0 * (mean + 0.5)], 1)


def test_a_note_says_when_the_box_not_eps_binds(tmp_path: Path) -> None:
    """16 pixels at 0.9 can move by 14.4 in all: at eps 100 the box holds FGM back, at eps 10 eps does."""
    data = tmp_path / "bright.npz"
    np.savez(data, x=np.full((6, 1, 4, 4), 0.9, np.float32), y=np.ones(6, np.int64))
    result = run_audit(
        AuditConfig(
            model=Path("in-memory"), data=str(data), attacks=("fgsm",), norms=("l1",), eps=(10.0, 100.0)
        ),
        module=Bright(),
    )
    box = [note for note in result.notes if "box, not eps" in note]
    assert len(box) == 1 and box[0].startswith("l1 eps=100: for 6 of the 6 samples fgsm left robust")
