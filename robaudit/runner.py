"""The runner: clean pass, attack cascade per eps, verification of every x_adv, per-sample records.

The attack proposes, the runner verifies: every candidate is checked against the threat model with
an explicit raise, and predictions are recomputed on the reference runtime, never taken from the attack.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from robaudit.attacks import rng
from robaudit.attacks.norms import lp_norm
from robaudit.attacks.pgd import PGD
from robaudit.data import Dataset
from robaudit.errors import (
    InputError,
    ResourceError,
    UsageError,
    VerificationError,
    is_out_of_memory,
    one_line,
)
from robaudit.models import ModelAdapter
from robaudit.plan import Stage

if TYPE_CHECKING:
    from robaudit.checkpoint import RunDir

NORM_TOLERANCE = 1e-6  # float32 rounding in x + delta


class ProgressSink(Protocol):
    """Where the runner reports progress; the terminal reporter implements it with Rich."""

    def add_task(self, description: str, total: int) -> int: ...

    def advance(self, task: int, n: int) -> None: ...


class NullProgress:
    def add_task(self, description: str, total: int) -> int:
        return 0

    def advance(self, task: int, n: int) -> None:
        return None


def sample_seeds(run_seed: int, indices: np.ndarray) -> np.ndarray:
    """One seed per sample from (run seed, sample index) by SplitMix64, independent of batching."""
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        z = (
            np.uint64(run_seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
            + indices.astype(np.uint64)
            + np.uint64(1)
        ) & mask
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


@dataclass
class AttackRecords:
    """Per-sample outcome of one stage's cascade up to and including one attack."""

    pred: np.ndarray
    conf: np.ndarray
    fooled_converted: np.ndarray  # flipped on the differentiable model the attack used
    target_hit: np.ndarray  # targeted runs: classified as the target
    linf: np.ndarray  # norms of the sample's current x_adv - x (0 where no attack ran)
    l2: np.ndarray
    l0: np.ndarray
    seconds: float = 0.0

    @classmethod
    def empty(cls, n: int) -> AttackRecords:
        return cls(
            np.zeros(n, np.int64),
            np.zeros(n, np.float64),
            np.zeros(n, bool),
            np.zeros(n, bool),
            np.zeros(n, np.float64),
            np.zeros(n, np.float64),
            np.zeros(n, np.float64),
        )


RecordKey = tuple[str, str, float]  # (attack name, norm, eps)


@dataclass
class SampleRecords:
    indices: np.ndarray
    labels: np.ndarray
    clean_pred: np.ndarray
    clean_conf: np.ndarray
    targets: np.ndarray | None  # targeted runs: each sample's target class (-1: not attacked)
    adversarial: dict[RecordKey, AttackRecords] = field(default_factory=dict)
    errors: dict[RecordKey, str] = field(default_factory=dict)  # attacks that failed, with why
    batch_size_used: int = 0  # the smallest batch the run fell back to after running out of memory
    completed: int = 0  # samples (from the start of ``indices``) whose batches finished
    interrupted: bool = False
    # Per threat model (norm, eps): the first few successes for the report's gallery, and (when asked)
    # every success, as {position in indices: (attack name, x, x_adv)} with images (C, H, W) on [0, 1].
    examples: dict[tuple[str, float], dict[int, tuple[str, np.ndarray, np.ndarray]]] = field(
        default_factory=dict
    )
    saved: dict[tuple[str, float], dict[int, tuple[str, np.ndarray]]] = field(default_factory=dict)
    clean_seconds: float = 0.0


def completed_part(records: SampleRecords) -> SampleRecords:
    """The records of the samples whose batches finished (all of them unless interrupted)."""
    n = records.completed
    if n == len(records.indices):
        return records
    cut = slice(0, n)
    fields_ = ("pred", "conf", "fooled_converted", "target_hit", "linf", "l2", "l0")
    adversarial = {
        key: AttackRecords(**{f: getattr(rec, f)[cut] for f in fields_}, seconds=rec.seconds)
        for key, rec in records.adversarial.items()
    }
    return SampleRecords(
        indices=records.indices[cut],
        labels=records.labels[cut],
        clean_pred=records.clean_pred[cut],
        clean_conf=records.clean_conf[cut],
        targets=None if records.targets is None else records.targets[cut],
        adversarial=adversarial,
        errors=dict(records.errors),
        batch_size_used=records.batch_size_used,
        completed=n,
        interrupted=records.interrupted,
        examples={t: {p: v for p, v in g.items() if p < n} for t, g in records.examples.items()},
        saved={t: {p: v for p, v in g.items() if p < n} for t, g in records.saved.items()},
        clean_seconds=records.clean_seconds,
    )


def verify(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, attack: str) -> None:
    """Raise if a candidate leaves the threat model: a bug in the attack, never a success."""
    if x_adv.shape != x.shape:
        raise VerificationError(
            f"attack {attack} returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x_adv).all()):
        raise VerificationError(f"attack {attack} returned NaN or Inf pixels")
    if bool((x_adv < 0).any()) or bool((x_adv > 1).any()):
        raise VerificationError(f"attack {attack} left the [0, 1] input bounds")
    worst = float(lp_norm(x_adv.double() - x.double(), norm).max()) if x.shape[0] else 0.0
    if worst > eps + NORM_TOLERANCE:
        raise VerificationError(f"attack {attack} exceeded eps: ||delta||_{norm} = {worst:.8g} > {eps:.8g}")


def _softmax_top1(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    probs = torch.softmax(logits.float(), dim=1)
    conf, pred = probs.max(1)
    return pred.cpu().numpy().astype(np.int64), conf.cpu().numpy().astype(np.float64)


_TARGET_STREAM = 1 << 20  # random-target draws use their own counter stream


def choose_targets(
    mode: str, clean_logits: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Target class per sample, and which samples have a target other than their label.

    random: uniform over the classes other than the label, from the sample's seed; least-likely:
    the class with the lowest clean logit (Kurakin et al. 2017); a class index: that class, and
    samples of that class are not attacked.
    """
    attackable = torch.ones_like(y, dtype=torch.bool)
    if mode == "none":
        return None, attackable
    k = clean_logits.shape[1]
    if mode == "random":
        u = rng.uniform(seeds, _TARGET_STREAM, 1)[:, 0]
        targets = (y + 1 + (u * (k - 1)).long().clamp_max(k - 2)) % k
    elif mode == "least-likely":
        targets = clean_logits.argmin(1)
    else:
        targets = torch.full_like(y, int(mode))
    return targets, targets != y


def _keep_examples(
    records: SampleRecords,
    threat: tuple[str, float],
    attack: str,
    positions: np.ndarray,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    gallery_size: int,
    keep_all: bool,
) -> None:
    """Copy newly fooled samples' images off the device: a few for the gallery, all when asked."""
    gallery = records.examples[threat]
    room = max(0, gallery_size - len(gallery))
    if not (room or keep_all) or len(positions) == 0:
        return
    take = len(positions) if keep_all else min(room, len(positions))
    xs = x[:take].detach().float().cpu().numpy()
    advs = x_adv[:take].detach().float().cpu().numpy()
    for i, pos in enumerate(positions[:take].tolist()):
        if len(gallery) < gallery_size:
            gallery[pos] = (attack, xs[i], advs[i])
        if keep_all:
            records.saved[threat][pos] = (attack, advs[i])


def evaluate(
    adapter: ModelAdapter,
    dataset: Dataset,
    indices: np.ndarray,
    stages: Sequence[Stage],
    *,
    batch_size: int,
    seed: int,
    data_range: tuple[float, float],
    target: str = "none",
    progress: ProgressSink | None = None,
    gallery_size: int = 4,
    keep_adversarial: bool = False,
    run_dir: RunDir | None = None,
) -> SampleRecords:
    """Run the clean pass and every stage's cascade over all samples, one streamed batch at a time.

    Within a stage attacks run cheapest first, each only on samples still robust, so the record of
    attack k is the worst case over attacks 1..k of that stage.
    """
    progress = progress or NullProgress()
    n = len(indices)
    device = adapter.device
    records = SampleRecords(
        indices=indices,
        labels=dataset.labels[indices].astype(np.int64),
        clean_pred=np.zeros(n, np.int64),
        clean_conf=np.zeros(n, np.float64),
        targets=None if target == "none" else np.full(n, -1, np.int64),
        batch_size_used=batch_size,
    )
    keys = [(a.name, st.threat.norm, st.threat.eps) for st in stages for a in st.attacks]
    for key in keys:
        records.adversarial[key] = AttackRecords.empty(n)
    for st in stages:
        records.examples[(st.threat.norm, st.threat.eps)] = {}
        records.saved[(st.threat.norm, st.threat.eps)] = {}
    clean_task = progress.add_task("clean", n)
    tasks = {
        (a.name, st.threat.norm, st.threat.eps): progress.add_task(f"{a.name} {st.threat.describe()}", n)
        for st in stages
        for a in st.attacks
    }
    check_conversion = adapter.capabilities.backend == "onnx" and adapter.capabilities.gradients

    def run_batch(first: int, idx: np.ndarray, x_np: np.ndarray, y_np: np.ndarray) -> None:
        """Clean pass and every stage's cascade for samples first..first+len(idx) of ``indices``."""
        b = slice(first, first + len(idx))
        x = torch.from_numpy(x_np).to(device)
        y = torch.from_numpy(y_np).to(device)
        seeds = torch.from_numpy(sample_seeds(seed, idx)).to(device)

        start = time.perf_counter()
        clean_logits = adapter.predict_logits(x)
        pred, conf = _softmax_top1(clean_logits)
        records.clean_pred[b], records.clean_conf[b] = pred, conf
        records.clean_seconds += time.perf_counter() - start
        correct = torch.from_numpy(pred).to(device) == y
        targets, attackable = choose_targets(target, clean_logits, y, seeds)
        if records.targets is not None and targets is not None:
            records.targets[b] = torch.where(attackable, targets, -1).cpu().numpy()
        done: list[tuple[RecordKey, int]] = []

        for stage in stages:
            norm, eps = stage.threat.norm, stage.threat.eps
            robust = correct & attackable
            cur_pred, cur_conf = pred.copy(), conf.copy()
            fooled_converted = np.zeros(len(idx), bool)
            sizes = {k: np.zeros(len(idx), np.float64) for k in ("linf", "l2", "l0")}
            for attack in stage.attacks:
                key = (attack.name, norm, eps)
                rec = records.adversarial[key]
                start = time.perf_counter()
                active = torch.nonzero(robust).flatten()
                if active.numel() and key not in records.errors:
                    xa, ya = x[active], y[active]
                    # Gradient-free attacks query the reference runtime (ONNX Runtime) on a CPU, where it is
                    # the faster of the two (one-pixel on the sample ONNX LeNet: 33-43 s, against 78-80 s on
                    # the conversion). On a GPU they search on the conversion, checked against ONNX Runtime at
                    # load time and verified on it below: on an H100, a 500-sample FGSM + PGD + one-pixel scan
                    # took 8.1 s on the PyTorch LeNet and 104 s on its ONNX file through ONNX Runtime, which
                    # copies every one-pixel pass through host memory (4 us per image against 0.3 us).
                    on_conversion = attack.needs_gradients or (
                        adapter.capabilities.gradients and device.type == "cuda"
                    )
                    model_fn = adapter.logits if on_conversion else adapter.predict_logits
                    run = attack
                    if on_conversion and isinstance(attack, PGD) and adapter.capabilities.attack_margin > 0:
                        # A surrogate's hit must hold on the model too (the probes use the same margin).
                        run = replace(attack, min_margin=adapter.capabilities.attack_margin)
                    try:
                        x_adv = run(
                            model_fn,
                            xa,
                            ya,
                            eps=eps,
                            norm=norm,
                            seeds=seeds[active],
                            targets=targets[active] if targets is not None else None,
                        )
                        verify(x_adv, xa, eps, norm, attack.name)
                    except Exception as exc:  # noqa: BLE001 - one attack's failure must not end the audit
                        if is_out_of_memory(exc) or isinstance(exc, (UsageError, InputError, ResourceError)):
                            raise  # the user's to fix, or the batch's to split
                        # A crash, or candidates outside the threat model (VerificationError): never a success.
                        # Reported against this attack (and flagged); its candidates count for nothing.
                        records.errors[key] = f"{type(exc).__name__}: {one_line(exc)}"
                        x_adv = None
                    if x_adv is not None:
                        adv_pred, adv_conf = _softmax_top1(adapter.predict_logits(x_adv))
                        act = active.cpu().numpy()
                        cur_pred[act], cur_conf[act] = adv_pred, adv_conf
                        delta = (x_adv - xa).double()
                        for k in sizes:
                            sizes[k][act] = lp_norm(delta, k).cpu().numpy()
                        if check_conversion and on_conversion:
                            with torch.inference_mode():
                                conv_pred = adapter.logits(x_adv).argmax(1).cpu().numpy()
                            fooled_converted[act] |= conv_pred != y_np[act]
                        flipped_np = adv_pred != y_np[act]
                        flipped = torch.from_numpy(flipped_np).to(device)
                        _keep_examples(
                            records,
                            (norm, eps),
                            attack.name,
                            b.start + act[flipped_np],
                            xa[flipped],
                            x_adv[flipped],
                            gallery_size,
                            keep_adversarial,
                        )
                        robust[active[flipped]] = False
                rec.pred[b], rec.conf[b] = cur_pred, cur_conf
                rec.fooled_converted[b] = fooled_converted
                rec.linf[b], rec.l2[b], rec.l0[b] = sizes["linf"], sizes["l2"], sizes["l0"]
                if records.targets is not None:
                    rec.target_hit[b] = cur_pred == records.targets[b]
                rec.seconds += time.perf_counter() - start
                done.append((key, len(idx)))
        # Progress moves only for finished batches, so a batch retried in halves is not counted twice.
        progress.advance(clean_task, len(idx))
        for key, n_done in done:
            progress.advance(tasks[key], n_done)

    def process(first: int, idx: np.ndarray, x_np: np.ndarray, y_np: np.ndarray) -> None:
        """Run a batch; out of memory, run it again in halves, down to single samples. Per-sample seeds
        make the halves give exactly the results the whole batch would have."""
        try:
            run_batch(first, idx, x_np, y_np)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if len(idx) == 1:
                where = "GPU" if device.type == "cuda" else "host"
                raise ResourceError(
                    f"out of {where} memory even one sample at a time (from --batch-size {batch_size}); "
                    "use a machine with more memory, or --device cpu"
                ) from None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(idx) // 2
            records.batch_size_used = min(records.batch_size_used, half)
            process(first, idx[:half], x_np[:half], y_np[:half])
            process(first + half, idx[half:], x_np[half:], y_np[half:])

    offset = 0
    try:
        for idx, x_np, y_np in dataset.batches(indices, batch_size, data_range):
            if run_dir is not None and run_dir.has(offset):
                run_dir.load(records, offset, len(idx))  # done before an interruption
                progress.advance(clean_task, len(idx))
                for task in tasks.values():
                    progress.advance(task, len(idx))
            else:
                process(offset, idx, x_np, y_np)
                if run_dir is not None:
                    run_dir.save(records, offset, len(idx))
            offset += len(idx)
            records.completed = offset
    except KeyboardInterrupt:
        records.interrupted = True  # the caller reports the completed batches, marked incomplete
    return records
