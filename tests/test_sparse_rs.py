"""Sparse-RS: the L0 budget, seeds and batching, an exact oracle, one-pixel at fewer queries, and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.api import run_audit
from robaudit.attacks.norms import lp_norm
from robaudit.attacks.onepixel import OnePixel
from robaudit.attacks.sparse_rs import SparseRS, alpha_schedule
from robaudit.audit.verification import verify
from robaudit.config import AuditConfig
from tests.conftest import unconvertible_model
from tests.test_onepixel import PixelVote, seeds_for


def tiny(seed: int) -> nn.Module:
    """A random 3-class CNN on 1x8x8 images: fast enough for random searches of a few hundred queries."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


class Counted:
    """A model function that counts the images it is asked about."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.queries = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        with torch.no_grad():
            return self.model(x)


@pytest.mark.parametrize(("pixels", "channels"), [(1, 1), (3, 3), (7, 1)])
def test_changes_at_most_k_pixel_locations_and_stays_in_the_box(pixels: int, channels: int) -> None:
    model = tiny(2) if channels == 1 else PixelVote(classes=3)
    x = torch.rand(6, channels, 8, 8, generator=torch.Generator().manual_seed(pixels))
    with torch.no_grad():
        y = model(x).argmax(1)
    x_adv = SparseRS(pixels=pixels, queries=40)(model, x, y, eps=pixels, norm="l0", seeds=seeds_for(6))
    verify(x_adv, x, float(pixels), "l0", "sparse-rs")
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    assert int(lp_norm(x_adv - x, "l0").max()) <= pixels


def test_seeded_and_independent_of_the_batch() -> None:
    model = tiny(1)
    x = torch.rand(9, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = SparseRS(pixels=3, queries=30)
    seeds = seeds_for(9, 11)
    whole = attack(model, x, y, eps=3, norm="l0", seeds=seeds)
    parts = torch.cat(
        [
            attack(model, x[i : i + 4], y[i : i + 4], eps=3, norm="l0", seeds=seeds[i : i + 4])
            for i in (0, 4, 8)
        ]
    )
    assert torch.equal(whole, parts)
    assert torch.equal(whole, attack(model, x, y, eps=3, norm="l0", seeds=seeds))
    assert not torch.equal(whole, attack(model, x, y, eps=3, norm="l0", seeds=seeds + 1))


def test_finds_the_deciding_pixel_and_the_target() -> None:
    """PixelVote's class k wins only when pixel (k, k) of channel 0 is bright: an exact oracle."""
    x = torch.zeros(10, 1, 8, 8)
    y = torch.zeros(10, dtype=torch.long)
    targets = torch.tensor([1, 2, 3] * 3 + [2])
    model = PixelVote(classes=4)
    x_adv = SparseRS(queries=600)(model, x, y, eps=1, norm="l0", seeds=seeds_for(10), targets=targets)
    assert torch.equal(model(x_adv).argmax(1), targets)
    for i, t in enumerate(targets.tolist()):
        assert bool(x_adv[i, 0, t, t] == 1.0) and int((x_adv[i] != x[i]).sum()) == 1


def test_the_schedule_shrinks_the_resampled_fraction() -> None:
    fractions = [alpha_schedule(0.3, i, 1000) for i in range(1000)]
    assert fractions[0] == 0.3 and fractions[-1] == pytest.approx(0.3 / 20)
    assert all(a >= b for a, b in zip(fractions, fractions[1:], strict=False))


def test_fools_as_many_as_one_pixel_with_under_a_quarter_of_its_queries() -> None:
    """On random 8x8 images of a random CNN (4 such models tried: equal counts on 3, 19 against 21 on one)."""
    model = tiny(1)
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    de, rs = Counted(model), Counted(model)
    x_de = OnePixel(population=20, generations=10)(de, x, y, eps=1, norm="l0", seeds=seeds_for(24))
    x_rs = SparseRS(pixels=1, queries=50)(rs, x, y, eps=1, norm="l0", seeds=seeds_for(24))
    with torch.no_grad():
        fooled_de = int((model(x_de).argmax(1) != y).sum())
        fooled_rs = int((model(x_rs).argmax(1) != y).sum())
    assert fooled_de > 0
    assert fooled_rs >= fooled_de
    assert 4 * rs.queries <= de.queries


def test_square_and_sparse_rs_run_on_onnx_runtime_without_conversion(tmp_path: Path) -> None:
    """The QuickGelu graph, which no converter handles, classifies by its brightest pixel."""
    model = unconvertible_model(tmp_path / "quickgelu.onnx")
    g = np.random.default_rng(0)
    x = (g.random((30, 1, 4, 4)) * 0.8).astype(np.float32)
    data = tmp_path / "bright.npz"
    np.savez(data, x=x, y=x.reshape(30, 16).argmax(1))
    result = run_audit(
        AuditConfig(
            model=model,
            data=str(data),
            attacks=("square", "sparse-rs"),
            norms=("linf", "l2"),
            eps=(0.3,),
            queries=100,
        )
    )
    assert result.model.gradients is False  # nothing was converted: both queried ONNX Runtime
    rows = {(r.attack, r.norm): r for r in result.rows}
    assert set(rows) >= {("square", "linf"), ("square", "l2"), ("sparse-rs", "l0")}
    for key in (("square", "linf"), ("square", "l2"), ("sparse-rs", "l0")):
        assert rows[key].error is None  # the runner verified every candidate inside its threat model
        assert rows[key].n_robust < rows[key].n_clean_correct
    assert rows["sparse-rs", "l0"].n_robust == 0  # one bright pixel flips every sample
