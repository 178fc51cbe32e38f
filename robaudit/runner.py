"""The runner: clean pass, attack cascade per eps, verification of every x_adv, per-sample records.

The attack proposes, the runner verifies: every candidate is checked against the threat model with
an explicit raise, and predictions are recomputed on the reference runtime, never taken from the attack.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from robaudit.attacks import Attack
from robaudit.attacks.norms import lp_norm
from robaudit.data import Dataset
from robaudit.errors import ResourceError, VerificationError
from robaudit.models import ModelAdapter

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
    """Per-sample outcome of the cascade up to and including one attack, at one eps."""

    pred: np.ndarray
    conf: np.ndarray
    fooled_converted: np.ndarray  # flipped on the differentiable model the attack used
    seconds: float = 0.0


@dataclass
class SampleRecords:
    indices: np.ndarray
    labels: np.ndarray
    clean_pred: np.ndarray
    clean_conf: np.ndarray
    adversarial: dict[tuple[str, float], AttackRecords] = field(default_factory=dict)
    clean_seconds: float = 0.0


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


def evaluate(
    adapter: ModelAdapter,
    dataset: Dataset,
    indices: np.ndarray,
    attacks: Sequence[Attack],
    *,
    norm: str,
    eps_list: Sequence[float],
    batch_size: int,
    seed: int,
    input_range: tuple[float, float],
    progress: ProgressSink | None = None,
) -> SampleRecords:
    """Run the clean pass and the cascade over all samples, one streamed batch at a time.

    Cascade: attacks run cheapest first, each only on samples still robust at that eps, so the record
    of attack k is the worst case over attacks 1..k.
    """
    progress = progress or NullProgress()
    n = len(indices)
    device = adapter.device
    records = SampleRecords(
        indices=indices,
        labels=dataset.labels[indices].astype(np.int64),
        clean_pred=np.zeros(n, np.int64),
        clean_conf=np.zeros(n, np.float64),
    )
    keys = [(a.name, e) for e in eps_list for a in attacks]
    for key in keys:
        records.adversarial[key] = AttackRecords(
            np.zeros(n, np.int64), np.zeros(n, np.float64), np.zeros(n, bool)
        )
    clean_task = progress.add_task("clean", n)
    tasks = {key: progress.add_task(f"{key[0]} {norm} eps={key[1]:g}", n) for key in keys}

    offset = 0
    try:
        for idx, x_np, y_np in dataset.batches(indices, batch_size, input_range):
            b = slice(offset, offset + len(idx))
            offset += len(idx)
            x = torch.from_numpy(x_np).to(device)
            y = torch.from_numpy(y_np).to(device)
            seeds = torch.from_numpy(sample_seeds(seed, idx)).to(device)

            start = time.perf_counter()
            clean_logits = adapter.predict_logits(x)
            pred, conf = _softmax_top1(clean_logits)
            records.clean_pred[b], records.clean_conf[b] = pred, conf
            records.clean_seconds += time.perf_counter() - start
            progress.advance(clean_task, len(idx))
            correct = torch.from_numpy(pred).to(device) == y

            for eps in eps_list:
                robust = correct.clone()
                cur_pred, cur_conf = pred.copy(), conf.copy()
                fooled_converted = np.zeros(len(idx), bool)
                for attack in attacks:
                    rec = records.adversarial[(attack.name, eps)]
                    start = time.perf_counter()
                    active = torch.nonzero(robust).flatten()
                    if active.numel():
                        xa, ya = x[active], y[active]
                        x_adv = attack(adapter.logits, xa, ya, eps=eps, norm=norm, seeds=seeds[active])
                        verify(x_adv, xa, eps, norm, attack.name)
                        adv_pred, adv_conf = _softmax_top1(adapter.predict_logits(x_adv))
                        act = active.cpu().numpy()
                        cur_pred[act], cur_conf[act] = adv_pred, adv_conf
                        if adapter.capabilities.backend == "onnx" and adapter.capabilities.gradients:
                            with torch.inference_mode():
                                conv_pred = adapter.logits(x_adv).argmax(1).cpu().numpy()
                            fooled_converted[act] |= conv_pred != y_np[act]
                        flipped = torch.from_numpy(adv_pred != y_np[act]).to(device)
                        robust[active[flipped]] = False
                    rec.pred[b], rec.conf[b] = cur_pred, cur_conf
                    rec.fooled_converted[b] = fooled_converted
                    rec.seconds += time.perf_counter() - start
                    progress.advance(tasks[(attack.name, eps)], len(idx))
    except torch.cuda.OutOfMemoryError:
        raise ResourceError(
            f"out of GPU memory at --batch-size {batch_size}; lower --batch-size or use --device cpu"
        ) from None
    except MemoryError:
        raise ResourceError(f"out of host memory at --batch-size {batch_size}; lower --batch-size") from None
    return records
