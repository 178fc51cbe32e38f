"""Library entry points: ``run_audit(config) -> AuditResult`` and ``gate_audit(result, config) ->
GateVerdict``. The CLI is a thin layer over these.

The data flow: the config opens the model and the data (``audit.preparation``), the runner attacks
and verifies them shard by shard (``audit.runner``), the summary turns the per-sample records into
the result's figures (``audit.summary``), and the reliability checks read the result (``checks``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit import __version__
from robaudit.attacks.rng import sample_seeds
from robaudit.audit import distributed
from robaudit.audit.certified import certified_rows, exact_note, exact_threats, model_walk
from robaudit.audit.checkpoint import RunDir
from robaudit.audit.describe import data_info, environment, model_info, run_settings
from robaudit.audit.exports import write_adversarial, write_per_sample
from robaudit.audit.preparation import Prepared, prepare
from robaudit.audit.radius import bisect_radius
from robaudit.audit.runner import ProgressSink, run_shards
from robaudit.audit.shard import ShardSettings
from robaudit.audit.summary import attack_rows, ci, class_infos, gallery_examples, radii
from robaudit.checks.flags import l1_box_binds, pixel_attack_inside_ball, reliability_flags
from robaudit.checks.probes import probe_flags, probe_samples
from robaudit.errors import UsageError
from robaudit.hashing import sha256_file
from robaudit.metrics import confidence_split
from robaudit.models.torch_model import weights_sha256
from robaudit.precision import float32_math
from robaudit.results import BRACKET_CAVEAT, SCHEMA_VERSION, AttackRow, AuditResult, Confidence, Flag

if TYPE_CHECKING:
    from robaudit.attacks.base import Attack
    from robaudit.audit.records import SampleRecords, Threat
    from robaudit.audit.summary import Bisect
    from robaudit.config import AuditConfig
    from robaudit.gate import GateVerdict

log = logging.getLogger("robaudit")


def gate_audit(result: AuditResult, config: AuditConfig, baseline: AuditResult | None = None) -> GateVerdict:
    """The gate of ``config.gate`` on a finished audit: the threshold checks, the baseline comparison,
    the JUnit file of ``config.reports.junit``, and the exit code a CI job acts on (0 passed, 1 a check
    failed, 4 unreliable under ``strict``, 130 interrupted). Writes only the JUnit file; raises
    ``InputError`` (exit 3) for a baseline that cannot be read or compared. ``baseline``: the baseline
    already loaded (the CLI reads it before the audit, so a bad one fails first)."""
    from robaudit.gate import Check, gate_result
    from robaudit.results import load_result

    gate = config.gate
    return gate_result(
        result,
        [Check(**c.model_dump()) for c in gate.checks],
        baseline=baseline if baseline is not None or gate.baseline is None else load_result(gate.baseline),
        baseline_path=None if gate.baseline is None else str(gate.baseline),
        max_drop=gate.max_drop,
        allow_mismatch=gate.allow_mismatch,
        junit_path=config.reports.junit,
        strict=gate.strict,
    )


def run_audit(
    config: AuditConfig, progress: ProgressSink | None = None, module: torch.nn.Module | None = None
) -> AuditResult:
    """Load, attack, verify and summarise. Raises a RobauditError subclass for anything the user can fix.

    ``module``: audit an in-memory PyTorch model (see ``prepare``); it is left as it was found.
    """
    total_start = time.perf_counter()
    if distributed.wanted(config.run):  # before loading anything: a missing extra is a one-line fix
        distributed.require_ray()
        if module is not None:
            raise UsageError(
                "--workers: Ray workers load the model file; audit an in-memory module with workers=0"
            )
    # Attacks need gradients even when the caller's notebook runs under inference_mode or no_grad.
    with float32_math(config.run.tf32), torch.inference_mode(False), torch.enable_grad():
        prepared = prepare(config, module)
        try:
            return _audit(config, prepared, progress, module, total_start)
        finally:
            prepared.restore()  # only after bisection and probes, which query the model too


def _audit(
    config: AuditConfig,
    prepared: Prepared,
    progress: ProgressSink | None,
    module: torch.nn.Module | None,
    total_start: float,
) -> AuditResult:
    for note in prepared.notes:
        log.info(note)
    model_sha = sha256_file(config.model_path) if module is None else weights_sha256(module)
    records = _run(config, prepared, progress, _open_run_dir(config, prepared, model_sha), model_sha)
    caps = prepared.adapter.capabilities
    # "onnx" rows report how many samples the converted graph alone was fooled on; that needs a conversion.
    row_backend = "onnx" if caps.backend == "onnx" and caps.gradients else "torch"
    walk = model_walk(prepared, config.certify.method, config.float_data_range)
    exact = exact_threats(prepared.stages, config.certify.method, walk)
    rows, worst = attack_rows(records, prepared.stages, row_backend, prepared.adapter.num_classes, exact)
    rows, certify_notes = certified_rows(rows, records, prepared.stages, worst, config.certify.method, walk)
    prepared.notes.extend([*certify_notes, *exact_note(records, prepared.stages, worst)])
    if config.certify.method != "none":
        prepared.timings["certify_seconds"] = round(sum(records.certify_seconds.values()), 4)
    _note_run(config, prepared, records)
    _write_outputs(config, prepared, records, exact)
    prepared.timings["clean_seconds"] = round(records.clean_seconds, 4)
    result = _result(config, prepared, records, rows, worst, model_sha, module)
    flags, notes = _flags(config, prepared, records, result, worst)
    # The whole audit's wall time: the radius bisection and the reliability probes included.
    prepared.timings["total_seconds"] = round(time.perf_counter() - total_start, 4)
    return replace(
        result,
        flags=flags,
        notes=list(notes),
        timings=dict(prepared.timings),
        complete=not records.interrupted,
        caveat=BRACKET_CAVEAT if any(r.n_certified is not None for r in rows) else result.caveat,
    )


def _open_run_dir(config: AuditConfig, prepared: Prepared, model_sha: str) -> RunDir | None:
    if config.run.run_dir is None:
        return None
    run_dir = RunDir(config.run.run_dir)
    digests = {"model_sha256": model_sha, "data_sha256": prepared.dataset.sha256}
    if config.model.surrogate is not None:  # its examples are in the saved shards too
        digests["surrogate_sha256"] = sha256_file(config.model.surrogate)
    run_dir.check_inputs(digests)
    # The batch size auto chose, not "auto": a resumed run must cut the same batches as the saved ones.
    run_dir.write_config(
        config.model_copy(
            update={"run": config.run.model_copy(update={"batch_size": prepared.batch_size})}
        ).model_dump_json(indent=2)
    )
    return run_dir


def _run(
    config: AuditConfig,
    prepared: Prepared,
    progress: ProgressSink | None,
    run_dir: RunDir | None,
    model_sha: str,
) -> SampleRecords:
    settings = ShardSettings.from_config(
        config, prepared.batch_size, prepared.eot.evals, prepared.eot.random_model
    )
    if distributed.wanted(config.run):  # the same shards and merge, on Ray workers
        return _complete_or_raise(
            distributed.run_distributed(
                config, prepared, settings, model_sha, progress=progress, run_dir=run_dir
            )
        )
    records = run_shards(
        prepared.adapter,
        prepared.dataset,
        prepared.indices,
        prepared.stages,
        settings,
        progress=progress,
        run_dir=run_dir,
        shard_size=config.run.shard_size,
    )
    return _complete_or_raise(records)


def _complete_or_raise(records: SampleRecords) -> SampleRecords:
    if records.interrupted and records.completed == 0:
        raise KeyboardInterrupt  # no batch finished: no figure to report, so no partial report either
    return records


def _note_run(config: AuditConfig, prepared: Prepared, records: SampleRecords) -> None:
    """Notes on how the run went: interrupted (first of all notes), or split after running out of memory."""
    if records.interrupted:
        resume = f"; resume with robaudit scan --resume {config.run.run_dir}" if config.run.run_dir else ""
        prepared.notes.insert(
            0,
            f"INCOMPLETE: interrupted after {records.completed} of {len(prepared.indices)} samples; the figures "
            f"cover only those{resume}",
        )
    if records.batch_size_used < prepared.batch_size:
        prepared.notes.append(
            f"out of memory at --batch-size {prepared.batch_size}: batches were split down to "
            f"{records.batch_size_used}; results are the same, per-sample seeds do not depend on batching"
        )


def _write_outputs(
    config: AuditConfig, prepared: Prepared, records: SampleRecords, exact: set[Threat]
) -> None:
    if config.reports.per_sample is not None:
        write_per_sample(records, prepared.stages, config.reports.per_sample, exact)
    if config.reports.save_adversarial is not None:
        saved = write_adversarial(records, config.reports.save_adversarial)
        prepared.notes.append(f"saved {saved} adversarial examples to {config.reports.save_adversarial}")


def _bisector(config: AuditConfig, prepared: Prepared, records: SampleRecords) -> Bisect | None:
    """With --radius-bisect (and a complete run), narrows each sample's radius between sweep points."""
    if config.reports.radius_bisect <= 0 or records.interrupted:
        return None
    timings = prepared.timings

    def bisect(norm: str, attacks: list[Attack], low: np.ndarray, high: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        narrowed = bisect_radius(
            prepared.adapter, prepared.dataset, prepared.indices, attacks, norm, low, high,
            steps=config.reports.radius_bisect, seed=config.run.seed, data_range=config.float_data_range,
            batch_size=prepared.batch_size,
        )  # fmt: skip
        timings["radius_seconds"] = round(timings.get("radius_seconds", 0.0) + time.perf_counter() - start, 4)
        return narrowed

    return bisect


def _result(
    config: AuditConfig,
    prepared: Prepared,
    records: SampleRecords,
    rows: list[AttackRow],
    worst: dict[Threat, np.ndarray],
    model_sha: str,
    module: torch.nn.Module | None,
) -> AuditResult:
    adapter, stages = prepared.adapter, prepared.stages
    clean_correct = records.clean_pred == records.labels
    return AuditResult(
        schema_version=SCHEMA_VERSION,
        robaudit_version=__version__,
        created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        model=model_info(config, prepared, model_sha, module),
        data=data_info(config, prepared, records),
        settings=run_settings(config, prepared, records),
        environment=environment(adapter.device),
        clean_accuracy=float(clean_correct.mean()),
        n_clean_correct=int(clean_correct.sum()),
        mean_confidence_clean=float(records.clean_conf.mean()),
        rows=rows,
        clean_accuracy_ci=ci(int(clean_correct.sum()), len(clean_correct)),
        confidence_clean=Confidence(*confidence_split(records.clean_conf, clean_correct)),
        classes=class_infos(records, adapter.num_classes, prepared.dataset.class_names),
        radius=radii(
            stages, worst, clean_correct, _bisector(config, prepared, records), config.reports.radius_bisect
        ),
        gallery=gallery_examples(records, stages),
        notes=prepared.notes,
        timings=prepared.timings,
    )


def _flags(
    config: AuditConfig,
    prepared: Prepared,
    records: SampleRecords,
    result: AuditResult,
    worst: dict[Threat, np.ndarray],
) -> tuple[list[Flag], list[str]]:
    """The reliability flags, and the notes with the probes' figures added."""
    flags = reliability_flags(result)
    notes = prepared.notes
    if any(st.threat.norm == "l1" for st in prepared.stages) and len(records.indices):
        first = prepared.dataset.to_unit(prepared.dataset.read(records.indices[:1]), config.float_data_range)
        notes = [*notes, *l1_box_binds(records, prepared.stages, int(first.shape[1]))]
    if config.gate.reliability_checks:
        flags += pixel_attack_inside_ball(records, prepared.stages, worst)
    if config.gate.reliability_checks and not records.interrupted and records.completed:
        start = time.perf_counter()
        device = prepared.adapter.device
        positions = probe_samples(records.clean_pred, records.labels)
        idx = records.indices[positions]
        x = torch.from_numpy(prepared.dataset.to_unit(prepared.dataset.read(idx), config.float_data_range))
        y = torch.from_numpy(records.labels[positions])
        seeds = torch.from_numpy(sample_seeds(config.run.seed, idx))
        probed, probe_notes = probe_flags(
            prepared.adapter, x.to(device), y.to(device), seeds.to(device), prepared.stages
        )
        flags += probed
        notes = [*notes, *probe_notes]
        prepared.timings["checks_seconds"] = round(time.perf_counter() - start, 4)
    return flags, notes
