"""FGSM/FGM against exact answers, the norm maths, and the runner's verification and determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robaudit.api import run_audit
from robaudit.attacks import build_attack
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.norms import lp_norm, project
from robaudit.attacks.pgd import PGD
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.plan import plan_cascade
from robaudit.audit.runner import evaluate
from robaudit.audit.verification import verify
from robaudit.config import AuditConfig
from robaudit.data import open_dataset
from robaudit.errors import UsageError, VerificationError
from robaudit.models import load_model
from tests.conftest import Linear

D = (1, 4, 5)


def linear_problem(n: int = 400, seed: int = 0) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    """Two classes, x inside [0.3, 0.7] so that steps up to 0.3 never touch the [0, 1] bounds."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(2, 20, generator=g)
    bias = torch.randn(2, generator=g) * 0.1
    x = 0.3 + 0.4 * torch.rand(n, *D, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return Linear(weight, bias).eval(), x, y


def exact_robust(model: Linear, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """For two classes, the worst case over the ball lowers the margin by eps * ||w_y - w_o||_dual."""
    w = model.fc.weight.detach()
    logits = model(x).detach()
    margin = logits.gather(1, y[:, None])[:, 0] - logits.gather(1, (1 - y)[:, None])[:, 0]
    diff = w[y] - w[1 - y]
    dual = {"linf": diff.abs().sum(1), "l2": diff.norm(dim=1), "l1": diff.abs().amax(1)}[norm]
    return margin > eps * dual


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@pytest.mark.parametrize("eps", [0.0, 0.02, 0.05, 0.1, 0.3])
def test_fgsm_on_a_linear_model_matches_the_exact_answer(norm: str, eps: float) -> None:
    model, x, y = linear_problem()
    seeds = torch.from_numpy(sample_seeds(0, np.arange(len(x))))
    x_adv = FGSM()(model, x, y, eps=eps, norm=norm, seeds=seeds)
    verify(x_adv, x, eps, norm, "fgsm")
    robust = model(x_adv).argmax(1) == y
    expected = exact_robust(model, x, y, eps, norm)
    assert torch.equal(robust, expected)
    assert 0 < int(expected.sum()) < len(x) or eps in (0.0, 0.3)


def test_fgsm_linear_exact_answer_through_the_whole_pipeline(tmp_path: Path) -> None:
    model, x, y = linear_problem()
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.trace(model, x[:2]), str(path))
    data = tmp_path / "linear.npz"
    np.savez(data, x=x.numpy(), y=y.numpy())
    eps = (0.02, 0.05, 0.1)
    result = run_audit(AuditConfig(model=path, data=str(data), eps=eps, batch_size=64))
    clean = model(x).argmax(1) == y
    assert result.clean_accuracy == pytest.approx(float(clean.float().mean()))
    for row in result.rows:
        assert row.robust_accuracy == pytest.approx(
            float(exact_robust(model, x, y, row.eps, "linf").float().mean())
        )
        assert row.robust_accuracy <= result.clean_accuracy


def test_fgsm_eps_zero_returns_x() -> None:
    model, x, y = linear_problem(20)
    out = FGSM()(model, x, y, eps=0.0, norm="linf", seeds=torch.zeros(20, dtype=torch.int64))
    assert torch.equal(out, x)


def test_fgsm_gradients_leave_weights_untouched() -> None:
    model, x, y = linear_problem(20)
    model.fc.weight.requires_grad_(True)
    FGSM()(model, x, y, eps=0.1, norm="linf", seeds=torch.zeros(20, dtype=torch.int64))
    assert model.fc.weight.grad is None


def test_unknown_attack_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown attack"):
        build_attack("nosuch")


@settings(max_examples=60, deadline=None)
@given(
    norm=st.sampled_from(["linf", "l2", "l1"]),
    eps=st.floats(0.01, 3.0),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.01, 5.0),
)
def test_projection_lands_in_the_ball_and_is_nearest(norm: str, eps: float, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(4, 12, generator=g, dtype=torch.float64) * scale
    p = project(d, eps, norm)
    assert torch.all(lp_norm(p, norm) <= eps * (1 + 1e-9) + 1e-12)
    inside = lp_norm(d, norm) <= eps
    assert torch.allclose(p[inside], d[inside])
    # No point of the ball is closer to d: compare with random points projected into the ball.
    for _ in range(20):
        q = project(torch.randn(4, 12, generator=g, dtype=torch.float64) * scale, eps, norm)
        assert torch.all((d - p).norm(dim=1) <= (d - q).norm(dim=1) + 1e-9)


def test_l1_projection_matches_a_known_case() -> None:
    # Projecting (3, 1, 0) onto the L1 ball of radius 2 subtracts theta = 1 from the largest entries: (2, 0, 0).
    p = project(torch.tensor([[3.0, 1.0, 0.0], [-0.5, 0.25, 0.0]]), 2.0, "l1")
    assert torch.allclose(p, torch.tensor([[2.0, 0.0, 0.0], [-0.5, 0.25, 0.0]]))


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda x: x + 0.2, "exceeded eps"),
        (lambda x: x.clone().fill_(float("nan")), "NaN"),
        (lambda x: x * 0 + 1.5, "bounds"),
        (lambda x: x[:1], "shape"),
    ],
)
def test_verify_rejects_candidates_outside_the_threat_model(bad, match: str) -> None:  # type: ignore[no-untyped-def]
    x = torch.full((3, 1, 2, 2), 0.5)
    with pytest.raises(VerificationError, match=match):
        verify(bad(x), x, 0.1, "linf", "test")
    verify(x + 0.1, x, 0.1, "linf", "test")  # exactly on the boundary is allowed


def test_sample_seeds_depend_only_on_run_seed_and_index() -> None:
    idx = np.arange(100)
    whole = sample_seeds(7, idx)
    assert np.array_equal(np.concatenate([sample_seeds(7, idx[:33]), sample_seeds(7, idx[33:])]), whole)
    assert np.array_equal(sample_seeds(7, idx[::-1]), whole[::-1])
    assert len(np.unique(whole)) == 100
    assert not np.array_equal(sample_seeds(8, idx), whole)


def test_results_do_not_depend_on_batch_size(exports: dict[str, Path], small_npz: Path) -> None:
    config = AuditConfig(model=exports["legacy"], data=str(small_npz), eps=(0.05, 0.2))
    handle = load_model(config, torch.device("cpu"))
    dataset = open_dataset(str(small_npz), expected_shape=handle.declared_shape)
    probe = torch.from_numpy(dataset.to_unit(dataset.read(np.arange(8)), (0.0, 1.0)))
    adapter = handle.bind(dataset.sample_shape, probe)
    outcomes = []
    for batch_size in (1, 7, 64):
        records = evaluate(
            adapter,
            dataset,
            np.arange(len(dataset)),
            plan_cascade([FGSM()], ["linf"], (0.05, 0.2), pixels=1),
            batch_size=batch_size,
            seed=0,
            data_range=(0.0, 1.0),
        )
        outcomes.append(
            (records.clean_pred, [records.adversarial[("fgsm", "linf", e)].pred for e in (0.05, 0.2)])
        )
    for clean, adv in outcomes[1:]:
        assert np.array_equal(clean, outcomes[0][0])
        for a, b in zip(adv, outcomes[0][1], strict=True):
            assert np.array_equal(a, b)
    # The attack did something: some clean-correct samples are flipped at eps 0.2.
    assert (outcomes[0][1][1] != outcomes[0][0]).any()


class _OneScore(torch.nn.Module):
    """The two-class linear model as a binary classifier with one output: class 1's logit minus class
    0's, optionally through a sigmoid (Keras' Dense(1, activation="sigmoid"))."""

    def __init__(self, model: Linear, sigmoid: bool, scale: float = 1.0) -> None:
        super().__init__()
        w, b = model.fc.weight.detach(), model.fc.bias.detach()
        self.fc = torch.nn.Linear(w.shape[1], 1)
        with torch.no_grad():
            self.fc.weight.copy_(scale * (w[1] - w[0])[None])
            self.fc.bias.copy_(scale * (b[1] - b[0])[None])
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        return torch.sigmoid(z) if self.sigmoid else z


@pytest.mark.parametrize("sigmoid", [False, True])
def test_a_one_output_binary_classifier_gets_the_exact_fgsm_answer(tmp_path: Path, sigmoid: bool) -> None:
    """A single logit (or its sigmoid, exported to ONNX, whose final Sigmoid robaudit removes) is read
    as two classes; FGSM's robust accuracy is then the exact one of the equivalent two-class model."""
    from tests.conftest import quiet_export

    model, x, y = linear_problem()
    path = tmp_path / "binary.onnx"
    quiet_export(_OneScore(model, sigmoid).eval(), (x[:2],), str(path), dynamo=False, opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "N"}})  # fmt: skip
    data = tmp_path / "linear.npz"
    np.savez(data, x=x.numpy(), y=y.numpy())
    eps = (0.02, 0.05, 0.1)
    result = run_audit(AuditConfig(model=path, data=str(data), eps=eps, batch_size=64, checks=False))
    assert result.clean_accuracy == pytest.approx(float((model(x).argmax(1) == y).float().mean()))
    for row in result.rows:
        assert row.robust_accuracy == pytest.approx(
            float(exact_robust(model, x, y, row.eps, "linf").float().mean())
        )
    assert any("Sigmoid over one score" in n for n in result.notes) is sigmoid


def test_a_confident_one_logit_model_still_has_a_gradient() -> None:
    """With |z| between 17 and 80, sigmoid(z) is exactly 0 or 1 in float32 while exp(-|z|) is not yet
    zero; the cross-entropy gradient must still reach the input (a constant class-0 logit of 0 left it
    exactly zero, and PGD stood still)."""
    from robaudit.models.base import detect_output_kind, to_logits

    model, x, y = linear_problem(400)
    binary = _OneScore(model, sigmoid=False, scale=40.0).eval()
    z = binary(x).detach()
    confident = (z.abs() > 17) & (z.abs() < 80)
    x, z = x[confident[:, 0]], z[confident[:, 0]]
    assert len(x) >= 20
    assert detect_output_kind(z) == "logits" and detect_output_kind(torch.sigmoid(z)) == "probabilities"
    xr = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(
        to_logits(binary(xr), "logits"), (z[:, 0] > 0).long(), reduction="sum"
    )
    (grad,) = torch.autograd.grad(loss, xr)
    assert bool((grad.flatten(1).abs().sum(1) > 0).all())


def test_dlr_on_two_classes_is_the_logit_margin_and_does_not_saturate() -> None:
    """A binary model with margins of 17 to 300: cross-entropy's gradient underflows to zero on the most
    confident samples, and PGD at eps 1 (where any image is reachable) leaves some of them; the margin
    loss that --loss dlr uses for two classes reaches them all."""
    model, x, y = linear_problem(400)
    binary = _OneScore(model, sigmoid=False, scale=40.0).eval()

    def logits(t: torch.Tensor) -> torch.Tensor:
        z = binary(t)
        return torch.cat([-0.5 * z, 0.5 * z], 1)

    with torch.no_grad():
        z = binary(x)[:, 0]
    label = (z > 0).long()
    assert float(z.abs().max()) > 104  # exp(-z) underflows to 0 in float32 beyond ~104
    flipped = {}
    for loss in ("ce", "dlr"):
        x_adv = PGD(steps=20, loss=loss)(logits, x, label, eps=1.0, norm="linf", seeds=torch.arange(len(x)))
        flipped[loss] = int((logits(x_adv).argmax(1) != label).sum())
    assert flipped["dlr"] == len(x) > flipped["ce"]


def test_success_with_a_margin_needs_a_wrong_class_that_far_ahead() -> None:
    from robaudit.attacks.base import succeeded

    logits = torch.tensor([[2.0, 2.3, 0.0], [2.0, 2.6, 0.0], [2.0, 1.0, 1.5]])
    y = torch.tensor([0, 0, 0])
    assert succeeded(logits, y, None).tolist() == [True, True, False]
    assert succeeded(logits, y, None, margin=0.5).tolist() == [False, True, False]
    targets = torch.tensor([1, 1, 2])
    assert succeeded(logits, y, targets).tolist() == [True, True, False]
    assert succeeded(logits, y, targets, margin=0.5).tolist() == [False, True, False]
