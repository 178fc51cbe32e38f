"""Each reliability probe fires on a model built to trigger it, and a sound model raises none.

The models wrap the sample LeNet (trained, 98.6% on the holdout images), so every difference in the
flags comes from the wrapper: rounding the input (gradient masking), scaling the logits by 1e4
(saturated cross-entropy), noise in the forward pass (randomness).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robaudit.api import run_audit
from robaudit.attacks.pgd import PGD
from robaudit.checks.probes import PROBE_SAMPLES
from robaudit.config import AuditConfig
from sample_models.lenet import LeNet
from tests.conftest import HOLDOUT, SAMPLES, small_cnn


def lenet() -> nn.Module:
    model = LeNet()
    model.load_state_dict(torch.load(SAMPLES / "mnist_cnn_state.pt", weights_only=True))
    return model.eval()


class Rounded(nn.Module):
    """Quantises the input to 4 levels: a non-differentiable step that hides every gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = lenet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 3) / 3)


class Scaled(nn.Module):
    """Logits times 1e4: softmax saturates, so the cross-entropy gradient underflows to zero."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = lenet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1e4


class Noisy(nn.Module):
    """Gaussian noise on the input at every pass, like a randomised defence or dropout left on."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = lenet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.05 * torch.randn_like(x))


def flags_of(module: nn.Module | None = None, model: Path | None = None, **settings: object) -> set[str]:
    values: dict[str, object] = {"limit": 200, "attacks": ("fgsm", "pgd"), "steps": 40, "eps": (0.1,)}
    values.update(settings)
    config = AuditConfig(model=model or Path("in-memory"), data=str(HOLDOUT), **values)  # type: ignore[arg-type]
    return {f.code for f in run_audit(config, module=module).flags}


def test_a_sound_model_raises_no_flag() -> None:
    assert flags_of(lenet()) == set()


def test_the_softmax_export_is_handled_and_raises_no_flag() -> None:
    """Probabilities are turned back into log-probabilities, so gradients stay informative."""
    assert flags_of(model=SAMPLES / "mnist_nhwc_softmax.onnx") == set()


def test_probabilities_attacked_as_logits_are_caught() -> None:
    """A PyTorch model ending in softmax, audited with --output logits: the outputs are still recognised
    as probabilities (with auto their log is attacked, and nothing is flagged)."""
    softmax_model = nn.Sequential(lenet(), nn.Softmax(1))
    assert "probability-outputs" in flags_of(softmax_model, output="logits")
    assert "probability-outputs" not in flags_of(nn.Sequential(lenet(), nn.Softmax(1)))


def test_gradient_masking_is_caught() -> None:
    flags = flags_of(Rounded())
    assert {"gradients-unavailable", "unbounded-attack"} <= flags


def test_saturated_logits_are_caught() -> None:
    flags = flags_of(Scaled())
    assert "gradients-unavailable" in flags or "loss-choice" in flags
    assert "loss-choice" in flags  # DLR is scale-invariant (Croce & Hein 2020) and still works


def test_randomness_is_caught() -> None:
    # One gradient sample and one pass per prediction: the flag, not EOT's cost, is under test here.
    assert "randomness" in flags_of(Noisy(), eot=1, eot_evals=1)


def test_probes_can_be_switched_off() -> None:
    assert flags_of(Rounded(), checks=False) == set()


def test_too_few_steps_are_caught() -> None:
    assert "incomplete-optimisation" in flags_of(lenet(), steps=1)


def test_an_overshooting_step_is_caught_as_silent_success() -> None:
    """With 40 times Madry's step, L∞ PGD jumps between corners of the box: some samples are fooled at
    one iterate and right again at the last. The audit still counts them, from the kept iterate."""
    result = run_audit(
        AuditConfig(
            model=Path("in-memory"),
            data=str(HOLDOUT),
            limit=200,
            attacks=("pgd",),
            steps=10,
            eps=(0.15,),
            rel_step_size=40,
        ),
        module=lenet(),
    )
    flag = next(f for f in result.flags if f.code == "silent-success")
    assert "robaudit kept the earlier iterate" in flag.message
    found = re.search(r"(\d+) of (\d+) probed samples were adversarial at an earlier", flag.message)
    assert found is not None, flag.message
    lost, probed = int(found[1]), int(found[2])
    # Every clean-correct sample is probed (fewer than the 100-sample cap), and the flag counts some of
    # them; the audit's PGD row, which keeps the earlier iterate, counts at least as many fooled.
    assert probed == min(PROBE_SAMPLES, result.n_clean_correct)
    assert 0 < lost <= probed
    pgd_row = next(r for r in result.rows if r.attack == "pgd")
    assert result.n_clean_correct - pgd_row.n_robust >= lost


def test_random_search_beating_pgd_is_caught() -> None:
    """Behind a rounding step the gradient is zero, so FGSM and PGD cannot move; random corners of the
    L∞ box still cross rounding thresholds and fool some samples, and Square, which needs only scores,
    fools more (Carlini et al. 2019's black-box check)."""
    result = run_audit(
        AuditConfig(
            model=Path("in-memory"), data=str(HOLDOUT), limit=200, attacks=("pgd",), steps=10, eps=(0.3,)
        ),
        module=Rounded(),
    )
    messages = [f.message for f in result.flags if f.code == "weaker-attack-wins"]
    assert any("random search" in m for m in messages)
    assert any("Square (100 queries, black box)" in m for m in messages)


def test_a_one_pixel_example_inside_the_pgd_ball_is_caught() -> None:
    """A one-pixel change has an L2 size of at most 1, so it lies inside the L2 ball of radius 1: when
    one-pixel fools a sample there that PGD (blinded by the rounding step) leaves robust, PGD lost."""
    result = run_audit(
        AuditConfig(
            model=Path("in-memory"),
            data=str(HOLDOUT),
            limit=100,
            attacks=("pgd", "onepixel"),
            norms=("l2",),
            eps=(1.0,),
            steps=5,
            population=100,
            generations=10,
        ),
        module=Rounded(),
    )
    messages = [f.message for f in result.flags if f.code == "weaker-attack-wins"]
    assert any(m.startswith("l2 eps=1: onepixel") for m in messages)
    fooled_by_pixel = next(r for r in result.rows if r.attack == "onepixel")
    assert fooled_by_pixel.n_robust < fooled_by_pixel.n_clean_correct


def test_the_loss_curve_decides_whether_steps_are_doubled() -> None:
    """Only unbroken samples whose loss still climbs in the last fifth of the steps count."""
    from robaudit.checks.probes import PgdRun, still_rising

    flat = torch.tensor([0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # converged after two steps
    rising = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    losses = torch.stack([flat, rising, rising], 1)
    fooled = torch.tensor([False, False, True])  # the third sample's loss rises but it is already broken
    run = PgdRun(PGD(steps=5), torch.zeros(3), fooled, losses, torch.zeros(3, dtype=torch.bool))
    assert still_rising(run) == 1


def test_sub_8_bit_adversarial_examples_are_caught(tmp_path: Path) -> None:
    """At eps = 0.001 < half a grey level, rounding to 8 bits turns every adversarial example of an
    8-bit image back into the image itself. A random-weight CNN labelled with its own predictions has
    margins small enough for such an eps to fool it."""
    fragile = small_cnn(2).eval()
    with np.load(HOLDOUT) as npz:
        x = npz["x"][:200]
    with torch.no_grad():
        y = fragile(torch.from_numpy(x.astype(np.float32) / 255).unsqueeze(1)).argmax(1).numpy()
    data = tmp_path / "own.npz"
    np.savez(data, x=x, y=y)
    config = AuditConfig(model=Path("in-memory"), data=str(data), attacks=("pgd",), steps=10, eps=(0.001,))
    result = run_audit(config, module=fragile)
    assert "quantisation" in {f.code for f in result.flags}
    note = next(n for n in result.notes if n.startswith("8-bit check"))
    assert "0 still fool the model" in note


def test_an_onnx_export_with_dropout_in_training_mode_is_caught(tmp_path: Path) -> None:
    """Exported by torch.onnx in training mode, the Dropout stays random in ONNX Runtime. No converter
    takes it, so only gradient-free attacks run, and the randomness probe fires."""
    import warnings

    class WithDropout(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = lenet()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(self.inner(x))

    path = tmp_path / "dropout.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            WithDropout().train(),
            (torch.rand(2, 1, 28, 28),),
            str(path),
            dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING,
            do_constant_folding=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
        )
    flags = flags_of(model=path, attacks=("onepixel",), population=8, generations=2)
    assert flags == {"randomness"}  # and not runtime-transfer: one-pixel never used a converted graph
