"""``scan --surrogate``: a transfer attack on a gradient-masked model, its rows, the flag, the CLI errors.

The masked model is the sample LeNet with its logits multiplied by 1e4: softmax saturates, the
cross-entropy gradient of a correctly classified sample is exactly zero, and FGSM finds nothing. The
surrogate is the same network without the saturation (the committed TorchScript file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robaudit.api import run_audit
from robaudit.cli import app
from robaudit.config import AuditConfig
from robaudit.gate.parse import parse_threshold
from robaudit.results import WORST_CASE
from sample_models.lenet import LeNet
from tests.conftest import unconvertible_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "sample_models"
HOLDOUT = str(MODELS / "mnist_holdout.npz")
runner = CliRunner()


class _Saturated(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1e4


def _masked() -> torch.nn.Module:
    net = LeNet()
    net.load_state_dict(torch.load(MODELS / "mnist_cnn_state.pt", weights_only=True))
    return _Saturated(net).eval()


@pytest.fixture(scope="module")
def masked_audit() -> object:
    config = AuditConfig(
        model="masked.pt",
        data=HOLDOUT,
        limit=48,
        eps=(0.25,),
        checks=False,
        surrogate=MODELS / "mnist_cnn.pt",
        output="logits",
    )
    return run_audit(config, module=_masked())


def test_surrogate_beats_white_box_on_a_masked_model_and_is_flagged(masked_audit: object) -> None:
    rows = {r.attack: r for r in masked_audit.rows}  # type: ignore[attr-defined]
    assert list(rows) == ["fgsm", "transfer:fgsm", WORST_CASE]  # the transfer row after the white-box one
    white, transfer, worst = rows["fgsm"], rows["transfer:fgsm"], rows[WORST_CASE]
    white_fooled = white.n_clean_correct - white.n_robust
    assert white.n_clean_correct > 40
    assert transfer.n_fooled_by_attack > white_fooled + 10  # the surrogate's examples win by far
    assert worst.n_robust == transfer.n_robust < white.n_robust  # and count in the worst case
    flags = [f for f in masked_audit.flags if f.code == "transfer-beats-white-box"]  # type: ignore[attr-defined]
    assert len(flags) == 1
    assert f"fooled {transfer.n_fooled_by_attack} samples" in flags[0].message


def test_no_flag_when_white_box_already_finds_everything_the_surrogate_does() -> None:
    # The unmasked network with itself as surrogate: FGSM examples are the same, so the transfer row
    # fools nothing new and no flag is raised.
    config = AuditConfig(
        model=MODELS / "mnist_cnn.pt",
        data=HOLDOUT,
        limit=32,
        eps=(0.25,),
        checks=False,
        surrogate=MODELS / "mnist_cnn.pt",
    )
    result = run_audit(config)
    transfer = next(r for r in result.rows if r.attack == "transfer:fgsm")
    assert transfer.n_fooled_by_attack == 0
    assert not [f for f in result.flags if f.code == "transfer-beats-white-box"]


def test_gate_selector_names_a_transfer_row() -> None:
    check = parse_threshold("robust_accuracy@transfer:fgsm:linf:0.25=0.5", "min", "--fail-under")
    assert (check.attack, check.norm, check.eps) == ("transfer:fgsm", "linf", 0.25)


def test_cli_missing_surrogate_is_a_one_line_error(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "scan",
            str(MODELS / "mnist_cnn.pt"),
            "--data",
            HOLDOUT,
            "--limit",
            "8",
            "--surrogate",
            str(tmp_path / "nope.pt"),
        ],
    )
    assert res.exit_code == 3, res.output
    assert "--surrogate" in res.output and "nope.pt: no such model file" in res.output
    assert "Traceback" not in res.output


class _Brightest(torch.nn.Module):
    """A differentiable stand-in for the QuickGelu graph: the logits are the pixels themselves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * 10


def test_a_model_without_gradients_is_attacked_through_the_surrogate(tmp_path: Path) -> None:
    model = unconvertible_model(tmp_path / "quickgelu.onnx")  # ONNX Runtime only: no gradients
    surrogate = tmp_path / "brightest.pt"
    torch.jit.save(torch.jit.trace(_Brightest(), torch.zeros(1, 1, 4, 4)), str(surrogate))
    g = np.random.default_rng(0)
    x = (g.random((24, 1, 4, 4)) * 0.8).astype(np.float32)
    data = tmp_path / "bright.npz"
    np.savez(data, x=x, y=x.reshape(24, 16).argmax(1))
    config = AuditConfig(model=model, data=str(data), eps=(0.3,), checks=False, surrogate=surrogate)
    result = run_audit(config)
    assert result.model.gradients is False
    assert [r.attack for r in result.rows] == ["transfer:fgsm", WORST_CASE]  # fgsm itself cannot run
    assert result.rows[0].n_robust < result.rows[0].n_clean_correct == 24  # ONNX Runtime confirms the hits
    assert not [f for f in result.flags if f.code == "transfer-beats-white-box"]  # no white-box to beat


def test_a_run_folder_refuses_to_resume_after_the_surrogate_changed(tmp_path: Path) -> None:
    from robaudit.errors import InputError

    surrogate = tmp_path / "surrogate.pt"
    surrogate.write_bytes((MODELS / "mnist_cnn.pt").read_bytes())
    config = AuditConfig(
        model="masked.pt",
        data=HOLDOUT,
        limit=4,
        eps=(0.25,),
        checks=False,
        surrogate=surrogate,
        output="logits",
        run_dir=tmp_path / "run",
    )
    run_audit(config, module=_masked())
    surrogate.write_bytes((MODELS / "mnist_cnn_adv.pt").read_bytes())  # its saved examples are stale now
    with pytest.raises(InputError, match="the surrogate changed since the run in this folder began"):
        run_audit(config, module=_masked())
