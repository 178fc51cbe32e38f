"""Randomised models: EOT gradients, majority evaluation, the random ONNX graph, and what is recorded.

Two real random models: ``Cycling``, whose passes misclassify a sample in exactly m of every 10
consecutive passes (m set by the sample's mean pixel), so the majority rule can be checked to the
sample; and the noisy sample LeNet (Gaussian input noise, sigma = 0.2, sample_models/build_noisy.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.api import run_audit
from robaudit.attacks.base import loss_and_grad
from robaudit.audit.verification import majority_predict
from robaudit.config import AuditConfig
from robaudit.results import load_result, write_json_atomic
from tests.conftest import HOLDOUT, SAMPLES


class Cycling(nn.Module):
    """Two classes, label 0. Pass c misclassifies a sample when (c mod 10) < round(10 * its mean pixel),
    so any 10 consecutive passes misclassify it exactly that many times. A small linear term in the
    mean pixel gives the loss a gradient that pushes every pixel up, towards more misclassifying passes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        wrong = (self.calls % 10) < torch.floor(10 * mean.detach() + 0.5)
        self.calls += 1
        decision = torch.where(wrong, 1.0, -1.0)
        return torch.stack([-decision - 0.01 * mean, decision + 0.01 * mean], dim=1)


def test_majority_rule_per_sample() -> None:
    """3 misclassifying passes of 10: not fooled; 7 of 10: fooled; 5 of 10 (a tie): neither correct
    (clean) nor fooled (adversarial)."""
    model = Cycling()
    x = torch.tensor([0.3, 0.7, 0.5]).reshape(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous()
    y = torch.zeros(3, dtype=torch.int64)
    adv_pred, _, _ = majority_predict(model, x, y, 10, clean=False)
    clean_pred, conf, _ = majority_predict(model, x, y, 10, clean=True)
    assert adv_pred.tolist() == [0, 1, 0]  # fooled only at 7 of 10
    assert clean_pred.tolist() == [0, 1, 1]  # correct only at 7 of 10 right
    sig = torch.sigmoid(torch.tensor(2.0)).item()  # class 0's probability on a right pass
    assert conf[0].item() == pytest.approx(0.7 * sig + 0.3 * (1 - sig), abs=1e-2)


def test_audit_of_a_random_model_uses_eot_and_the_majority(tmp_path: Path) -> None:
    """End to end: the model is found random, FGSM runs with the default EOT, and every recorded
    prediction is the 10-pass majority: mean 0.0 + 0.3 (3 of 10 wrong) stays robust, 0.4 + 0.3
    (7 of 10) is fooled, 0.2 + 0.3 (a tie) stays robust; N and R are in the JSON."""
    data = tmp_path / "cycling.npz"
    x = np.stack([np.full((1, 4, 4), v, np.float32) for v in (0.0, 0.4, 0.2)])
    np.savez(data, x=x, y=np.zeros(3, np.int64))
    out = tmp_path / "r.json"
    config = AuditConfig(model=Path("in-memory"), data=str(data), attacks=("fgsm",), eps=(0.3,), eot_evals=10)  # type: ignore[call-arg]
    result = run_audit(config, module=Cycling())
    assert result.clean_accuracy == 1.0
    fgsm = next(r for r in result.rows if r.attack == "fgsm")
    assert fgsm.robust_accuracy == pytest.approx(2 / 3)
    write_json_atomic(out, result.to_dict())
    saved = json.loads(out.read_text())
    assert saved["schema_version"] == "1.3"
    assert {k: saved["settings"][k] for k in ("random_model", "eot", "eot_evals")} == {
        "random_model": True,
        "eot": 10,
        "eot_evals": 10,
    }
    assert saved["settings"]["fgsm"]["eot"] == 10
    assert any("audited with expectation over transformation" in n for n in saved["notes"])
    load_result(out)  # validates against the schema


class NoisySquare(nn.Module):
    """One score, sum(w * (x + sigma * n)^2) with fresh Gaussian n at every pass: its input gradient is
    2 w (x + sigma n), so each gradient sample's noise is Gaussian with a known variance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.linspace(0.5, 1.5, x[0].numel()).reshape(x.shape[1:])
        noisy = x + 0.5 * torch.randn_like(x)
        return (w * noisy**2).flatten(1).sum(1, keepdim=True)


def test_eot_gradient_averaging_reduces_variance() -> None:
    """Averaging 10 gradient samples divides the gradient's variance by 10 (measured over 20 repeats)."""
    model = NoisySquare()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)

    def variance(samples: int) -> float:
        grads = torch.stack([loss_and_grad(model, x, lambda z: z[:, 0], samples)[2] for _ in range(20)])
        return float(grads.var(0).mean())

    ratio = variance(1) / variance(10)
    assert 6 < ratio < 16, ratio  # 10 in expectation; the spread of a 20-repeat estimate is about +-35%


def _noisy_config(model: str, **extra: object) -> AuditConfig:
    values: dict[str, object] = {"limit": 6, "attacks": ("fgsm",), "eps": (0.1,), "checks": False}
    values.update(extra)
    return AuditConfig(model=SAMPLES / model, data=str(HOLDOUT), **values)  # type: ignore[arg-type]


def test_a_random_onnx_graph_is_audited_with_eot() -> None:
    """The RandomNormalLike graph is converted (the noise kept) and audited, not refused."""
    result = run_audit(_noisy_config("mnist_cnn_noisy.onnx"))
    assert result.settings["random_model"] is True and result.settings["eot"] == 10
    assert any("RandomNormalLike" in n and "onnx2pytorch" in n for n in result.notes)
    fgsm = next(r for r in result.rows if r.attack == "fgsm")
    assert fgsm.error is None and fgsm.n_fooled_converted is not None  # gradients came from the conversion
    assert math.isfinite(fgsm.robust_accuracy)


def test_a_random_model_audit_is_deterministic_given_the_seed() -> None:
    a, b = (run_audit(_noisy_config("mnist_cnn_noisy.pt", seed=3)) for _ in range(2))
    for ra, rb in zip(a.rows, b.rows, strict=True):
        assert (ra.robust_accuracy, ra.mean_confidence_adversarial_errors) == (
            rb.robust_accuracy,
            rb.mean_confidence_adversarial_errors,
        )
    assert a.mean_confidence_clean == b.mean_confidence_clean


def test_a_baseline_compares_eot_only_where_both_audits_fixed_it() -> None:
    """Auto (0) resolves once the model is loaded, and results before schema 1.2 have no eot."""
    from robaudit.gate.baseline import settings_mismatches

    old = {"pgd": {"steps": 40}}
    assert settings_mismatches(old, {"pgd": {"steps": 40, "eot": 1}}) == []
    assert settings_mismatches({"pgd": {"steps": 40, "eot": 10}}, {"pgd": {"steps": 40, "eot": 0}}) == []
    found = settings_mismatches({"pgd": {"steps": 40, "eot": 10}}, {"pgd": {"steps": 40, "eot": 1}})
    assert found == ["attack settings (settings.pgd.eot 10 -> 1)"]
