"""One shard of the audit: the clean pass and every stage's cascade over a list of samples.

A shard is a list of positions in the run's sample order and the dataset indices at them. Running it
depends only on the model, the data, the settings and the shard, and per-sample seeds make each
sample's outcome independent of which shard it is in, so shards can run in any order and be merged by
position (``records.merge_shards``).

The attack proposes, the runner verifies: every candidate is checked against the threat model with
an explicit raise, and predictions are recomputed on the reference runtime, never taken from the attack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.attacks import rng
from robaudit.attacks.apgd import APGD, APGDT
from robaudit.attacks.norms import lp_norm
from robaudit.attacks.pgd import PGD
from robaudit.attacks.rng import sample_seeds
from robaudit.audit.counterexamples import confirm
from robaudit.audit.randomness import reseed
from robaudit.audit.records import (
    EXACT,
    AttackRecords,
    RecordKey,
    RecordLayout,
    SampleRecords,
    Threat,
    keep_examples,
    merge_shards,
)
from robaudit.audit.verification import majority_predict, verify
from robaudit.certify.run import (
    CERTIFIED_NORMS,
    Counterexamples,
    certify_batch,
    certify_onepixel_batch,
    check_sound,
)
from robaudit.errors import InputError, ResourceError, UsageError, is_out_of_memory, one_line

if TYPE_CHECKING:
    from robaudit.attacks.base import Attack
    from robaudit.audit.plan import Stage
    from robaudit.config import AuditConfig
    from robaudit.data import Dataset
    from robaudit.models import ModelAdapter


@dataclass(frozen=True)
class ShardSettings:
    """The run's settings that a shard's outcome depends on."""

    seed: int
    data_range: tuple[float, float]
    batch_size: int  # the shards' size; an out-of-memory error names it
    target: str = "none"  # none | random | least-likely | a class index
    gallery_size: int = 4  # successes per attack and threat model copied off the device for the report
    keep_adversarial: bool = False  # copy every success (--save-adversarial)
    certify: str = "none"  # none | ibp | crown | exact | auto (certify.run)
    certify_time_limit: float = 10.0  # seconds per sample for exact verification
    # A random model (audit/randomness.py): passes per recorded prediction, the majority deciding, and
    # torch's generator seeded per batch.
    evals: int = 1
    random_model: bool = False

    def layout(self, stages: Sequence[Stage]) -> RecordLayout:
        """What each shard records under these settings (``RecordLayout.of``)."""
        return RecordLayout.of(stages, targeted=self.target != "none", certify=self.certify)

    @classmethod
    def from_config(
        cls, config: AuditConfig, batch_size: int, evals: int = 1, random_model: bool = False
    ) -> ShardSettings:
        """``batch_size``: the one the run uses (--batch-size, or what auto chose); ``evals`` and
        ``random_model``: the run's EOT plan (``Prepared.eot``)."""
        return cls(
            seed=config.run.seed,
            data_range=config.float_data_range,
            batch_size=batch_size,
            target=config.threat.target,
            gallery_size=config.reports.gallery_size,
            keep_adversarial=config.reports.save_adversarial is not None,
            certify=config.certify.method,
            certify_time_limit=config.certify.time_limit,
            evals=evals,
            random_model=random_model,
        )


@dataclass(frozen=True)
class _Batch:
    """Samples on the host: positions, dataset indices, x (N, C, H, W) float32 on [0, 1], y (N,) int64."""

    positions: np.ndarray
    indices: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def split(self, at: int) -> tuple[_Batch, _Batch]:
        head, tail = slice(0, at), slice(at, None)
        return (
            _Batch(self.positions[head], self.indices[head], self.x[head], self.y[head]),
            _Batch(self.positions[tail], self.indices[tail], self.x[tail], self.y[tail]),
        )


def run_shard(
    adapter: ModelAdapter,
    dataset: Dataset,
    stages: Sequence[Stage],
    settings: ShardSettings,
    positions: np.ndarray,
    indices: np.ndarray,
    failed: Collection[RecordKey] = (),
    on_stage: Callable[[str], None] | None = None,
) -> SampleRecords:
    """The records of samples ``indices`` (at ``positions`` in the run's order), rows in that order.

    ``failed``: attacks that already failed on an earlier shard; they are not run again, and count for
    nothing here either. The records' ``errors`` are the attacks that failed on this shard.
    ``on_stage``: told what starts running ("clean", "pgd linf eps=0.1"), for progress reports.
    """
    batch = _Batch(
        positions,
        indices,
        dataset.to_unit(dataset.read(indices), settings.data_range),
        dataset.labels[indices].astype(np.int64),
    )
    errors = dict.fromkeys(failed, "")
    records = _halve_on_oom(adapter, stages, settings, batch, errors, on_stage or _silent)
    records.errors = {key: message for key, message in errors.items() if key not in failed}
    return records


def _silent(description: str) -> None:
    return None


def _halve_on_oom(
    adapter: ModelAdapter,
    stages: Sequence[Stage],
    settings: ShardSettings,
    batch: _Batch,
    errors: dict[RecordKey, str],
    on_stage: Callable[[str], None],
) -> SampleRecords:
    """Run a batch; out of memory, run it again in halves, down to single samples. Per-sample seeds
    make the halves give exactly the results the whole batch would have."""
    try:
        return _run_batch(adapter, stages, settings, batch, errors, on_stage)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
    # Past the except block, so that the failed attempt's tensors are freed before the halves run.
    device = adapter.device
    if len(batch.positions) == 1:
        where = "GPU" if device.type == "cuda" else "host"
        raise ResourceError(
            f"out of {where} memory even one sample at a time (from --batch-size {settings.batch_size}); "
            "use a machine with more memory, or --device cpu"
        )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    half = len(batch.positions) // 2
    head, tail = batch.split(half)
    parts = [_halve_on_oom(adapter, stages, settings, part, errors, on_stage) for part in (head, tail)]
    merged = merge_shards(parts, settings.layout(stages), settings.gallery_size)
    merged.batch_size_used = min(merged.batch_size_used, half)
    return merged


@dataclass
class _Inputs:
    """A batch on the device, with what the clean pass decided: which samples the cascades attack."""

    x: torch.Tensor
    y: torch.Tensor
    y_np: np.ndarray
    seeds: torch.Tensor
    targets: torch.Tensor | None
    attacked: torch.Tensor  # clean-correct, and (targeted runs) with a target other than the label


@dataclass
class _Cascade:
    """One stage's state over a batch while its attacks run: which samples are still robust, and each
    sample's current prediction, confidence and perturbation sizes."""

    robust: torch.Tensor
    pred: np.ndarray
    conf: np.ndarray
    fooled_converted: np.ndarray
    sizes: dict[str, np.ndarray]

    def write(self, rec: AttackRecords, targets: np.ndarray | None) -> None:
        """Copy the state into the records of the attack that just ran (the worst case so far)."""
        rec.pred[:], rec.conf[:] = self.pred, self.conf
        rec.fooled_converted[:] = self.fooled_converted
        rec.linf[:], rec.l2[:], rec.l0[:] = self.sizes["linf"], self.sizes["l2"], self.sizes["l0"]
        if targets is not None:
            rec.target_hit[:] = self.pred == targets


def _run_batch(
    adapter: ModelAdapter,
    stages: Sequence[Stage],
    settings: ShardSettings,
    batch: _Batch,
    errors: dict[RecordKey, str],
    on_stage: Callable[[str], None],
) -> SampleRecords:
    """Clean pass and every stage's cascade for one batch, in one go.

    Within a stage attacks run cheapest first, each only on samples still robust, so the record of
    attack k is the worst case over attacks 1..k of that stage. Attacks in ``errors`` are skipped; an
    attack that fails is added to it at once, so the failure holds even if the batch then runs out of
    memory and is retried in halves.
    """
    records = SampleRecords.blank(
        settings.layout(stages), batch.positions, batch.indices, batch.y, settings.batch_size
    )
    if settings.random_model:
        reseed(settings.seed, int(batch.indices[0]))
    on_stage("clean")
    inputs = _clean_pass(adapter, settings, batch, records)
    for stage in stages:
        cascade = _Cascade(
            robust=inputs.attacked.clone(),
            pred=records.clean_pred.copy(),
            conf=records.clean_conf.copy(),
            fooled_converted=np.zeros(len(batch.y), bool),
            sizes={k: np.zeros(len(batch.y), np.float64) for k in ("linf", "l2", "l0")},
        )
        for attack in stage.attacks:
            key = (attack.name, stage.threat.norm, stage.threat.eps)
            start = time.perf_counter()
            active = torch.nonzero(cascade.robust).flatten()
            if active.numel() and key not in errors:
                on_stage(f"{attack.name} {stage.threat.describe()}")
                _attack_active(adapter, attack, stage, inputs, active, cascade, records, settings, errors)
            rec = records.adversarial[key]
            cascade.write(rec, records.targets)
            rec.seconds += time.perf_counter() - start
        one_pixel = stage.threat.norm == "l0" and int(stage.threat.eps) == 1
        if settings.certify != "none" and (stage.threat.norm in CERTIFIED_NORMS or one_pixel):
            on_stage(f"certify {stage.threat.describe()}")
            _certify(adapter, stage, inputs, cascade, records, settings)
    return records


def _certify(
    adapter: ModelAdapter,
    stage: Stage,
    inputs: _Inputs,
    cascade: _Cascade,
    records: SampleRecords,
    settings: ShardSettings,
) -> None:
    """Certify the batch at the stage's threat model after its attacks ran (exact verification then
    only sees the samples they left), and refuse a certified sample that an attack fooled. Where the
    cascade has an ``exact`` step, exact verification's counterexamples that the reference runtime
    confirms count as fooled there (``audit.counterexamples``)."""
    start = time.perf_counter()
    threat = (stage.threat.norm, stage.threat.eps)
    fooled = (inputs.attacked & ~cascade.robust).cpu().numpy()
    correct = records.clean_pred == inputs.y_np
    if stage.threat.norm == "l0":  # one pixel: bounds, then the exact sweep (certify.onepixel_run)
        codes, records.onepixel_swept[:], examples = certify_onepixel_batch(
            adapter, inputs.x, inputs.y, correct, fooled, settings.certify
        )
    else:
        codes, examples = certify_batch(
            adapter,
            inputs.x,
            inputs.y,
            correct,
            fooled,
            *threat,
            settings.certify,
            settings.certify_time_limit,
        )
    check_sound(codes, fooled, records.indices, stage.threat.describe())
    records.certified[threat][:] = codes
    key = (EXACT, *threat)
    if key in records.adversarial:
        _count_counterexamples(adapter, inputs, cascade, records, settings, threat, examples)
        cascade.write(records.adversarial[key], records.targets)
        records.adversarial[key].seconds += time.perf_counter() - start
    records.certify_seconds[threat] += time.perf_counter() - start


def _count_counterexamples(
    adapter: ModelAdapter,
    inputs: _Inputs,
    cascade: _Cascade,
    records: SampleRecords,
    settings: ShardSettings,
    threat: Threat,
    examples: Counterexamples,
) -> None:
    """Counterexamples the reference runtime misclassifies become the cascade's ``exact`` step: fooled,
    with their prediction, sizes and images kept like an attack's. Only samples the cascade attacks
    count (a targeted run leaves the target's own class alone)."""
    attacked = inputs.attacked.cpu().numpy()
    if adapter.capabilities.backend == "onnx" and adapter.capabilities.gradients:
        # Found on the conversion (the bound ops are its graph): fooled there, whatever the runtime says.
        cascade.fooled_converted[[r for r in examples if attacked[r]]] = True
    found = confirm(adapter, inputs.x, inputs.y, examples, attacked, threat, settings.evals)
    rows = found.rows
    cascade.pred[rows], cascade.conf[rows] = found.pred, found.conf
    for k, size in found.sizes.items():
        cascade.sizes[k][rows] = size
    cascade.robust[torch.from_numpy(rows).to(adapter.device)] = False
    x0 = inputs.x[torch.from_numpy(rows).to(adapter.device)]
    keep_examples(
        records, threat, EXACT, rows, x0, found.x_adv, settings.gallery_size, settings.keep_adversarial
    )


def _clean_pass(
    adapter: ModelAdapter, settings: ShardSettings, batch: _Batch, records: SampleRecords
) -> _Inputs:
    """Predict the clean batch on the reference runtime and choose each sample's target."""
    device = adapter.device
    x = torch.from_numpy(batch.x).to(device)
    y = torch.from_numpy(batch.y).to(device)
    seeds = torch.from_numpy(sample_seeds(settings.seed, batch.indices)).to(device)
    start = time.perf_counter()
    pred_t, conf_t, clean_logits = majority_predict(adapter.predict_logits, x, y, settings.evals, clean=True)
    pred, conf = _to_host(pred_t, conf_t)
    records.clean_pred[:], records.clean_conf[:] = pred, conf
    records.clean_seconds += time.perf_counter() - start
    correct = torch.from_numpy(pred).to(device) == y
    targets, attackable = choose_targets(settings.target, clean_logits, y, seeds)
    if records.targets is not None and targets is not None:
        records.targets[:] = torch.where(attackable, targets, -1).cpu().numpy()
    return _Inputs(x, y, batch.y, seeds, targets, correct & attackable)


def _attack_active(
    adapter: ModelAdapter,
    attack: Attack,
    stage: Stage,
    inputs: _Inputs,
    active: torch.Tensor,
    cascade: _Cascade,
    records: SampleRecords,
    settings: ShardSettings,
    errors: dict[RecordKey, str],
) -> None:
    """One attack of the cascade on the samples still robust: attack, verify, re-predict, record."""
    norm, eps = stage.threat.norm, stage.threat.eps
    xa, ya = inputs.x[active], inputs.y[active]
    targets = inputs.targets[active] if inputs.targets is not None else None
    try:
        x_adv = attack_step(
            adapter, attack, xa, ya, eps=eps, norm=norm, seeds=inputs.seeds[active], targets=targets
        )
    except Exception as exc:  # noqa: BLE001 - one attack's failure must not end the audit
        if is_out_of_memory(exc) or isinstance(exc, (UsageError, InputError, ResourceError)):
            raise  # the user's to fix, or the batch's to split
        # A crash, or candidates outside the threat model (VerificationError): never a success.
        # Reported against this attack (and flagged); its candidates count for nothing.
        errors[(attack.name, norm, eps)] = f"{type(exc).__name__}: {one_line(exc)}"
        return
    act = active.cpu().numpy()
    caps = adapter.capabilities
    check_conversion = caps.backend == "onnx" and caps.gradients and on_conversion(adapter, attack)
    flipped_np = _score(adapter, x_adv, xa, ya, act, cascade, check_conversion, settings.evals)
    flipped = torch.from_numpy(flipped_np).to(adapter.device)
    keep_examples(
        records,
        (norm, eps),
        attack.name,
        act[flipped_np],
        xa[flipped],
        x_adv[flipped],
        settings.gallery_size,
        settings.keep_adversarial,
    )
    cascade.robust[active[flipped]] = False


def on_conversion(adapter: ModelAdapter, attack: Attack) -> bool:
    """Whether the attack searches on the differentiable model rather than the reference runtime.

    Gradient-free attacks query the reference runtime (ONNX Runtime) on a CPU, where it is the faster
    of the two (one-pixel on the sample ONNX LeNet: 33-43 s, against 78-80 s on the conversion). On a
    GPU they search on the conversion, checked against ONNX Runtime at load time and verified on it
    afterwards: on an H100, a 500-sample FGSM + PGD + one-pixel scan took 8.1 s on the PyTorch LeNet
    and 104 s on its ONNX file through ONNX Runtime, which copies every one-pixel pass through host
    memory (4 us per image against 0.3 us).
    """
    return attack.needs_gradients or (adapter.capabilities.gradients and adapter.device.type == "cuda")


def attack_step(
    adapter: ModelAdapter,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    seeds: torch.Tensor,
    targets: torch.Tensor | None,
) -> torch.Tensor:
    """The attack's candidates for ``x`` (N, C, H, W) on [0, 1], verified against the threat model;
    raises whatever the attack raises, and VerificationError for a candidate outside the ball."""
    conversion = on_conversion(adapter, attack)
    model_fn = adapter.logits if conversion else adapter.predict_logits
    run = attack
    if conversion and isinstance(attack, (PGD, APGD, APGDT)) and adapter.capabilities.attack_margin > 0:
        # A surrogate's hit must hold on the model too (the probes use the same margin).
        run = replace(attack, min_margin=adapter.capabilities.attack_margin)
    x_adv = run(model_fn, x, y, eps=eps, norm=norm, seeds=seeds, targets=targets)
    verify(x_adv, x, eps, norm, attack.name)
    return x_adv


def _score(
    adapter: ModelAdapter,
    x_adv: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    act: np.ndarray,
    cascade: _Cascade,
    check_conversion: bool,
    evals: int,
) -> np.ndarray:
    """Re-predict verified candidates on the reference runtime (the majority of ``evals`` passes) and
    record them for rows ``act``; returns which of them are now misclassified."""
    adv_pred, adv_conf = _to_host(*majority_predict(adapter.predict_logits, x_adv, y, evals, clean=False)[:2])
    y_act = y.cpu().numpy()
    cascade.pred[act], cascade.conf[act] = adv_pred, adv_conf
    delta = (x_adv - x).double()
    for k in cascade.sizes:
        cascade.sizes[k][act] = lp_norm(delta, k).cpu().numpy()
    if check_conversion:
        with torch.inference_mode():
            conv = majority_predict(adapter.logits, x_adv, y, evals, clean=False)[0]
        conv_pred = conv.cpu().numpy()
        cascade.fooled_converted[act] |= conv_pred != y_act
    return np.asarray(adv_pred != y_act)


def _to_host(pred: torch.Tensor, conf: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
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
