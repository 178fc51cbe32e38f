"""Compare robaudit, ART, torchattacks and Foolbox on one model and one data set: time, success, memory, floor.

Run by hand from the repository root (never part of the test suite)::

    python benchmarks/compare_attacks.py --n 500 --n-onepixel 20 --json bench.json

Every tool attacks the same images of ``sample_models/mnist_holdout.npz`` (the first ``--n`` holdout
images that the sample LeNet classifies correctly) with the same model object
(``sample_models.lenet.LeNet`` + ``mnist_cnn_state.pt``, eval mode, weights frozen). Each
(tool, attack) cell runs in a fresh spawned process, so its peak RSS is its own; one warm-up call on a
few samples precedes the timed call, and model loading is never timed.

Success is recomputed here, never read from a tool: a sample counts as fooled when the model's
prediction on the returned x_adv differs from the true label. Every x_adv is also checked against the
threat model (L-inf ball of radius eps + 1e-6 for FGSM/PGD, L2 ball for PGD-L2, at most one changed
pixel location for one-pixel, values in [0, 1]) and a warning is printed for any violation. Foolbox
has no one-pixel attack; that cell is left out.

Floors (the physical lower bound for running the attack's full budget on this hardware), measured in
each cell's own process right before its warm-up, so that load from other processes slows the floor
and the attack alike:

* Gradient attacks (FGSM, PGD): ``steps x T_fb`` where ``T_fb`` is the time of one forward + backward
  pass with respect to the input over the same samples at the same batch size (median of a few
  repeats). FGSM has one step, PGD ``--pgd-steps`` (40). PGD's final check forward is not counted.
* PGD also gets a second floor, ``steps x T_fb`` over PGD's own inputs: a plain reference PGD run
  (random start, the same ε and step size, no early stopping) is computed untimed, and the time of one
  forward+backward sweep over each of its iterates is measured. On a CPU a pass over such inputs costs
  more than over the clean images (``benchmarks/floor_input.py``), so this floor isolates what the
  attack itself adds; the table shows the time over both floors.
* One-pixel: ``generations x population x t_img x n`` where ``t_img`` is the per-image time of a
  no-grad forward pass. It is measured twice, on a batch of ``population`` images and on a batch of
  16 x ``population`` images, and the faster per-image time is used: batching several samples'
  generations into one pass is a legal implementation choice, so the floor is the best rate the
  hardware offers. The initial population's evaluation is not counted.

``time / floor`` below 1 is possible: robaudit's PGD and every one-pixel implementation stop early
for samples already fooled, so they do not spend the full budget the floor assumes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robaudit.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_STATE = REPO_ROOT / "sample_models" / "mnist_cnn_state.pt"
HOLDOUT = REPO_ROOT / "sample_models" / "mnist_holdout.npz"

TOOLS = ("robaudit", "robaudit-full", "art", "torchattacks", "foolbox")
ATTACKS = ("fgsm", "pgd", "pgd-l2", "onepixel")
ATTACK_LABELS = {
    "fgsm": "FGSM",
    "pgd": "PGD-{steps} L-inf",
    "pgd-l2": "PGD-{steps} L2",
    "onepixel": "one-pixel",
}
# Foolbox 3 has no one-pixel attack; robaudit-full is robaudit's PGD without early stopping (the full
# budget for every sample, the figure to hold against the floor).
UNSUPPORTED = {("foolbox", "onepixel"), ("robaudit-full", "fgsm"), ("robaudit-full", "onepixel")}
SEED = 0
TOLERANCE = 1e-6  # float32 rounding in x + delta
PGD_REL_STEP = 2.5  # step size = 2.5 * eps / steps (Madry et al.)
WARMUP_SAMPLES = {"fgsm": 8, "pgd": 8, "pgd-l2": 8, "onepixel": 2}
FLOOR_REPEATS = 5
PGD_INPUTS_REPEATS = 3  # each repeat sweeps every iterate of a reference PGD run: steps sweeps
BIG_BATCH_FACTOR = 16  # the large one-pixel floor batch is 16 x population images
NUM_CLASSES = 10
# lenet: the sample LeNet on MNIST holdout images. resnet18: torchvision's ResNet-18 (11M parameters)
# with seeded random weights on seeded random CIFAR-10-shaped images labelled with its own predictions:
# a model of the size the GPU benchmark calls for, for timing only (its success rates mean nothing).
MODELS = ("lenet", "resnet18")
INPUT_SHAPES = {"lenet": (1, 28, 28), "resnet18": (3, 32, 32)}
SYNTHETIC_IMAGES = 2000

AttackFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y, seeds) -> x_adv


@dataclass(frozen=True)
class Settings:
    """What every cell needs to know; picklable so it crosses into the spawned process."""

    device: str  # "cpu" or "cuda", already resolved
    threads: int  # torch intra-op threads; 0 keeps torch's default
    eps: float
    eps_l2: float
    pgd_steps: int
    population: int
    generations: int
    batch_size: int
    repeats: int = 1  # timed calls per cell; the table shows their median
    model: str = "lenet"


@dataclass
class CellResult:
    tool: str
    attack: str
    n: int = 0
    seconds: float | None = None
    floor_s: float | None = None  # measured in the cell's own process, right before the warm-up
    floor_passes: dict[str, float] = field(default_factory=dict)
    floor_pgd_inputs_s: float | None = None  # PGD only: steps x one sweep over a reference PGD's iterates
    fooled: int | None = None
    model_images: int | None = None  # images sent through the model's forward during the timed call
    baseline_rss_mib: float | None = None  # RSS before the warm-up (imports, model, data, attack object)
    peak_rss_mib: float | None = None
    cuda_peak_mib: float | None = None
    violations: dict[str, int] = field(default_factory=dict)
    population: int | None = None  # one-pixel candidates per generation, as the tool runs it
    generations: int | None = None
    threads: int | None = None
    error: str | None = None

    @property
    def success_rate(self) -> float | None:
        return None if self.fooled is None or self.n == 0 else self.fooled / self.n

    @property
    def images_per_second(self) -> float | None:
        return None if not self.seconds else self.n / self.seconds

    @property
    def time_over_floor(self) -> float | None:
        return None if self.seconds is None or not self.floor_s else self.seconds / self.floor_s

    @property
    def time_over_pgd_inputs_floor(self) -> float | None:
        return (
            None
            if self.seconds is None or not self.floor_pgd_inputs_s
            else self.seconds / self.floor_pgd_inputs_s
        )


# ----------------------------------------------------------------------------- model, data, helpers


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return requested


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def set_seeds(seed: int = SEED) -> None:
    """Seed every generator the tools draw from (ART's and torchattacks' DE use NumPy's global one)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_model(device: str, name: str = "lenet") -> nn.Module:
    if name == "resnet18":
        from torchvision.models import resnet18

        torch.manual_seed(SEED)
        model = resnet18(num_classes=NUM_CLASSES)
    else:
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        from sample_models.lenet import LeNet

        model = LeNet(num_classes=NUM_CLASSES)
        model.load_state_dict(torch.load(MODEL_STATE, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False).to(device)


def synthetic_images(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random images, labelled with the (seeded) model's own predictions on the CPU."""
    x = np.random.default_rng(SEED).random((SYNTHETIC_IMAGES, *INPUT_SHAPES[name]), dtype=np.float32)
    model = load_model("cpu", name)
    with torch.no_grad():
        y = torch.cat([model(torch.from_numpy(x[i : i + 250])).argmax(1) for i in range(0, len(x), 250)])
    return x, y.numpy().astype(np.int64)


def load_holdout(indices: Sequence[int] | None = None, name: str = "lenet") -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 NCHW on [0, 1] and int64 labels (all, or the given indices)."""
    if name != "lenet":
        x, y = synthetic_images(name)
        return (x, y) if indices is None else (x[np.asarray(indices)], y[np.asarray(indices)])
    with np.load(HOLDOUT) as data:
        x, y = data["x"], data["y"]
    if indices is not None:
        x, y = x[np.asarray(indices)], y[np.asarray(indices)]
    x = x.astype(np.float32) / 255.0
    if x.ndim == 3:  # (N, H, W) -> (N, 1, H, W)
        x = x[:, None]
    return x, y.astype(np.int64)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def select_correct(
    model: nn.Module, device: str, n: int, batch_size: int, name: str = "lenet"
) -> tuple[list[int], int]:
    """Indices of the first ``n`` images classified correctly, and how many were scanned."""
    x, y = load_holdout(name=name)
    pred = predict(model, torch.from_numpy(x).to(device), batch_size).cpu().numpy()
    correct = np.flatnonzero(pred == y)
    if len(correct) < n:
        raise SystemExit(f"only {len(correct)} holdout images are classified correctly; lower --n")
    chosen = correct[:n]
    return [int(i) for i in chosen], int(chosen[-1]) + 1 if n else 0


def rss_mib() -> float:
    """Current resident set size in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process's own address space.
    ru_maxrss is not used there because Linux carries it across fork + exec, so a spawned child would
    report its parent's peak whenever that is higher. Elsewhere: ru_maxrss (KiB; bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def batched(
    fn: AttackFn, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, batch_size: int
) -> torch.Tensor:
    return torch.cat(
        [
            fn(x[i : i + batch_size], y[i : i + batch_size], seeds[i : i + batch_size])
            for i in range(0, len(x), batch_size)
        ]
    )


def effective_population(tool: str, population: int, channels: int = 1) -> int:
    """Candidates per generation each tool really evaluates for a one-pixel attack.

    ART and torchattacks run SciPy-style DE whose population is ``popsize x len(bounds)`` with
    ``len(bounds) = 2 + channels`` per pixel; ART hard-codes ``popsize = 400 // len(bounds)``.
    """
    n_params = 2 + channels
    if tool == "art":
        return max(5, max(1, 400 // n_params) * n_params)
    if tool == "torchattacks":
        return max(5, max(1, population // n_params) * n_params)
    return population


# ----------------------------------------------------------------------------- the three tools


def build_robaudit(attack: str, model: nn.Module, s: Settings, early_stop: bool = True) -> AttackFn:
    kwargs: dict[str, Any]
    if attack == "fgsm":
        from robaudit.attacks.fgsm import FGSM

        atk: Any = FGSM()
        kwargs = {"eps": s.eps, "norm": "linf"}
    elif attack == "pgd":
        from robaudit.attacks.pgd import PGD

        atk = PGD(steps=s.pgd_steps, rel_step_size=PGD_REL_STEP, loss="ce", early_stop=early_stop)
        kwargs = {"eps": s.eps, "norm": "linf"}
    elif attack == "pgd-l2":
        from robaudit.attacks.pgd import PGD

        atk = PGD(steps=s.pgd_steps, rel_step_size=PGD_REL_STEP, loss="ce", early_stop=early_stop)
        kwargs = {"eps": s.eps_l2, "norm": "l2"}
    else:
        from robaudit.attacks.onepixel import OnePixel

        atk = OnePixel(pixels=1, population=s.population, generations=s.generations)
        kwargs = {"eps": 1, "norm": "l0"}

    def one_batch(x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return atk(model, x, y, seeds=seeds, **kwargs)

    return lambda x, y, seeds: batched(one_batch, x, y, seeds, s.batch_size)


def build_art(attack: str, model: nn.Module, s: Settings) -> AttackFn:
    from art.attacks.evasion import FastGradientMethod, PixelAttack, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=INPUT_SHAPES[s.model],
        nb_classes=NUM_CLASSES,
        clip_values=(0.0, 1.0),
        device_type="gpu" if s.device == "cuda" else "cpu",
    )
    atk: Any
    if attack == "fgsm":
        atk = FastGradientMethod(classifier, norm=np.inf, eps=s.eps, batch_size=s.batch_size)
    elif attack in ("pgd", "pgd-l2"):
        eps = s.eps if attack == "pgd" else s.eps_l2
        atk = ProjectedGradientDescent(
            classifier,
            norm=np.inf if attack == "pgd" else 2,
            eps=eps,
            eps_step=PGD_REL_STEP * eps / s.pgd_steps,
            max_iter=s.pgd_steps,
            num_random_init=1,
            batch_size=s.batch_size,
            verbose=False,
        )
    else:
        # th is the number of pixels; th=None would binary-search it over 1..127 (not a one-pixel attack).
        atk = PixelAttack(classifier, th=1, es=1, max_iter=s.generations, targeted=False, verbose=False)

    def run(x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        # ART's DE divides by a population spread that is 0 once all energies tie: a harmless warning.
        with np.errstate(divide="ignore"):
            x_adv = atk.generate(x=x.cpu().numpy(), y=y.cpu().numpy())
        return torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).to(x.device)

    return run


def build_torchattacks(attack: str, model: nn.Module, s: Settings) -> AttackFn:
    import torchattacks

    atk: Any
    if attack == "fgsm":
        atk = torchattacks.FGSM(model, eps=s.eps)
    elif attack == "pgd":
        alpha = PGD_REL_STEP * s.eps / s.pgd_steps
        atk = torchattacks.PGD(model, eps=s.eps, alpha=alpha, steps=s.pgd_steps, random_start=True)
    elif attack == "pgd-l2":
        alpha = PGD_REL_STEP * s.eps_l2 / s.pgd_steps
        atk = torchattacks.PGDL2(model, eps=s.eps_l2, alpha=alpha, steps=s.pgd_steps, random_start=True)
    else:
        pop = effective_population("torchattacks", s.population, INPUT_SHAPES[s.model][0])
        # popsize is split over the 3 DE parameters; inf_batch = population: one forward per generation.
        atk = torchattacks.OnePixel(model, pixels=1, steps=s.generations, popsize=s.population, inf_batch=pop)
    return lambda x, y, seeds: batched(lambda xb, yb, sb: atk(xb, yb), x, y, seeds, s.batch_size)


def build_foolbox(attack: str, model: nn.Module, s: Settings) -> AttackFn:
    import foolbox

    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0), device=s.device)
    atk: Any
    if attack == "fgsm":
        atk, eps = foolbox.attacks.FGSM(), s.eps
    elif attack == "pgd":
        atk, eps = (
            foolbox.attacks.LinfPGD(abs_stepsize=PGD_REL_STEP * s.eps / s.pgd_steps, steps=s.pgd_steps),
            s.eps,
        )
    elif attack == "pgd-l2":
        atk = foolbox.attacks.L2PGD(abs_stepsize=PGD_REL_STEP * s.eps_l2 / s.pgd_steps, steps=s.pgd_steps)
        eps = s.eps_l2
    else:
        raise ValueError("Foolbox has no one-pixel attack")

    def one_batch(x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        _raw, clipped, _success = atk(fmodel, x, y, epsilons=eps)
        return clipped

    return lambda x, y, seeds: batched(one_batch, x, y, seeds, s.batch_size)


BUILDERS: dict[str, Callable[[str, nn.Module, Settings], AttackFn]] = {
    "robaudit": build_robaudit,
    "robaudit-full": lambda attack, model, s: build_robaudit(attack, model, s, early_stop=False),
    "art": build_art,
    "torchattacks": build_torchattacks,
    "foolbox": build_foolbox,
}


# ----------------------------------------------------------------------------- one cell (child process)


def threat_model_violations(attack: str, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> dict[str, int]:
    """``eps`` is the attack's own radius (L2 for PGD-L2)."""
    """Samples whose x_adv leaves the threat model: the eps-ball (or one-pixel budget), [0, 1], finite."""
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv has shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}")
    delta = (x_adv - x).flatten(1)
    if attack == "onepixel":
        changed = ((x_adv - x).abs() > TOLERANCE).any(1).flatten(1).sum(1)  # pixel locations, any channel
        over_budget = changed > 1
    elif attack == "pgd-l2":
        over_budget = delta.norm(dim=1) > eps + TOLERANCE
    else:
        over_budget = delta.abs().amax(1) > eps + TOLERANCE
    return {
        "outside_eps_ball": int(over_budget.sum()),
        "outside_0_1": int(((x_adv < 0) | (x_adv > 1)).flatten(1).any(1).sum()),
        "non_finite": int((~torch.isfinite(x_adv)).flatten(1).any(1).sum()),
    }


def run_cell(tool: str, attack: str, indices: list[int], s: Settings) -> CellResult:
    """Load, warm up, time one attack by one tool on ``indices``, verify x_adv. Runs in a fresh process."""
    set_threads(s.threads)
    result = CellResult(tool=tool, attack=attack, n=len(indices), threads=torch.get_num_threads())
    if attack == "onepixel":
        result.population = effective_population(tool, s.population, INPUT_SHAPES[s.model][0])
        result.generations = s.generations
    try:
        model = load_model(s.device, s.model)
        x_np, y_np = load_holdout(indices, s.model)
        x, y = torch.from_numpy(x_np).to(s.device), torch.from_numpy(y_np).to(s.device)
        seeds = torch.tensor(indices, dtype=torch.int64, device=s.device)  # one seed per holdout image
        result.floor_s, result.floor_passes = measure_floor(attack, model, x, y, s)
        if attack in ("pgd", "pgd-l2"):
            sweep = pgd_inputs_sweep(attack, model, x, y, s)
            result.floor_passes["fwd_bwd_sweep_pgd_inputs_s"] = sweep
            result.floor_pgd_inputs_s = s.pgd_steps * sweep
        counter = [0]
        hook = model.register_forward_pre_hook(
            lambda _m, inputs: counter.__setitem__(0, counter[0] + len(inputs[0]))
        )
        fn = BUILDERS[tool](attack, model, s)
        result.baseline_rss_mib = rss_mib()
        reset_peak_rss()  # the peak then covers the warm-up and the timed call only
        if s.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        k = WARMUP_SAMPLES[attack]
        set_seeds()
        fn(x[:k], y[:k], seeds[:k])
        sync(s.device)

        times = []
        for _ in range(s.repeats):  # the median of several timed calls resists a noisy machine
            set_seeds()
            counter[0] = 0
            start = time.perf_counter()
            x_adv = fn(x, y, seeds)
            sync(s.device)
            times.append(time.perf_counter() - start)
        result.seconds = statistics.median(times)
        result.model_images = counter[0]
        result.peak_rss_mib = peak_rss_mib()
        if s.device == "cuda":
            result.cuda_peak_mib = torch.cuda.max_memory_allocated() / 2**20
        hook.remove()

        x_adv = x_adv.to(s.device, torch.float32)
        result.violations = threat_model_violations(
            attack, x, x_adv, s.eps_l2 if attack == "pgd-l2" else s.eps
        )
        result.fooled = int((predict(model, x_adv, s.batch_size) != y).sum())
    except Exception as exc:  # noqa: BLE001 - report the failure in the table instead of aborting the whole run
        traceback.print_exc()
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def run_cell_in_fresh_process(tool: str, attack: str, indices: list[int], s: Settings) -> CellResult:
    ctx = mp.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(run_cell, tool, attack, indices, s).result()
    except BrokenProcessPool as exc:  # the child died (out of memory, a crash in native code)
        return CellResult(tool=tool, attack=attack, n=len(indices), error=f"process died: {exc}")


# ----------------------------------------------------------------------------- floors


def median_time(fn: Callable[[], object], device: str, repeats: int = FLOOR_REPEATS) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    """One forward + backward pass w.r.t. the input over all of x, in batches (one PGD step's work)."""
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].detach().requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(xb), y[i : i + batch_size], reduction="sum")
            torch.autograd.grad(loss, xb)


def forward_only(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def measure_floor(
    attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings
) -> tuple[float, dict[str, float]]:
    """The attack's floor in seconds on these samples, and the pass times it is made of."""
    if attack in ("fgsm", "pgd", "pgd-l2"):
        sweep = median_time(lambda: forward_backward_sweep(model, x, y, s.batch_size), s.device)
        steps = 1 if attack == "fgsm" else s.pgd_steps
        return steps * sweep, {"fwd_bwd_sweep_s": sweep}
    small = x[torch.arange(s.population, device=x.device) % len(x)]
    big = x[torch.arange(BIG_BATCH_FACTOR * s.population, device=x.device) % len(x)]
    per_image_small = median_time(lambda: forward_only(model, small), s.device) / len(small)
    per_image_big = median_time(lambda: forward_only(model, big), s.device, repeats=3) / len(big)
    floor = s.generations * s.population * min(per_image_small, per_image_big) * len(x)
    return floor, {
        "fwd_per_image_s_population": per_image_small,
        "fwd_per_image_s_16x_population": per_image_big,
    }


def reference_pgd_iterates(
    attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings
) -> list[torch.Tensor]:
    """The inputs a plain PGD run (Madry et al.: random start, step 2.5 eps / steps, no early stop) feeds
    the model at each of its steps: x_0 (the random start) to x_{steps-1}."""
    norm, eps = ("linf", s.eps) if attack == "pgd" else ("l2", s.eps_l2)
    alpha = PGD_REL_STEP * eps / s.pgd_steps
    g = torch.Generator(device=x.device).manual_seed(SEED)
    if norm == "linf":
        start = (torch.rand(x.shape, generator=g, device=x.device) * 2 - 1) * eps
    else:
        d = torch.randn(x.shape, generator=g, device=x.device).flatten(1)
        start = (
            d / d.norm(dim=1, keepdim=True) * eps * torch.rand(len(x), 1, generator=g, device=x.device)
        ).view_as(x)
    x_adv = (x + start).clamp(0, 1)
    iterates = []
    for _ in range(s.pgd_steps):
        iterates.append(x_adv)
        grads = []
        for i in range(0, len(x), s.batch_size):
            xb = x_adv[i : i + s.batch_size].detach().requires_grad_(True)
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(model(xb), y[i : i + s.batch_size], reduction="sum")
                grads.append(torch.autograd.grad(loss, xb)[0])
        grad = torch.cat(grads)
        if norm == "linf":
            delta = (x_adv + alpha * grad.sign() - x).clamp(-eps, eps)
        else:
            flat = grad.flatten(1)
            step = (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(x)
            delta = (x_adv + alpha * step - x).flatten(1)
            delta = (delta * (eps / delta.norm(dim=1, keepdim=True).clamp_min(eps))).view_as(x)
        x_adv = (x + delta).clamp(0, 1).detach()
    return iterates


def pgd_inputs_sweep(attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings) -> float:
    """One forward+backward sweep's time over PGD's own inputs: the time of a sweep over every iterate of
    a reference PGD run (median of a few repeats), divided by the number of iterates."""
    iterates = reference_pgd_iterates(attack, model, x, y, s)

    def sweeps() -> None:
        for x_it in iterates:
            forward_backward_sweep(model, x_it, y, s.batch_size)

    seconds = median_time(sweeps, s.device, repeats=PGD_INPUTS_REPEATS) / len(iterates)
    iterates.clear()  # freed before the attack's peak memory is measured
    return seconds


# ----------------------------------------------------------------------------- report


def cpu_info() -> dict[str, Any]:
    """CPU model name (the first "model name" of /proc/cpuinfo) and number of logical processors."""
    names: list[str] = []
    processors = 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                names += [value.strip()] if key.strip() == "model name" else []
                processors += key.strip() == "processor"
    except OSError:
        pass
    return {
        "model": names[0] if names else platform.processor() or "unknown",
        "logical_cores": processors or os.cpu_count() or 0,
    }


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(device: str) -> dict[str, Any]:
    cpu = cpu_info()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "art": package_version("adversarial-robustness-toolbox"),
        "torchattacks": package_version("torchattacks"),
        "foolbox": package_version("foolbox"),
        "numpy": np.__version__,
        "scipy": package_version("scipy"),
        "robaudit_commit": commit,
        "cpu": cpu["model"],
        "cpu_logical_cores": cpu["logical_cores"],
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "malloc": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else cpu["model"],
    }


def warn_if_busy(env: dict[str, Any]) -> None:
    """Timings assume an otherwise idle machine: warn when the 1-minute load average says otherwise."""
    load = env.get("load_average_at_start")
    if load and load[0] > 0.5:
        print(
            f"WARNING: 1-minute load average is {load[0]:.2f} on {env['cpu_logical_cores']} logical cores; "
            "other processes will distort the timings",
            file=sys.stderr,
        )


def attack_label(attack: str, s: Settings) -> str:
    return ATTACK_LABELS[attack].format(steps=s.pgd_steps)


def valid_cell(r: CellResult) -> str:
    bad = {k: v for k, v in r.violations.items() if v}
    return "yes" if not bad else "NO: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in bad.items())


def table_row(r: CellResult, s: Settings, cuda: bool) -> list[str]:
    label = attack_label(r.attack, s)
    if r.error is not None:
        cells = [label, r.tool, str(r.n), f"error: {r.error}"] + ["-"] * (8 + cuda)
        return cells
    assert r.seconds is not None and r.success_rate is not None and r.peak_rss_mib is not None
    rss = f"{r.peak_rss_mib:.0f} (+{r.peak_rss_mib - (r.baseline_rss_mib or 0):.0f})"
    row = [
        label,
        r.tool,
        str(r.n),
        f"{100 * r.success_rate:.1f}% ({r.fooled}/{r.n})",
        f"{r.seconds:.2f}",
        f"{r.images_per_second:,.0f}" if r.images_per_second else "-",
        f"{r.floor_s:.2f}" if r.floor_s else "-",
        f"{r.time_over_floor:.2f}" if r.time_over_floor else "-",
        f"{r.time_over_pgd_inputs_floor:.2f}" if r.time_over_pgd_inputs_floor else "-",
        f"{r.model_images:,}",
        rss,
    ]
    if cuda:
        row.append(f"{r.cuda_peak_mib:.0f}" if r.cuda_peak_mib is not None else "-")
    row.append(valid_cell(r))
    return row


def markdown_table(results: list[CellResult], s: Settings) -> str:
    cuda = s.device == "cuda"
    header = ["attack", "tool", "n", "success", "time (s)", "images/s", "floor (s)", "time / floor"]
    header += ["time / floor on PGD's inputs"]
    header += ["images through model", "peak RSS MiB (+ over start)"]
    header += ["peak CUDA MiB"] if cuda else []
    header += ["x_adv valid"]
    rows = [table_row(r, s, cuda) for r in results]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def span(values: list[float], scale: float, unit: str, digits: int) -> str:
    lo, hi = min(values) * scale, max(values) * scale
    return (
        f"{lo:.{digits}f} {unit}"
        if f"{lo:.{digits}f}" == f"{hi:.{digits}f}"
        else f"{lo:.{digits}f}-{hi:.{digits}f} {unit}"
    )


def notes(results: list[CellResult], s: Settings, scanned: int, n_attack: dict[str, int]) -> list[str]:
    sizes = ", ".join(f"{attack_label(a, s)} the first {n}" for a, n in n_attack.items())
    out = [
        f"Samples: only correctly classified holdout images are attacked ({max(n_attack.values())} among the "
        f"first {scanned}); {sizes}. Success = prediction on x_adv != label, recomputed by this script.",
        "Floors are measured in each cell's own process right before its warm-up, so every ratio compares "
        "times taken under the same conditions.",
    ]
    sweeps = [r.floor_passes["fwd_bwd_sweep_s"] for r in results if "fwd_bwd_sweep_s" in r.floor_passes]
    if sweeps:
        out.append(
            f"Gradient floor = steps x one forward+backward sweep w.r.t. the input over the samples "
            f"(batch {s.batch_size}, median of {FLOOR_REPEATS}): {span(sweeps, 1, 's', 3)} on {n_attack.get('pgd', n_attack.get('pgd-l2', n_attack.get('fgsm')))} "
            f"samples; FGSM 1 step, PGD {s.pgd_steps} steps."
        )
    pgd_inputs = [
        r.floor_passes["fwd_bwd_sweep_pgd_inputs_s"] / r.floor_passes["fwd_bwd_sweep_s"]
        for r in results
        if "fwd_bwd_sweep_pgd_inputs_s" in r.floor_passes
    ]
    if pgd_inputs:
        out.append(
            f"PGD's second floor = steps x one sweep over the iterates of a plain reference PGD run "
            f"(median of {PGD_INPUTS_REPEATS}); such a sweep took {span(pgd_inputs, 1, 'x', 3)} a sweep "
            f"over the clean images."
        )
    onepixel = [r.floor_passes for r in results if "fwd_per_image_s_population" in r.floor_passes]
    if onepixel:
        small = [p["fwd_per_image_s_population"] for p in onepixel]
        big = [p["fwd_per_image_s_16x_population"] for p in onepixel]
        out.append(
            f"One-pixel floor = {s.generations} generations x {s.population} candidates x n x the faster "
            f"per-image forward time: {span(small, 1e6, 'us', 1)} per image in a batch of {s.population}, "
            f"{span(big, 1e6, 'us', 1)} in a batch of {BIG_BATCH_FACTOR * s.population}."
        )
        pops = sorted({(r.tool, r.population) for r in results if r.attack == "onepixel"})
        out.append("One-pixel candidates per generation: " + ", ".join(f"{t} {p}" for t, p in pops) + ".")
    return out


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--n", type=int, default=1000, help="samples for FGSM and PGD (default 1000)")
    p.add_argument(
        "--n-onepixel",
        type=int,
        default=20,
        # ART and torchattacks take 2.5 to 4 s per one-pixel image, on a 2-core CPU and on an H100 alike.
        help="samples for one-pixel (default 20)",
    )
    p.add_argument("--eps", type=float, default=0.1, help="L-inf radius for FGSM and PGD (default 0.1)")
    p.add_argument("--eps-l2", type=float, default=1.5, help="L2 radius for PGD-L2 (default 1.5)")
    p.add_argument("--pgd-steps", type=int, default=40)
    p.add_argument(
        "--malloc",
        choices=("scan", "default"),
        default="scan",
        help="glibc malloc thresholds in every cell: 'scan' (default) as `robaudit scan` sets them, for "
        "every tool alike; 'default' leaves glibc's own (timings then depend on what a process freed before)",
    )
    p.add_argument("--population", type=int, default=400)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument(
        "--model", choices=MODELS, default="lenet", help="lenet (default) or resnet18 (timing only)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed calls per cell; the median is shown (default 3)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads in every process (default: torch's)")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    p.add_argument(
        "--attacks", default=",".join(ATTACKS), help=f"comma-separated subset of {','.join(ATTACKS)}"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers to this file")
    args = p.parse_args(argv)
    args.tools = parse_subset(p, "--tools", args.tools, TOOLS)
    args.attacks = parse_subset(p, "--attacks", args.attacks, ATTACKS)
    return args


def parse_subset(p: argparse.ArgumentParser, flag: str, value: str, allowed: Sequence[str]) -> list[str]:
    chosen = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        p.error(f"{flag}: choose from {', '.join(allowed)} (got {value!r})")
    return [a for a in allowed if a in chosen]  # canonical order


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    n_onepixel = args.n_onepixel
    s = Settings(
        device,
        args.threads,
        args.eps,
        args.eps_l2,
        args.pgd_steps,
        args.population,
        args.generations,
        args.batch_size,
        args.repeats,
        args.model,
    )
    set_threads(s.threads)
    set_seeds()
    if args.malloc == "scan":  # the spawned cells inherit the environment; glibc reads it at start-up
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        os.environ["MALLOC_TRIM_THRESHOLD_"] = str(TRIM_THRESHOLD)

    model = load_model(device, s.model)
    n_attack = {a: (n_onepixel if a == "onepixel" else args.n) for a in args.attacks}
    indices, scanned = select_correct(model, device, max(n_attack.values()), args.batch_size, s.model)
    env = environment(device)
    print(
        f"# {env['device_name']} ({env['cpu_logical_cores']} logical cores, {env['torch_threads']} torch threads)"
    )
    warn_if_busy(env)
    del model

    results: list[CellResult] = []
    for attack in args.attacks:
        for tool in args.tools:
            if (tool, attack) in UNSUPPORTED:
                continue
            print(f"# {tool}: {attack_label(attack, s)} on {n_attack[attack]} samples ...", flush=True)
            r = run_cell_in_fresh_process(tool, attack, indices[: n_attack[attack]], s)
            results.append(r)
            if r.error:
                print(f"WARNING: {tool} {attack} failed: {r.error}", file=sys.stderr)
            elif any(r.violations.values()):
                print(
                    f"WARNING: {tool} {attack}: x_adv outside the threat model: {r.violations}",
                    file=sys.stderr,
                )

    print()
    print(markdown_table(results, s))
    print()
    for line in notes(results, s, scanned, n_attack):
        print(f"- {line}")
    env["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if args.json is not None:
        payload = {
            "environment": env,
            "settings": asdict(s) | {"n": args.n, "n_onepixel": n_onepixel, "seed": SEED},
            "cells": [
                asdict(r)
                | {
                    "success_rate": r.success_rate,
                    "time_over_floor": r.time_over_floor,
                    "time_over_pgd_inputs_floor": r.time_over_pgd_inputs_floor,
                    "images_per_second": r.images_per_second,
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"- raw numbers written to {args.json}")


if __name__ == "__main__":
    main()
