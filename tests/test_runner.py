"""The runner's contract: cascade invariants, targeted modes, the ART pass-through, and model state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robaudit.api import run_audit
from robaudit.attacks import build_attack
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.plan import Stage, plan_cascade
from robaudit.audit.preparation import prepare
from robaudit.audit.runner import evaluate
from robaudit.audit.shard import choose_targets
from robaudit.audit.summary import attack_rows
from robaudit.config import AuditConfig
from robaudit.errors import UsageError
from robaudit.results import WORST_CASE
from tests.conftest import small_cnn

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"
HOLDOUT = SAMPLES / "mnist_holdout.npz"


def audit(module: nn.Module, data: Path, **settings: object) -> object:
    return run_audit(AuditConfig(model=Path("in-memory"), data=str(data), **settings), module=module)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fragile() -> nn.Module:
    """A random-weight CNN: fragile enough that every attack fools some samples and not others."""
    return small_cnn(2)


@pytest.fixture(scope="module")
def own_label_npz(tmp_path_factory: pytest.TempPathFactory, fragile: nn.Module) -> Path:
    """40 real MNIST images, mostly labelled with the fragile model's own prediction (so most are
    clean-correct) and a few with a wrong label."""
    with np.load(HOLDOUT) as npz:
        x = npz["x"][:40]
    with torch.no_grad():
        y = fragile.eval()(torch.from_numpy(x.astype(np.float32) / 255).unsqueeze(1)).argmax(1).numpy()
    y[:4] = (y[:4] + 1) % 10
    path = tmp_path_factory.mktemp("own") / "own.npz"
    np.savez(path, x=x, y=y)
    return path


# --- invariants, property-based ------------------------------------------------------------------


def worst_case_masks(
    module: nn.Module, data: Path, stages: list[Stage] | None = None, seed: int = 0, **settings: object
) -> dict[tuple[str, float], np.ndarray]:
    """Each threat model's worst-case fooled mask, sample by sample, through the runner and the summary."""
    prepared = prepare(
        AuditConfig(model=Path("in-memory"), data=str(data), seed=seed, **settings), module=module
    )  # type: ignore[arg-type]
    try:
        stages = prepared.stages if stages is None else stages
        records = evaluate(
            prepared.adapter,
            prepared.dataset,
            prepared.indices,
            stages,
            batch_size=16,
            seed=seed,
            data_range=(0.0, 1.0),
        )
    finally:
        prepared.restore()
    _, masks = attack_rows(records, stages, "torch", prepared.adapter.num_classes)
    return masks


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    eps=st.lists(st.sampled_from([0.0, 0.01, 0.03, 0.06, 0.1]), min_size=1, max_size=3, unique=True),
    norm=st.sampled_from(["linf", "l2"]),
    seed=st.integers(0, 1000),
)
def test_cascade_invariants(
    fragile: nn.Module, own_label_npz: Path, eps: list[float], norm: str, seed: int
) -> None:
    scale = 1.0 if norm == "linf" else 10.0
    eps_t = tuple(e * scale for e in eps)
    common = dict(norms=(norm,), eps=eps_t, seed=seed, steps=3, batch_size=16)
    fgsm = audit(fragile, own_label_npz, attacks=("fgsm",), **common)
    both = audit(fragile, own_label_npz, attacks=("fgsm", "pgd"), **common)
    worst_fgsm = {r.eps: r.robust_accuracy for r in fgsm.rows if r.attack == WORST_CASE}  # type: ignore[attr-defined]
    worst_both = {r.eps: r.robust_accuracy for r in both.rows if r.attack == WORST_CASE}  # type: ignore[attr-defined]
    for result in (fgsm, both):
        for row in result.rows:  # type: ignore[attr-defined]
            assert row.robust_accuracy <= result.clean_accuracy  # type: ignore[attr-defined]
            if row.eps == 0:
                assert row.robust_accuracy == result.clean_accuracy  # type: ignore[attr-defined]
    ordered = sorted(eps_t)
    for small, large in zip(ordered, ordered[1:], strict=False):
        assert worst_both[large] <= worst_both[small]  # a larger eps never raises the worst case
        assert worst_fgsm[large] <= worst_fgsm[small]
    # The cascade is at least as strong as its strongest single attack, sample by sample: every sample
    # that FGSM alone or PGD alone fools, the cascade fools too.
    masks = {
        attacks: worst_case_masks(
            fragile, own_label_npz, attacks=attacks, norms=(norm,), eps=eps_t, seed=seed, steps=3
        )
        for attacks in (("fgsm",), ("pgd",), ("fgsm", "pgd"))
    }
    for e in eps_t:
        cascade = masks[("fgsm", "pgd")][(norm, e)]
        for single in (("fgsm",), ("pgd",)):
            alone = masks[single][(norm, e)]
            assert not (alone & ~cascade).any(), (single, e, np.flatnonzero(alone & ~cascade))
        assert worst_both[e] <= worst_fgsm[e]  # adding an attack never raises the worst case


@dataclass(frozen=True)
class SmallestEpsOnly:
    """FGSM at the smallest eps of the run, and no change at all at any larger eps or under L2: an
    attack that does not get stronger as eps grows."""

    smallest: float
    name: str = "smallest-eps-only"
    needs_gradients = True
    cost_rank = 0
    norms = ("linf", "l2")

    def __call__(self, model, x, y, *, eps, norm, seeds, targets=None):  # type: ignore[no-untyped-def]
        if norm == "linf" and eps == self.smallest:
            return build_attack("fgsm")(model, x, y, eps=eps, norm=norm, seeds=seeds, targets=targets)
        return x.clone()


def test_a_sample_fooled_at_a_smaller_eps_counts_as_fooled_at_every_larger_eps_of_its_norm(
    fragile: nn.Module, own_label_npz: Path
) -> None:
    eps = (0.05, 0.1, 0.2)
    stages = plan_cascade([SmallestEpsOnly(0.05)], ["linf", "l2"], eps, pixels=1)  # type: ignore[list-item]
    masks = worst_case_masks(fragile, own_label_npz, stages=stages)
    fooled_small = masks[("linf", 0.05)]
    assert 0 < fooled_small.sum() < len(fooled_small)  # the attack fools some samples at 0.05, not all
    for e in eps[1:]:
        # The attack alone fools nobody at 0.1 or 0.2; the worst case still holds every 0.05 success.
        assert np.array_equal(masks[("linf", e)], fooled_small), e
    for e in eps:
        assert not masks[("l2", e)].any()  # carried within a norm, never across norms


def test_robust_requires_clean_correct(fragile: nn.Module, own_label_npz: Path) -> None:
    """The four wrongly labelled samples can never count as robust, even at eps 0."""
    result = audit(fragile, own_label_npz, attacks=("fgsm",), eps=(0.0,))
    assert result.clean_accuracy == pytest.approx(36 / 40)  # type: ignore[attr-defined]
    assert result.rows[0].n_robust == 36  # type: ignore[attr-defined]


def test_a_limit_past_the_dataset_says_it_ran_them_all(fragile: nn.Module, own_label_npz: Path) -> None:
    result = audit(fragile, own_label_npz, attacks=("fgsm",), eps=(0.0,), limit=5000)
    assert result.data.n_evaluated == 40  # type: ignore[attr-defined]
    assert f"--limit 5000: {own_label_npz} holds only 40 images, so all 40 were evaluated" in result.notes  # type: ignore[attr-defined]
    within = audit(fragile, own_label_npz, attacks=("fgsm",), eps=(0.0,), limit=40)
    assert not any(n.startswith("--limit") for n in within.notes)  # type: ignore[attr-defined]


def test_the_bundled_mnist_note_says_it_holds_the_sample_models_training_images() -> None:
    result = run_audit(AuditConfig(model=SAMPLES / "mnist_cnn.pt", attacks=("fgsm",), eps=(0.0,), limit=10))
    note = result.notes[0]
    assert note.startswith("no --data given: evaluated on the bundled MNIST test set"), result.notes
    assert "training images of robaudit's sample models (0-7999)" in note
    assert "--data sample_models/mnist_holdout.npz" in note


def test_plan_orders_attacks_by_cost_and_gives_onepixel_its_own_threat_model() -> None:
    attacks = [build_attack(name, {"pixels": 3}) for name in ("onepixel", "pgd", "fgsm")]
    stages = plan_cascade(attacks, ["linf", "l2"], [0.2, 0.1], pixels=3)
    assert [(s.threat.norm, s.threat.eps) for s in stages] == [
        ("linf", 0.1),
        ("linf", 0.2),
        ("l2", 0.1),
        ("l2", 0.2),
        ("l0", 3.0),
    ]
    assert [a.name for a in stages[0].attacks] == ["fgsm", "pgd"]
    assert [a.name for a in stages[-1].attacks] == ["onepixel"]


# --- targeted modes ------------------------------------------------------------------------------


def test_random_targets_are_seeded_wrong_classes_spread_over_all_others() -> None:
    y = torch.arange(2000) % 10
    seeds = torch.from_numpy(sample_seeds(1, np.arange(2000)))
    logits = torch.randn(2000, 10)
    t, ok = choose_targets("random", logits, y, seeds)
    assert t is not None and bool(ok.all()) and bool((t != y).all())
    assert torch.equal(choose_targets("random", logits, y[:50], seeds[:50])[0], t[:50])  # per sample
    counts = torch.bincount((t - y) % 10, minlength=10)
    assert counts[0] == 0 and int(counts[1:].min()) > 150  # each of the 9 offsets about 222 times


def test_least_likely_and_fixed_targets() -> None:
    logits = torch.tensor([[3.0, 1.0, -2.0], [0.0, -5.0, 1.0], [-1.0, 2.0, 0.0]])
    y = torch.tensor([0, 2, 0])
    seeds = torch.zeros(3, dtype=torch.int64)
    t, ok = choose_targets("least-likely", logits, y, seeds)
    assert t is not None and t.tolist() == [2, 1, 0] and ok.tolist() == [True, True, False]
    t, ok = choose_targets("2", logits, y, seeds)
    assert t is not None and t.tolist() == [2, 2, 2] and ok.tolist() == [True, False, True]
    assert choose_targets("none", logits, y, seeds)[0] is None


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "onepixel"])
def test_targeted_attacks_hit_their_targets(fragile: nn.Module, own_label_npz: Path, attack: str) -> None:
    result = audit(
        fragile,
        own_label_npz,
        attacks=(attack,),
        eps=(0.3,),
        target="random",
        steps=20,
        population=60,
        generations=10,
    )
    row = result.rows[0]  # type: ignore[attr-defined]
    fooled = row.n_clean_correct - row.n_robust
    assert row.n_target_hits is not None and 0 < row.n_target_hits <= fooled
    if attack == "pgd":
        assert row.n_target_hits >= 0.8 * row.n_clean_correct  # a weak model, a large budget


def test_a_fixed_target_spares_samples_of_that_class(fragile: nn.Module, own_label_npz: Path) -> None:
    labels = np.load(own_label_npz)["y"]
    target = int(np.bincount(labels).argmax())
    result = audit(fragile, own_label_npz, attacks=("pgd",), eps=(0.5,), target=str(target), steps=20)
    row = result.rows[0]  # type: ignore[attr-defined]
    of_target = int(((labels == target)[4:]).sum())  # clean-correct samples already of the target class
    assert row.n_robust >= of_target
    assert row.n_target_hits == row.n_clean_correct - row.n_robust


def test_a_target_beyond_the_classes_is_a_usage_error(fragile: nn.Module, own_label_npz: Path) -> None:
    with pytest.raises(UsageError, match="--target 12: the model has 10 classes"):
        audit(fragile, own_label_npz, target="12")


# --- the model is handed back as it came ---------------------------------------------------------


class Dropping(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = small_cnn(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.body(x))


def test_audit_runs_in_eval_mode_and_restores_the_model(own_label_npz: Path) -> None:
    model = Dropping().train()
    model.body.fc.weight.requires_grad_(True)
    frozen_before = [p.requires_grad for p in model.parameters()]
    layout_before = [(p.stride(), p.clone()) for p in model.parameters()]
    first = audit(model, own_label_npz, attacks=("fgsm", "pgd"), eps=(0.1,), steps=5, channels_last=True)
    assert model.training and model.drop.training and model.body.training
    assert [p.requires_grad for p in model.parameters()] == frozen_before
    # --channels-last relaid the convolution weights for the audit; they come back as they were.
    assert [p.stride() for p in model.parameters()] == [stride for stride, _ in layout_before]
    assert all(torch.equal(p, value) for p, (_, value) in zip(model.parameters(), layout_before, strict=True))
    second = audit(model, own_label_npz, attacks=("fgsm", "pgd"), eps=(0.1,), steps=5)
    # Dropout in training mode would make the two audits differ.
    assert [r.n_robust for r in first.rows] == [r.n_robust for r in second.rows]  # type: ignore[attr-defined]
    assert first.clean_accuracy == second.clean_accuracy  # type: ignore[attr-defined]
    assert first.model.format == "in-memory Dropping"  # type: ignore[attr-defined]


def test_the_model_is_restored_when_the_audit_fails(own_label_npz: Path) -> None:
    model = Dropping().train()
    with pytest.raises(UsageError):
        audit(model, own_label_npz, target="99")
    assert model.training and all(p.requires_grad for p in model.parameters())


# --- ART pass-through ----------------------------------------------------------------------------


def test_art_pass_through_runs_an_art_attack_under_the_runner(
    fragile: nn.Module, own_label_npz: Path
) -> None:
    result = audit(
        fragile,
        own_label_npz,
        attacks=("art:BasicIterativeMethod",),
        attack_kwargs={"art:BasicIterativeMethod": {"max_iter": 5, "eps_step": 0.02, "verbose": False}},
        eps=(0.05,),
    )
    row = result.rows[0]  # type: ignore[attr-defined]
    assert row.attack == "art:BasicIterativeMethod"
    assert 0 < row.n_robust < row.n_clean_correct  # it ran with eps from the run, and fooled some
    assert result.settings["attack_kwargs"] == {  # type: ignore[attr-defined]
        "art:BasicIterativeMethod": {"max_iter": 5, "eps_step": 0.02, "verbose": False}
    }


def test_art_attack_outputs_are_held_to_the_run_eps_ball(fragile: nn.Module, own_label_npz: Path) -> None:
    """An ART attack told to use eps 0.5 in a run at eps 0.01 is projected back onto the run's ball,
    where FGSM's step lands exactly on the native FGSM's."""
    kwargs = {"art:FastGradientMethod": {"eps": 0.5}}
    art = audit(
        fragile, own_label_npz, attacks=("art:FastGradientMethod",), eps=(0.01,), attack_kwargs=kwargs
    )
    native = audit(fragile, own_label_npz, attacks=("fgsm",), eps=(0.01,))
    unprojected = audit(fragile, own_label_npz, attacks=("fgsm",), eps=(0.5,))
    assert art.rows[0].n_robust == native.rows[0].n_robust  # type: ignore[attr-defined]
    assert unprojected.rows[0].n_robust < native.rows[0].n_robust  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("art:NoSuchAttack", None, "ART has no evasion attack of that name"),
        ("art:FastGradientMethod", {"no_such_setting": 1}, "takes no no_such_setting; it takes"),
        ("art:FastGradientMethod", {"eps": -1.0}, "ART rejects the settings"),
        ("art:", None, "write an ART class name after art:"),
    ],
)
def test_art_mistakes_are_one_line_usage_errors(
    fragile: nn.Module, own_label_npz: Path, name: str, kwargs: dict[str, object] | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        audit(fragile, own_label_npz, attacks=(name,), attack_kwargs={name: kwargs} if kwargs else {})


def test_kwargs_for_an_attack_not_in_the_run_are_refused(fragile: nn.Module, own_label_npz: Path) -> None:
    with pytest.raises(UsageError, match="no such --attack in this run"):
        audit(fragile, own_label_npz, attacks=("fgsm",), attack_kwargs={"art:DeepFool": {}})


# --- robustness radius by bisection --------------------------------------------------------------


def test_bisected_radius_converges_to_the_exact_linear_radius(tmp_path: Path) -> None:
    """On a two-class linear model FGSM finds the minimal L∞ perturbation, margin / ||w_y - w_o||_1,
    so the bisected median must land just above the exact median radius."""
    from robaudit.metrics import median_radius
    from tests.test_attacks import linear_problem

    model, x, _ = linear_problem(200)
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample right on clean input, so the median is a real radius
    data = tmp_path / "linear.npz"
    np.savez(data, x=x.numpy(), y=y.numpy())
    sweep = (0.05, 0.1, 0.3)
    result = audit(model, data, attacks=("fgsm",), eps=sweep, radius_bisect=10)
    with torch.no_grad():
        logits = model(x)
    w = model.fc.weight.detach()
    margin = (logits.gather(1, y[:, None]) - logits.gather(1, (1 - y)[:, None]))[:, 0]
    exact = (margin / (w[y] - w[1 - y]).abs().sum(1)).numpy().astype(np.float64)
    exact = np.where(exact <= 0, 0.0, np.where(exact > max(sweep), np.inf, exact))
    radius = result.radius[0]  # type: ignore[attr-defined]
    assert radius.bisection_steps == 10
    assert radius.median in sweep  # the sweep alone only knows the grid
    assert radius.bisected_median is not None
    expected = median_radius(exact)
    assert expected is not None and expected not in sweep
    assert expected <= radius.bisected_median <= expected + (0.3 - 0.1) / 2**10 + 1e-6


def test_bisection_is_refused_for_targeted_runs(fragile: nn.Module, own_label_npz: Path) -> None:
    with pytest.raises(UsageError, match="--radius-bisect"):
        audit(fragile, own_label_npz, target="random", radius_bisect=3)


def test_l2_and_l1_budgets_may_exceed_one_but_linf_may_not(fragile: nn.Module, own_label_npz: Path) -> None:
    result = audit(fragile, own_label_npz, attacks=("fgsm",), norms=("l2",), eps=(2.0,))
    assert result.rows[0].eps == 2.0  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="larger than 1.*8/255"):
        AuditConfig(model=Path("m.onnx"), norms=("linf",), eps=(8.0,))


class OutOfBall:
    """A broken attack: its candidates leave the eps-ball (and would fool everything)."""

    name = "out-of-ball"
    needs_gradients = True
    cost_rank = 0
    norms = ("linf",)

    def __call__(self, model, x, y, *, eps, norm, seeds, targets=None):  # type: ignore[no-untyped-def]
        return (x + 0.5).clamp(0, 1)


def test_an_attack_that_leaves_the_ball_counts_for_nothing_and_is_reported(
    fragile: nn.Module, own_label_npz: Path
) -> None:
    from robaudit.audit.preparation import prepare
    from robaudit.audit.runner import evaluate

    prepared = prepare(AuditConfig(model=Path("in-memory"), data=str(own_label_npz)), module=fragile)
    try:
        stages = plan_cascade([OutOfBall(), build_attack("fgsm")], ["linf"], [0.05], pixels=1)  # type: ignore[list-item]
        records = evaluate(
            prepared.adapter,
            prepared.dataset,
            prepared.indices,
            stages,
            batch_size=16,
            seed=0,
            data_range=(0.0, 1.0),
        )
    finally:
        prepared.restore()
    key = ("out-of-ball", "linf", 0.05)
    assert "exceeded eps" in records.errors[key]
    clean_correct = records.clean_pred == records.labels
    assert bool((records.adversarial[key].pred[clean_correct] == records.labels[clean_correct]).all())
    fgsm = records.adversarial[("fgsm", "linf", 0.05)]
    assert bool((fgsm.pred != records.labels).any())  # the attack after it still ran


class _GpuMemoryAbove8(nn.Module):
    """Raises PyTorch's own CUDA out-of-memory error (the exception a GPU raises) on gradient batches
    above 8 samples; the exception type exists and is raised the same way on a machine without a GPU."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and x.shape[0] > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_gpu_out_of_memory_halves_the_batch_with_the_same_results(
    fragile: nn.Module, own_label_npz: Path
) -> None:
    settings = dict(attacks=("fgsm", "pgd"), steps=3, eps=(0.05,), checks=False)
    halved = audit(_GpuMemoryAbove8(fragile), own_label_npz, batch_size=32, **settings)
    direct = audit(fragile, own_label_npz, batch_size=8, **settings)
    assert halved.settings["batch_size_used"] == 8  # type: ignore[attr-defined]
    assert [(r.attack, r.n_robust) for r in halved.rows] == [(r.attack, r.n_robust) for r in direct.rows]  # type: ignore[attr-defined]


# --- --batch-size auto ---------------------------------------------------------------------------


def test_auto_batch_size_follows_the_memory_budget(fragile: nn.Module) -> None:
    """The probe's per-sample cost is real (measured on the model); the batch is the largest power of
    two whose cost fits the budget, and never larger than the data or the cap."""
    from robaudit.audit.batching import CAP, choose
    from robaudit.models.torch_model import module_handle

    config = AuditConfig(model=Path("in-memory"))
    x = torch.rand(8, 1, 28, 28)
    adapter = module_handle(fragile, config, torch.device("cpu")).bind((1, 28, 28), x)
    roomy = choose(adapter, x, 100_000, budget=1 << 40)
    assert roomy.batch_size == CAP
    per_sample = roomy.bytes_per_sample
    assert per_sample > 6 * 784 * 4  # more than the input-sized copies: the activations count too
    assert choose(adapter, x, 100_000, budget=64 * per_sample).batch_size == 64
    assert choose(adapter, x, 100_000, budget=64 * per_sample - 1).batch_size == 32
    assert choose(adapter, x, 40, budget=1 << 40).batch_size == 64  # the data, rounded up to a power of two
    assert choose(adapter, x, 100_000, budget=0).batch_size == 1


def test_auto_batch_size_is_recorded_and_changes_no_result(fragile: nn.Module, own_label_npz: Path) -> None:
    settings = dict(attacks=("fgsm", "pgd"), steps=3, eps=(0.05,), checks=False)
    auto = audit(fragile, own_label_npz, batch_size="auto", **settings)
    fixed = audit(fragile, own_label_npz, batch_size=7, **settings)
    chosen = auto.settings["batch_size"]  # type: ignore[attr-defined]
    assert auto.settings["batch_size_auto"] is True and chosen == 64  # type: ignore[attr-defined]
    assert any(note.startswith(f"--batch-size auto chose {chosen}") for note in auto.notes)  # type: ignore[attr-defined]
    assert [(r.attack, r.n_robust) for r in auto.rows] == [(r.attack, r.n_robust) for r in fixed.rows]  # type: ignore[attr-defined]


def test_channels_last_is_recorded_and_changes_no_outcome(fragile: nn.Module, own_label_npz: Path) -> None:
    settings = dict(attacks=("fgsm", "pgd"), steps=5, eps=(0.05, 0.1), checks=False)
    relaid = audit(fragile, own_label_npz, channels_last=True, **settings)
    plain = audit(fragile, own_label_npz, **settings)
    assert relaid.settings["channels_last"] is True and plain.settings["channels_last"] is False  # type: ignore[attr-defined]
    assert [(r.attack, r.eps, r.n_robust) for r in relaid.rows] == [
        (r.attack, r.eps, r.n_robust) for r in plain.rows
    ]  # type: ignore[attr-defined]


class _RecordsTf32(nn.Module):
    """Wraps a model and records the TF32 switches PyTorch holds whenever it runs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: set[tuple[bool, bool]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return self.inner(x)


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_switches_hold_for_the_audit_and_are_given_back(
    tf32: bool, fragile: nn.Module, own_label_npz: Path
) -> None:
    model = _RecordsTf32(fragile)
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    # The caller's own choice is the opposite of the audit's, so a leak in either direction shows.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not tf32
    try:
        result = audit(model, own_label_npz, attacks=("fgsm",), eps=(0.1,), checks=False, tf32=tf32)
        assert model.seen == {(tf32, tf32)}
        assert result.settings["tf32"] is tf32  # type: ignore[attr-defined]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (
            not tf32,
            not tf32,
        )
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


class _WithBatchNorm(nn.Module):
    """BatchNorm keeps a 0-dim buffer (num_batches_tracked), as does a scalar temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 26 * 26, 10)
        self.register_buffer("temperature", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1)) / self.temperature


def test_an_in_memory_model_with_batchnorm_is_audited_and_left_in_train_mode() -> None:
    torch.manual_seed(0)
    model = _WithBatchNorm().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = audit(model, HOLDOUT, limit=32, attacks=("fgsm",))
    assert result.rows[0].n_samples == 32 and len(result.model.sha256) == 64  # type: ignore[attr-defined]
    assert model.training  # eval for the audit, then back as it was found
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])  # running statistics untouched


def test_an_audit_inside_inference_mode_still_attacks(fragile: nn.Module, own_label_npz: Path) -> None:
    """A notebook cell under torch.inference_mode() or no_grad() gets the same audit as outside."""
    outside = audit(fragile, own_label_npz, attacks=("fgsm", "pgd"), steps=5)
    with torch.inference_mode():
        inside = audit(fragile, own_label_npz, attacks=("fgsm", "pgd"), steps=5)
    with torch.no_grad():
        no_grad = audit(fragile, own_label_npz, attacks=("fgsm", "pgd"), steps=5)
    for other in (inside, no_grad):
        assert [r.n_robust for r in other.rows] == [r.n_robust for r in outside.rows]  # type: ignore[attr-defined]
        assert not any(r.error for r in other.rows)  # type: ignore[attr-defined]
    assert min(r.n_robust for r in outside.rows) < outside.n_clean_correct  # type: ignore[attr-defined]


class _InterruptAtFirstBatch:
    """A progress sink that stands for Ctrl-C arriving before any batch has finished."""

    def add_task(self, description: str, total: int) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        raise KeyboardInterrupt


def test_an_interrupt_before_any_batch_finished_propagates(fragile: nn.Module) -> None:
    """With nothing finished there are no figures: the interrupt reaches the caller, not a result of NaNs."""
    config = AuditConfig(model=Path("in-memory"), data=str(HOLDOUT), limit=16, attacks=("fgsm",))
    flags = [p.requires_grad for p in fragile.parameters()]
    with pytest.raises(KeyboardInterrupt):
        run_audit(config, progress=_InterruptAtFirstBatch(), module=fragile)
    assert [p.requires_grad for p in fragile.parameters()] == flags  # the model is restored all the same


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_a_model_in_another_float_type_is_fed_its_own_type(
    fragile: nn.Module, own_label_npz: Path, dtype: torch.dtype
) -> None:
    import copy

    reference = audit(fragile, own_label_npz, attacks=("fgsm", "pgd"), steps=5)
    typed = copy.deepcopy(fragile).to(dtype)
    result = audit(typed, own_label_npz, attacks=("fgsm", "pgd"), steps=5)
    assert not any(r.error for r in result.rows)  # type: ignore[attr-defined]
    assert any(f"computes in {str(dtype).removeprefix('torch.')}" in n for n in result.notes)  # type: ignore[attr-defined]
    assert next(typed.parameters()).dtype == dtype  # the user's model keeps its type
    if dtype == torch.float64:  # the same model, more precisely: the same verdicts
        assert [r.n_robust for r in result.rows] == [r.n_robust for r in reference.rows]  # type: ignore[attr-defined]
    else:  # bfloat16 rounds the logits; the attacks still fool what they fooled in float32, give or take
        for row, ref in zip(result.rows, reference.rows, strict=True):  # type: ignore[attr-defined]
            assert abs(row.n_robust - ref.n_robust) <= 3


def test_the_library_takes_eps_as_the_cli_does_and_leaves_sys_path_alone(tmp_path: Path) -> None:
    import sys

    from robaudit.models import load_model

    config = AuditConfig(
        model=SAMPLES / "mnist_cnn_state.pt", arch="sample_models.lenet:LeNet", eps=("8/255", 0.1)
    )
    assert config.threat.eps == (8 / 255, 0.1)
    path_before = list(sys.path)
    load_model(config, torch.device("cpu"))
    assert sys.path == path_before


def test_an_audit_leaves_the_callers_random_state_alone(tmp_path: Path) -> None:
    """Building --arch, converting an ONNX graph and ART's attacks draw random numbers; the caller's
    torch and numpy generators come back as they were."""
    configs = [
        AuditConfig(
            model=SAMPLES / "mnist_cnn_state.pt", arch="sample_models.lenet:LeNet", data=str(HOLDOUT), limit=8
        ),
        AuditConfig(model=SAMPLES / "mnist_cnn.onnx", data=str(HOLDOUT), limit=8),
        AuditConfig(
            model=SAMPLES / "mnist_cnn.pt", data=str(HOLDOUT), limit=8, attacks=("art:FastGradientMethod",)
        ),
    ]
    for config in configs:
        torch.manual_seed(123)
        np.random.seed(123)
        torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
        run_audit(config)
        assert torch.equal(torch.get_rng_state(), torch_state), config.model
        after = np.random.get_state()
        assert after[1].tolist() == numpy_state[1].tolist() and after[2] == numpy_state[2], config.model
