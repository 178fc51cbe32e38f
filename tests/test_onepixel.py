"""The one-pixel attack: exact oracles, the L0 budget, determinism, targeting, and ONNX Runtime use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robaudit.api import run_audit
from robaudit.attacks.norms import lp_norm
from robaudit.attacks.onepixel import OnePixel
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.verification import verify
from robaudit.config import AuditConfig
from robaudit.errors import VerificationError
from tests.conftest import small_cnn, unconvertible_model


class PixelVote(nn.Module):
    """Class k > 0 wins when pixel (k, k) of channel 0 is bright; class 0 otherwise.

    On a black image exactly one pixel location decides each class, so a one-pixel attack that
    works must find that location: an exact oracle for the search.
    """

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = [torch.zeros(x.shape[0], device=x.device)]
        for k in range(1, self.classes):
            scores.append(10.0 * (x[:, 0, k, k] - 0.5))
        return torch.stack(scores, 1)


def seeds_for(n: int, run_seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(sample_seeds(run_seed, np.arange(n)))


def test_untargeted_finds_the_one_deciding_pixel() -> None:
    x = torch.zeros(12, 3, 8, 8)
    y = torch.zeros(12, dtype=torch.long)
    model = PixelVote(classes=2)
    x_adv = OnePixel(population=40, generations=30)(model, x, y, eps=1, norm="l0", seeds=seeds_for(12))
    changed = (x_adv != x).any(1)
    assert bool((model(x_adv).argmax(1) == 1).all())
    assert bool(changed[:, 1, 1].all()) and int(changed.sum()) == 12  # exactly pixel (1, 1), once each
    assert bool((x_adv[:, 0, 1, 1] > 0.5).all())


def test_targeted_reaches_the_requested_class() -> None:
    x = torch.zeros(10, 1, 8, 8)
    y = torch.zeros(10, dtype=torch.long)
    targets = torch.tensor([1, 2, 3] * 3 + [2])
    model = PixelVote(classes=4)
    x_adv = OnePixel(population=60, generations=40)(
        model, x, y, eps=1, norm="l0", seeds=seeds_for(10), targets=targets
    )
    assert torch.equal(model(x_adv).argmax(1), targets)
    for i, t in enumerate(targets.tolist()):
        assert bool(x_adv[i, 0, t, t] > 0.5) and int((x_adv[i] != x[i]).sum()) == 1


def test_two_pixels_are_needed_and_found_with_k_equal_two() -> None:
    class BothPixels(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            both = x[:, 0, 1, 1] + x[:, 0, 5, 6]  # one pixel at most reaches 1.0 < 1.5
            return torch.stack([torch.zeros_like(both), 10.0 * (both - 1.5)], 1)

    x = torch.zeros(6, 1, 8, 8)
    y = torch.zeros(6, dtype=torch.long)
    one = OnePixel(pixels=1, population=50, generations=20)(
        BothPixels(), x, y, eps=1, norm="l0", seeds=seeds_for(6)
    )
    two = OnePixel(pixels=2, population=100, generations=80)(
        BothPixels(), x, y, eps=2, norm="l0", seeds=seeds_for(6)
    )
    assert bool((BothPixels()(one).argmax(1) == 0).all())  # impossible with one pixel
    assert bool((BothPixels()(two).argmax(1) == 1).all())


@settings(max_examples=12, deadline=None)
@given(pixels=st.integers(1, 4), seed=st.integers(0, 2**31), channels=st.sampled_from([1, 3]))
def test_changes_at_most_k_pixel_locations_and_stays_in_bounds(pixels: int, seed: int, channels: int) -> None:
    model = small_cnn(seed % 7).eval() if channels == 1 else PixelVote(classes=3)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, channels, 28 if channels == 1 else 8, 28 if channels == 1 else 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    x_adv = OnePixel(pixels=pixels, population=8, generations=3)(
        model, x, y, eps=pixels, norm="l0", seeds=seeds_for(5, seed)
    )
    verify(x_adv, x, float(pixels), "l0", "onepixel")
    assert int(lp_norm(x_adv - x, "l0").max()) <= pixels
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())


def test_verify_counts_pixel_locations_not_channels() -> None:
    x = torch.zeros(1, 3, 4, 4)
    one_pixel_all_channels = x.clone()
    one_pixel_all_channels[0, :, 2, 2] = 1.0
    verify(one_pixel_all_channels, x, 1.0, "l0", "onepixel")
    two_pixels = one_pixel_all_channels.clone()
    two_pixels[0, 0, 0, 0] = 1.0
    with pytest.raises(VerificationError, match="exceeded eps"):
        verify(two_pixels, x, 1.0, "l0", "onepixel")


def test_results_do_not_depend_on_batching() -> None:
    model = small_cnn(1).eval()
    x = torch.rand(9, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = OnePixel(pixels=2, population=16, generations=6)
    seeds = seeds_for(9, 11)
    whole = attack(model, x, y, eps=2, norm="l0", seeds=seeds)
    parts = torch.cat(
        [
            attack(model, x[i : i + 4], y[i : i + 4], eps=2, norm="l0", seeds=seeds[i : i + 4])
            for i in (0, 4, 8)
        ]
    )
    small_passes = OnePixel(pixels=2, population=16, generations=6, images_per_pass=5)
    assert torch.equal(whole, parts)
    assert torch.equal(whole, small_passes(model, x, y, eps=2, norm="l0", seeds=seeds))


def test_early_stop_evaluates_fewer_candidates_once_samples_fall() -> None:
    calls: list[int] = []
    model = PixelVote(classes=2)

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return model(x)

    x = torch.zeros(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    OnePixel(population=64, generations=50)(counting, x, y, eps=1, norm="l0", seeds=seeds_for(4))
    assert sum(calls) < 64 * 4 * 51 / 2  # broken samples stop costing forward passes


def test_runs_on_onnx_runtime_when_no_converter_handles_the_graph(tmp_path: Path) -> None:
    """The QuickGelu graph classifies by its brightest pixel: one bright pixel elsewhere flips it."""
    model = unconvertible_model(tmp_path / "quickgelu.onnx")
    g = np.random.default_rng(0)
    x = (g.random((40, 1, 4, 4)) * 0.8).astype(np.float32)
    y = x.reshape(40, 16).argmax(1)
    data = tmp_path / "bright.npz"
    np.savez(data, x=x, y=y)
    result = run_audit(
        AuditConfig(model=model, data=str(data), attacks=("fgsm", "onepixel"), population=20, generations=10)
    )
    assert result.model.gradients is False
    assert result.clean_accuracy == 1.0
    assert [(r.attack, r.norm, r.eps) for r in result.rows] == [
        ("onepixel", "l0", 1.0),
        ("worst-case", "l0", 1.0),
    ]
    assert result.rows[0].n_robust == 0  # every sample falls to one bright pixel
    assert any("fgsm" in note and "cannot run" in note for note in result.notes)
