"""Each model's adversarial examples, made with the audit's own preparation and attack step.

The examples of a model are made exactly as ``scan`` makes them: the same batches (the run's fixed grid
of ``batch_size``), per-sample seeds, attacks only on samples the model classifies correctly, every
candidate verified against its threat model (``audit.shard.attack_step``). They are kept in pixel space,
(N, C, H, W) on [0, 1]; a sample the model did not attack keeps its clean image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.attacks.rng import sample_seeds
from robaudit.audit.shard import attack_step
from robaudit.errors import InputError, ResourceError, UsageError, is_out_of_memory, one_line

if TYPE_CHECKING:
    from robaudit.audit.preparation import Prepared
    from robaudit.config import AuditConfig

Key = tuple[str, str, float]  # (attack, norm, eps)


@dataclass
class SourceExamples:
    """One model's examples per (attack, norm, eps), and the attacks that failed (with why)."""

    adversarial: dict[Key, np.ndarray] = field(default_factory=dict)
    errors: dict[Key, str] = field(default_factory=dict)
    seconds: float = 0.0


def batches(config: AuditConfig, prepared: Prepared) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """The run's samples on scan's grid: (rows, x on [0, 1], labels)."""
    indices, dataset, b = prepared.indices, prepared.dataset, prepared.batch_size
    for start in range(0, len(indices), b):
        idx = indices[start : start + b]
        x = dataset.to_unit(dataset.read(idx), config.float_data_range)
        yield slice(start, start + len(idx)), x, dataset.labels[idx].astype(np.int64)


def predict(prepared: Prepared, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 class and softmax confidence on the model's reference runtime, batch by batch; ``x`` is
    pixel space (N, C, H, W) on [0, 1], and the handle applies the model's own layout and normalisation."""
    adapter, b = prepared.adapter, prepared.batch_size
    preds, confs = [], []
    with torch.inference_mode():
        for start in range(0, len(x), b):
            logits = adapter.predict_logits(torch.from_numpy(x[start : start + b]).to(adapter.device))
            conf, pred = torch.softmax(logits.float(), dim=1).max(1)
            preds.append(pred.cpu().numpy().astype(np.int64))
            confs.append(conf.cpu().numpy().astype(np.float64))
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(preds), np.concatenate(confs)


def make_examples(config: AuditConfig, prepared: Prepared, clean: np.ndarray) -> SourceExamples:
    """Every attack of every stage on the samples this model classifies correctly (``clean``: its clean
    predictions in the run's order). Outcomes match scan's: per-sample seeds make an attack's candidate
    for a sample independent of which other samples share its batch."""
    import time

    out = SourceExamples()
    start = time.perf_counter()
    adapter = prepared.adapter
    for rows, x_np, y_np in batches(config, prepared):
        idx = prepared.indices[rows]
        x = torch.from_numpy(x_np).to(adapter.device)
        y = torch.from_numpy(y_np).to(adapter.device)
        seeds = torch.from_numpy(sample_seeds(config.run.seed, idx)).to(adapter.device)
        active = torch.from_numpy(np.flatnonzero(clean[rows] == y_np)).to(adapter.device)
        for stage in prepared.stages:
            norm, eps = stage.threat.norm, stage.threat.eps
            for attack in stage.attacks:
                key = (attack.name, norm, eps)
                store = out.adversarial.setdefault(
                    key, np.empty((len(prepared.indices), *x_np.shape[1:]), np.float32)
                )
                store[rows] = x_np
                if key in out.errors or not active.numel():
                    continue
                try:
                    x_adv = attack_step(
                        adapter,
                        attack,
                        x[active],
                        y[active],
                        eps=eps,
                        norm=norm,
                        seeds=seeds[active],
                        targets=None,
                    )
                except Exception as exc:  # noqa: BLE001 - as in scan: one attack's failure is reported, not fatal
                    if is_out_of_memory(exc) or isinstance(exc, (UsageError, InputError, ResourceError)):
                        raise
                    out.errors[key] = f"{type(exc).__name__}: {one_line(exc)}"
                    continue
                store[np.arange(rows.start, rows.stop)[active.cpu().numpy()]] = (
                    x_adv.detach().float().cpu().numpy()
                )
    for key in out.errors:
        out.adversarial.pop(key, None)
    out.seconds = time.perf_counter() - start
    return out
