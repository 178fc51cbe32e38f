"""PGD: exact answers on a linear model, invariants, the best iterate, and determinism."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from robaudit.api import run_audit
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.norms import lp_norm, random_start
from robaudit.attacks.pgd import PGD, dlr_loss
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.plan import plan_cascade
from robaudit.audit.runner import evaluate
from robaudit.audit.verification import verify
from robaudit.config import AuditConfig
from robaudit.data import open_dataset
from robaudit.models import load_model
from tests.conftest import HOLDOUT, SAMPLES, assert_same_points, small_cnn
from tests.test_attacks import exact_robust, linear_problem


def seeds_for(n: int, run_seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(sample_seeds(run_seed, np.arange(n)))


@pytest.mark.parametrize("eps", [0.02, 0.05, 0.1])
def test_pgd_linf_on_a_linear_model_finds_every_breakable_sample(eps: float) -> None:
    model, x, y = linear_problem()
    x_adv = PGD(steps=20)(model, x, y, eps=eps, norm="linf", seeds=seeds_for(len(x)))
    verify(x_adv, x, eps, "linf", "pgd")
    assert torch.equal(model(x_adv).argmax(1) == y, exact_robust(model, x, y, eps, "linf"))


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_pgd_l2_l1_on_a_linear_model_are_sound_and_strong(norm: str) -> None:
    model, x, y = linear_problem()
    eps = 0.3 if norm == "l2" else 0.25
    x_adv = PGD(steps=50)(model, x, y, eps=eps, norm=norm, seeds=seeds_for(len(x)))
    verify(x_adv, x, eps, norm, "pgd")
    robust = model(x_adv).argmax(1) == y
    exact = exact_robust(model, x, y, eps, norm)
    assert not bool((exact & ~robust).any())  # never "fools" a provably robust sample
    breakable = (~exact).sum()
    assert breakable > 20
    # Finds at least 95% of the samples that can be broken.
    assert int((~robust).sum()) >= 0.95 * int(breakable)


def test_pgd_is_at_least_as_strong_as_fgsm_on_the_sample_model() -> None:
    base = dict(model=SAMPLES / "mnist_cnn.onnx", data=str(HOLDOUT), limit=300, eps=(0.1,))
    fgsm = run_audit(AuditConfig(**base, attacks=("fgsm",)))
    pgd = run_audit(AuditConfig(**base, attacks=("pgd",), steps=20))
    assert pgd.rows[0].robust_accuracy < fgsm.rows[0].robust_accuracy
    cascade = run_audit(AuditConfig(**base, attacks=("fgsm", "pgd"), steps=20))
    assert [r.attack for r in cascade.rows] == ["fgsm", "pgd", "worst-case"]
    worst = cascade.rows[-1]
    assert worst.robust_accuracy <= min(pgd.rows[0].robust_accuracy, fgsm.rows[0].robust_accuracy)
    assert worst.n_robust == cascade.rows[1].n_robust  # the cascade's last row is the worst case
    assert cascade.rows[0].robust_accuracy == fgsm.rows[0].robust_accuracy
    assert cascade.rows[1].n_fooled_by_attack == cascade.rows[0].n_robust - cascade.rows[1].n_robust


@settings(max_examples=15, deadline=None)
@given(norm=st.sampled_from(["linf", "l2", "l1"]), eps=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
@example(norm="l1", eps=1.0, seed=142)  # float32 rounding of x + delta once overshot the L1 ball by 2.5e-6
@example(norm="l2", eps=1.0, seed=142)
def test_pgd_stays_in_the_ball_and_the_bounds(norm: str, eps: float, seed: int) -> None:
    torch.manual_seed(seed)
    model = small_cnn(seed)
    x = torch.rand(6, 1, 28, 28)
    y = torch.randint(0, 10, (6,))
    x_adv = PGD(steps=3, restarts=2)(model, x, y, eps=eps, norm=norm, seeds=seeds_for(6, seed))
    verify(x_adv, x, eps, norm, "pgd")
    if eps == 0:
        assert torch.equal(x_adv, x)


class _Window(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1) - 0.5
        fooled = (s > 0.02) & (s < 0.06)
        # Class-1 score rises with s (a gradient pointing up), but only the window flips the label.
        z1 = torch.where(fooled, 1.0 + s, s - 1.0)
        return torch.stack([torch.zeros_like(s), z1], 1)


def test_pgd_keeps_the_first_fooling_iterate_not_the_last() -> None:
    """A model that is fooled only near x + 0.5*eps in one direction: later steps overshoot into a
    region where it is right again, so returning the last iterate would lose the adversarial example."""

    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])
    x_adv = PGD(steps=10, rel_step_size=2.5, random_init=False)(
        _Window(), x, y, eps=0.2, norm="linf", seeds=seeds_for(1)
    )
    assert _Window()(x_adv).argmax(1).item() == 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_returns_the_same_points_with_or_without_early_stopping(norm: str) -> None:
    """The probes watch whole trajectories with early stopping off; the points must be the audit's."""
    model = small_cnn(3).eval()
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    y = model(x).argmax(1)
    eps = 0.005 if norm == "linf" else 0.1
    attack = PGD(steps=8, restarts=2)
    stopped = attack(model, x, y, eps=eps, norm=norm, seeds=seeds_for(16))
    watched = PGD(steps=8, restarts=2, early_stop=False)(model, x, y, eps=eps, norm=norm, seeds=seeds_for(16))
    fooled = model(stopped).argmax(1) != y
    assert 0 < int(fooled.sum()) < 16  # both kinds of sample are covered
    assert_same_points(stopped, watched, model)


@pytest.mark.parametrize("restarts", [1, 2])
def test_the_last_iterate_of_the_last_restart_is_returned_without_a_check(restarts: int) -> None:
    """The final check pass only tells the next restart which samples are left; the points are the same."""
    model = small_cnn(3).eval()
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    y = model(x).argmax(1)
    calls: list[tuple[int, bool]] = []

    def counted(xb: torch.Tensor) -> torch.Tensor:
        calls.append((len(xb), xb.requires_grad))
        return model(xb)

    attack = PGD(steps=6, restarts=restarts, early_stop=False)
    plain = attack(counted, x, y, eps=0.005, norm="linf", seeds=seeds_for(16))
    checks = [c for c in calls if not c[1]]
    calls.clear()
    watched = attack(counted, x, y, eps=0.005, norm="linf", seeds=seeds_for(16), observer=lambda *_: None)
    assert torch.equal(plain, watched)
    assert 0 < int((model(plain).argmax(1) != y).sum()) < 16  # fooled and unbroken samples both covered
    assert len(checks) == restarts - 1  # a check pass for every restart but the last
    assert len([c for c in calls if not c[1]]) == restarts  # watched: every restart's last iterate


@pytest.mark.parametrize(
    ("norm", "targeted", "restarts"), [("linf", False, 2), ("l2", True, 1), ("l1", False, 1)]
)
def test_reading_the_fooled_flags_a_step_late_returns_the_same_points(
    norm: str, targeted: bool, restarts: int
) -> None:
    """On a GPU, PGD reads which samples are fooled one step late so that it never waits for the GPU;
    the run on the CPU here takes that path by hand. Same points, and every sample leaves the working
    batch exactly one step later than it does when the flags are read at once."""
    model = small_cnn(3).eval()
    torch.manual_seed(1)
    x = torch.rand(24, 1, 28, 28)
    y = model(x).argmax(1)
    targets = (y + 1) % 3 if targeted else None
    eps = {"linf": 0.005, "l2": 0.1, "l1": 1.0}[norm]
    sizes: dict[bool, list[int]] = {}
    points: dict[bool, torch.Tensor] = {}
    for lagged in (False, True):
        seen: list[int] = []

        def counted(xb: torch.Tensor, seen: list[int] = seen) -> torch.Tensor:
            if xb.requires_grad:  # the gradient passes, one per step
                seen.append(len(xb))
            return model(xb)

        attack = PGD(steps=10, restarts=restarts, lagged=lagged)
        points[lagged] = attack(counted, x, y, eps=eps, norm=norm, seeds=seeds_for(24), targets=targets)
        sizes[lagged] = seen
    assert_same_points(points[False], points[True], model)
    fooled = (
        (model(points[False]).argmax(1) == targets) if targeted else (model(points[False]).argmax(1) != y)
    )
    assert 0 < int(fooled.sum()) < 24  # fooled and unbroken samples both covered
    first_restart = sizes[False][:10]
    assert first_restart[-1] < first_restart[0]  # samples did leave the working batch
    assert sizes[True][:10] == first_restart[:1] + first_restart[:9]  # each one a step later


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_pgd_on_a_gpu_does_not_wait_for_the_gpu_at_each_step(norm: str) -> None:
    """The number of host-device synchronisations must not grow with the number of steps."""
    model = small_cnn(3).eval().cuda()
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28, device="cuda")
    y = model(x).argmax(1)
    eps = {"linf": 0.005, "l2": 0.1, "l1": 1.0}[norm]
    counts = []
    for steps in (5, 25):
        attack = PGD(steps=steps)
        attack(model, x, y, eps=eps, norm=norm, seeds=seeds_for(64))  # warm-up
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                attack(model, x, y, eps=eps, norm=norm, seeds=seeds_for(64))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts[0] == counts[1]


def test_the_step_observer_sees_a_success_that_the_last_iterate_loses() -> None:
    """On the window model the trajectory passes through the fooling window and out again."""
    seen: list[tuple[int, bool]] = []
    x = torch.full((1, 1, 2, 2), 0.5)
    PGD(steps=10, random_init=False, early_stop=False)(
        _Window(),
        x,
        torch.tensor([0]),
        eps=0.2,
        norm="linf",
        seeds=seeds_for(1),
        observer=lambda restart, step, active, loss, hit: seen.append((step, bool(hit[0]))),
    )
    assert [step for step, _ in seen] == list(range(11))  # every iterate, the last one included
    assert any(hit for _, hit in seen) and not seen[-1][1]


def test_random_start_is_per_sample_and_inside_the_ball() -> None:
    for norm in ("linf", "l2", "l1"):
        a = random_start((4, 1, 5, 5), 0.3, norm, [1, 2, 3, 4], torch.device("cpu"))
        b = random_start((2, 1, 5, 5), 0.3, norm, [3, 4], torch.device("cpu"))
        assert torch.equal(a[2:], b)
        assert torch.all(lp_norm(a, norm) <= 0.3 + 1e-6)
        assert not torch.equal(a[0], a[1])


def test_the_l2_random_start_has_a_uniform_radius_not_a_start_on_the_sphere() -> None:
    """Uniform in a 784-dimensional ball would put every start within 1% of the sphere, noise that
    PGD's small L2 steps barely shed; the radius is uniform in [0, eps] instead."""
    eps = 1.5
    radii = (
        lp_norm(random_start((2000, 1, 28, 28), eps, "l2", list(range(2000)), torch.device("cpu")), "l2")
        / eps
    )
    assert float(radii.max()) <= 1 + 1e-6
    assert 0.45 < float((radii < 0.5).float().mean()) < 0.55  # half the starts within half the radius
    assert 0.47 < float(radii.mean()) < 0.53


def test_dlr_loss_is_scale_and_shift_invariant() -> None:
    z = torch.tensor([[3.0, 1.0, -2.0, 0.5], [0.0, 2.0, 1.0, -1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(dlr_loss(z, y), dlr_loss(z * 7 + 3, y))
    assert dlr_loss(z, y)[0] < 0 < dlr_loss(z, y)[1]  # negative when correct, positive when wrong


def test_pgd_with_dlr_loss_breaks_the_sample_model() -> None:
    result = run_audit(
        AuditConfig(
            model=SAMPLES / "mnist_cnn.onnx",
            data=str(HOLDOUT),
            limit=200,
            eps=(0.15,),
            attacks=("pgd",),
            steps=20,
            loss="dlr",
        )
    )
    assert result.rows[0].robust_accuracy < 0.5 * result.clean_accuracy


def test_pgd_results_do_not_depend_on_batch_size(exports: dict[str, Path], small_npz: Path) -> None:
    config = AuditConfig(model=exports["legacy"], data=str(small_npz))
    handle = load_model(config, torch.device("cpu"))
    dataset = open_dataset(str(small_npz), expected_shape=handle.declared_shape)
    probe = torch.from_numpy(dataset.to_unit(dataset.read(np.arange(8)), (0.0, 1.0)))
    adapter = handle.bind(dataset.sample_shape, probe)
    preds = []
    for batch_size in (5, 64):
        records = evaluate(
            adapter,
            dataset,
            np.arange(len(dataset)),
            plan_cascade([FGSM(), PGD(steps=5, restarts=2)], ["l2"], (1.0,), pixels=1),
            batch_size=batch_size,
            seed=3,
            data_range=(0.0, 1.0),
        )
        preds.append(records.adversarial[("pgd", "l2", 1.0)].pred)
    assert np.array_equal(preds[0], preds[1])
