"""The one-pixel threat model (l0, 1 pixel) certified in scans: bounds, then the exact 8-bit sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robaudit.api import run_audit
from robaudit.config import AuditConfig
from robaudit.results import AuditResult


def _cnn() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()


def _bump(centre: float, half_width: float) -> nn.Module:
    """Class 1 wins only while pixel (0, 0) lies within ``half_width`` of ``centre``; class 0 otherwise.
    A triangle of ReLUs: relu(1 - |v - c| / w), against class 0's constant 0.5."""
    first = nn.Linear(36, 2)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[0, 0], first.weight[1, 0] = 1 / half_width, -1 / half_width
        first.bias[:] = torch.tensor([-centre / half_width, centre / half_width])
    fold = nn.Linear(2, 1)
    out = nn.Linear(1, 2)
    with torch.no_grad():
        fold.weight[:] = -1.0
        fold.bias[:] = 1.0
        out.weight[:] = torch.tensor([[0.0], [1.0]])
        out.bias[:] = torch.tensor([0.5, 0.0])
    return nn.Sequential(nn.Flatten(), first, nn.ReLU(), fold, nn.ReLU(), out).eval()


def _grid_data(path: Path, model: nn.Module, n: int, first_pixel_zero: bool = False) -> Path:
    """Images on the 8-bit grid, labelled by the model so every sample is clean-correct."""
    g = np.random.default_rng(3)
    x = (g.integers(0, 256, (n, 1, 6, 6)) / 255).astype(np.float32)
    if first_pixel_zero:
        x[:, 0, 0, 0] = 0.0
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(path, x=x, y=y)
    return path


def _scan(data: Path, model: nn.Module, method: str, attacks: tuple[str, ...], out: Path) -> AuditResult:
    config = AuditConfig(
        model=Path("in-memory"), data=str(data), attacks=attacks, certify=method, checks=False,
        per_sample_path=out, population=40, generations=20, queries=300,
    )  # fmt: skip
    return run_audit(config, module=model)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exact_one_pixel_verdicts_are_sound_against_both_attacks(tmp_path: Path) -> None:
    model = _cnn()
    data = _grid_data(tmp_path / "d.npz", model, 8)
    exact = _scan(data, model, "exact", ("onepixel", "sparse-rs"), tmp_path / "e.jsonl")
    crown = _scan(data, model, "crown", ("onepixel", "sparse-rs"), tmp_path / "c.jsonl")
    worst_e, worst_c = exact.rows[-1], crown.rows[-1]
    assert (worst_e.norm, worst_e.eps, worst_e.certification_method) == ("l0", 1.0, "crown+exact")
    assert worst_c.certification_method == "crown"
    assert worst_e.n_certified is not None and worst_c.n_certified is not None
    assert worst_c.n_certified <= worst_e.n_certified <= worst_e.n_robust
    assert 0 < worst_e.n_certified and worst_e.n_robust < worst_e.n_clean_correct  # both kinds present
    for line in _lines(tmp_path / "e.jsonl"):
        for entry in line["attacks"]:
            assert entry["certified"] is not None
            assert not (entry["certified"] and entry["fooled"])  # no certified sample is fooled
    assert any("skipped" in note and "256-level sweep" in note for note in exact.notes)
    assert not any("l0 threat models are not certified" in note for note in exact.notes)


def test_a_pixel_level_the_attack_misses_counts_as_fooled_by_exact(tmp_path: Path) -> None:
    """Sparse-RS tries only black and white; the sweep finds the grey level 128/255 that flips the class,
    and that image, confirmed on the model, counts as fooled in the cascade's exact step."""
    model = _bump(0.5, 0.05)
    data = _grid_data(tmp_path / "d.npz", model, 3, first_pixel_zero=True)
    result = _scan(data, model, "exact", ("sparse-rs",), tmp_path / "s.jsonl")
    attack, exact, worst = result.rows
    assert (attack.attack, exact.attack) == ("sparse-rs", "exact")
    assert attack.n_robust == 3 and exact.n_fooled_by_attack == 3  # every sample: the attack missed them
    assert worst.n_robust == 0 and worst.n_certified == 0 and worst.n_unknown == 0
    for line in _lines(tmp_path / "s.jsonl"):
        assert [(e["attack"], e["fooled"], e["certified"]) for e in line["attacks"]] == [
            ("sparse-rs", False, False),
            ("exact", True, False),
        ]
        assert line["attacks"][1]["l0"] == 1.0
    assert any("not robust that no attack fooled" in note and "3 of its" in note for note in result.notes)


def test_a_fooling_value_between_8bit_levels_is_never_certified(tmp_path: Path) -> None:
    """The band (127.5 +- 0.3) / 255 holds no 8-bit level: the sweep passes, the bounds between levels
    do not, so the sample stays unknown rather than certified for values the attacks may reach."""
    model = _bump(127.5 / 255, 0.3 / 255)
    data = _grid_data(tmp_path / "d.npz", model, 2, first_pixel_zero=True)
    result = _scan(data, model, "exact", ("sparse-rs",), tmp_path / "s.jsonl")
    worst = result.rows[-1]
    assert worst.n_robust == 2 and worst.n_certified == 0 and worst.n_unknown == 2
    with torch.no_grad():  # the band really fools the model: a certificate would have been wrong
        x = torch.zeros(1, 1, 6, 6)
        x[0, 0, 0, 0] = 127.5 / 255
        assert int(model(x).argmax()) == 1


def test_colour_images_keep_l0_uncertified_with_the_note(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    x = np.random.default_rng(0).random((3, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(tmp_path / "c.npz", x=x, y=y)
    result = _scan(tmp_path / "c.npz", model, "exact", ("sparse-rs",), tmp_path / "s.jsonl")
    assert all(r.n_certified is None and r.certification_method is None for r in result.rows)
    assert any("l0 threat models are not certified" in note for note in result.notes)


def test_positions_the_bounds_leave_open_are_swept_then_certified(tmp_path: Path) -> None:
    """relu(v - 0.5) - relu(v - 0.5) is 0, but bounds over v in [0, 1] cannot see it: pixel (0, 0) stays
    open, the sweep finds no fooling level, and the intervals between levels certify it."""
    first = nn.Linear(36, 2)
    out = nn.Linear(2, 2)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[:, 0] = 1.0
        first.bias[:] = -0.5
        out.weight[:] = torch.tensor([[0.0, 0.0], [2.0, -2.0]])
        out.bias[:] = torch.tensor([0.5, 0.0])
    model = nn.Sequential(nn.Flatten(), first, nn.ReLU(), out).eval()
    data = _grid_data(tmp_path / "d.npz", model, 2)
    result = _scan(data, model, "exact", ("sparse-rs",), tmp_path / "s.jsonl")
    worst = result.rows[-1]
    assert worst.n_robust == 2 and worst.n_certified == 2 and worst.n_unknown == 0
    assert any("(2 of 72 pixel positions swept over 2 samples)" in note for note in result.notes)
