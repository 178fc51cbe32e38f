"""Library entry point: ``run_audit(config) -> AuditResult``. The CLI is a thin layer over this."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from robaudit import __version__
from robaudit.allocator import malloc_setting
from robaudit.attacks import Attack, build_attack
from robaudit.batching import choose as choose_batch_size
from robaudit.checkpoint import RunDir
from robaudit.checks import pixel_attack_inside_ball, reliability_flags
from robaudit.config import DEFAULT_BATCH_SIZE, AuditConfig
from robaudit.data import Dataset, open_dataset, stratified_subset
from robaudit.data.dataset import MNIST_NAME, MNIST_SHAPE
from robaudit.errors import InputError, UsageError
from robaudit.exports import write_adversarial, write_per_sample
from robaudit.gallery import magnified_perturbation, png_data_uri
from robaudit.metrics import (
    confidence_split,
    median_radius,
    per_class_accuracy,
    radius_per_sample,
    wilson_interval,
)
from robaudit.models import ModelAdapter, load_model, resolve_device
from robaudit.models.loading import ModelHandle
from robaudit.models.torch_model import module_handle, weights_sha256
from robaudit.plan import Stage, plan_cascade
from robaudit.precision import float32_math
from robaudit.probes import probe_flags, probe_samples
from robaudit.radius import bisect_radius
from robaudit.results import (
    SCHEMA_VERSION,
    WORST_CASE,
    AttackRow,
    AuditResult,
    ClassInfo,
    Confidence,
    DataInfo,
    Example,
    ModelInfo,
    Perturbation,
    Radius,
)
from robaudit.runner import AttackRecords, ProgressSink, SampleRecords, completed_part, evaluate, sample_seeds

log = logging.getLogger("robaudit")

_VERSIONED = ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx2pytorch", "onnx2torch")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _environment(device: torch.device) -> dict[str, str]:
    env = {"python": platform.python_version(), "platform": platform.platform(), "robaudit": __version__}
    for name in _VERSIONED:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env["device"] = str(device)
    malloc = malloc_setting()
    if malloc is not None:
        env["malloc"] = malloc
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def attack_settings(config: AuditConfig) -> dict[str, object]:
    """The native attacks' settings from the config; each attack takes the fields it declares."""
    return {
        "steps": config.steps,
        "restarts": config.restarts,
        "rel_step_size": config.rel_step_size,
        "loss": config.loss,
        "pixels": config.pixels,
        "population": config.population,
        "generations": config.generations,
    }


def build_attacks(config: AuditConfig) -> list[Attack]:
    """The run's attacks: from profile entries (each with its own settings) or from the CLI's names."""
    names = list(dict.fromkeys(config.attacks))
    for name in config.attack_kwargs:
        if name not in names:
            raise UsageError(f"--attack-kwargs {name}: no such --attack in this run; add --attack {name}")
    defaults = attack_settings(config)
    if config.attack_specs:
        attacks = [
            build_attack(
                spec["name"], {**defaults, **spec["settings"]}, config.attack_kwargs.get(spec["name"])
            )
            for spec in config.attack_specs
        ]
    else:
        attacks = [build_attack(name, defaults, config.attack_kwargs.get(name)) for name in names]
    seen: set[str] = set()
    for i, attack in enumerate(attacks):
        if attack.name in seen:
            raise UsageError(
                f"attacks[{i}]: a second {attack.name}; two entries of one attack need different settings "
                "that change its name (e.g. pgd with loss: dlr is pgd-dlr)"
            )
        seen.add(attack.name)
    return attacks


def threat_overrides(config: AuditConfig, attacks: list[Attack]) -> dict[str, tuple[object, object]]:
    """Per-attack (norms, eps) from profile entries, keyed by the built attack's name."""
    if not config.attack_specs:
        return {}
    return {
        a.name: (spec.get("norms"), spec.get("eps"))
        for a, spec in zip(attacks, config.attack_specs, strict=True)
    }


def _attack_names(stages: list[Stage]) -> list[str]:
    return list(dict.fromkeys(a.name for st in stages for a in st.attacks))


def attack_settings_for(name: str, config: AuditConfig, stages: list[Stage]) -> dict[str, object] | None:
    """The settings a native attack ran with, or None when it did not run."""
    attack = next((a for st in stages for a in st.attacks if a.name == name), None)
    if attack is None:
        return None
    return {f.name: getattr(attack, f.name) for f in fields(attack)}  # type: ignore[arg-type]


def _choose_data(config: AuditConfig, declared: tuple[int, int, int] | None, accepts_mnist: bool) -> str:
    if config.data is not None:
        return config.data
    if (declared == MNIST_SHAPE) or (declared is None and accepts_mnist):
        log.info("no --data given: the model takes 1x28x28 images, so using the bundled MNIST test set")
        return MNIST_NAME
    takes = (
        f"takes {'x'.join(map(str, declared))} images" if declared else "does not take MNIST's 1x28x28 images"
    )
    if declared:
        takes += ", not MNIST's 1x28x28"
    raise UsageError(
        f"--data: missing; the model {takes}, so pass --data "
        f"(an .npz, an .npy with --labels, or an image folder)"
    )


def _perturbation(rec: AttackRecords, fooled: np.ndarray) -> Perturbation | None:
    if not fooled.any():
        return None
    sizes = {k: getattr(rec, k)[fooled] for k in ("linf", "l2", "l0")}
    return Perturbation(
        n=int(fooled.sum()),
        **{
            f"{k}_{stat}": float(fn(v))
            for k, v in sizes.items()
            for stat, fn in (("mean", np.mean), ("median", np.median))
        },
    )


def _ci(successes: int, n: int) -> list[float] | None:
    interval = wilson_interval(successes, n)
    return list(interval) if interval is not None else None


def _row(
    name: str,
    stage: Stage,
    records: SampleRecords,
    fooled: np.ndarray,
    rec: AttackRecords,
    backend: str,
    newly_fooled: int | None,
    num_classes: int,
    seconds: float | None = None,
) -> AttackRow:
    labels = records.labels
    n = len(labels)
    clean_correct = records.clean_pred == labels
    n_cc = int(clean_correct.sum())
    robust = clean_correct & ~fooled
    n_rob = int(robust.sum())
    wrong = rec.pred != labels
    hits = None
    if records.targets is not None:
        hits = int((rec.target_hit & clean_correct & fooled).sum())
    return AttackRow(
        attack=name,
        norm=stage.threat.norm,
        eps=stage.threat.eps,
        n_samples=n,
        n_clean_correct=n_cc,
        n_robust=n_rob,
        robust_accuracy=n_rob / n if n else 0.0,
        robust_error=(n - n_rob) / n if n else 0.0,
        attack_success_rate=(n_cc - n_rob) / n_cc if n_cc else None,
        mean_confidence_adversarial_errors=float(rec.conf[wrong].mean()) if wrong.any() else None,
        robust_accuracy_ci=_ci(n_rob, n),
        attack_success_rate_ci=_ci(n_cc - n_rob, n_cc),
        confidence=Confidence(*confidence_split(rec.conf, ~wrong)),
        perturbation=_perturbation(rec, fooled),
        per_class_robust_accuracy=per_class_accuracy(labels, robust, num_classes),
        n_fooled_by_attack=newly_fooled,
        n_target_hits=hits,
        n_fooled_converted=int((rec.fooled_converted & clean_correct).sum()) if backend == "onnx" else None,
        seconds=round(rec.seconds if seconds is None else seconds, 4),
        error=records.errors.get((name, stage.threat.norm, stage.threat.eps)),
    )


def _rows(
    records: SampleRecords, stages: list[Stage], backend: str, num_classes: int
) -> tuple[list[AttackRow], dict[tuple[str, float], np.ndarray]]:
    """One row per (attack, threat model), cumulative along the cascade, then a worst-case row.

    The worst case at (norm, eps) also counts samples fooled at a smaller eps of the same norm: their
    adversarial example lies inside the larger ball too, so worst-case robust accuracy never rises with eps.
    Also returns each threat model's worst-case fooled mask.
    """
    labels = records.labels
    clean_correct = records.clean_pred == labels
    rows: list[AttackRow] = []
    worst_by_threat: dict[tuple[str, float], np.ndarray] = {}
    fooled_by_norm: dict[str, np.ndarray] = {}
    carried: dict[str, AttackRecords] = {}  # per norm: each sample's record where the worst case fooled it
    for stage in stages:
        norm, eps = stage.threat.norm, stage.threat.eps
        previous = np.zeros(len(labels), bool)
        rec = None
        for attack in stage.attacks:
            rec = records.adversarial[(attack.name, norm, eps)]
            fooled = clean_correct & (rec.pred != labels)
            rows.append(
                _row(
                    attack.name,
                    stage,
                    records,
                    fooled,
                    rec,
                    backend if attack.needs_gradients else "runtime-only",
                    int((fooled & ~previous).sum()),
                    num_classes,
                )
            )
            previous = fooled
        assert rec is not None  # a stage always has at least one attack
        earlier = fooled_by_norm.get(norm, np.zeros(len(labels), bool))
        worst = previous | earlier
        # Samples fooled only at a smaller eps keep that stage's prediction, confidence and sizes.
        merged = _merge(rec, carried.get(norm), earlier & ~previous)
        carried[norm] = merged
        fooled_by_norm[norm] = worst
        worst_by_threat[(norm, eps)] = worst
        stage_seconds = sum(records.adversarial[(a.name, norm, eps)].seconds for a in stage.attacks)
        # The converted graph's count means something only when every attack of the stage used it.
        worst_backend = backend if all(a.needs_gradients for a in stage.attacks) else "runtime-only"
        rows.append(
            _row(WORST_CASE, stage, records, worst, merged, worst_backend, None, num_classes, stage_seconds)
        )
    return rows, worst_by_threat


def _merge(current: AttackRecords, earlier: AttackRecords | None, take_earlier: np.ndarray) -> AttackRecords:
    if earlier is None or not take_earlier.any():
        return current
    merged = AttackRecords.empty(len(take_earlier))
    for name in ("pred", "conf", "fooled_converted", "target_hit", "linf", "l2", "l0"):
        getattr(merged, name)[:] = np.where(take_earlier, getattr(earlier, name), getattr(current, name))
    merged.seconds = current.seconds
    return merged


def _classes(records: SampleRecords, num_classes: int, names: list[str] | None) -> list[ClassInfo]:
    labels = records.labels
    counts = np.bincount(labels, minlength=num_classes)
    clean = per_class_accuracy(labels, records.clean_pred == labels, num_classes)
    return [
        ClassInfo(
            index=c,
            name=names[c] if names and c < len(names) else None,
            n=int(counts[c]),
            clean_accuracy=clean[c],
        )
        for c in range(num_classes)
    ]


def _radius(
    stages: list[Stage],
    worst: dict[tuple[str, float], np.ndarray],
    clean_correct: np.ndarray,
    bisect: Callable[[str, list[Attack], np.ndarray, np.ndarray], np.ndarray] | None = None,
    bisection_steps: int = 0,
) -> list[Radius]:
    """Per norm: the sweep's radius counts and median, and, with ``bisect``, the bisected median."""
    out = []
    for norm in dict.fromkeys(st.threat.norm for st in stages):
        eps = sorted(st.threat.eps for st in stages if st.threat.norm == norm)
        radius = radius_per_sample([worst[(norm, e)] for e in eps], eps, clean_correct)
        bisected = None
        if bisect is not None and norm != "l0":
            grid = np.array([0.0, *eps])
            below = grid[np.searchsorted(grid, radius, side="left") - 1].clip(min=0.0)
            attacks = list(next(st.attacks for st in stages if st.threat.norm == norm))
            narrowed = np.where(
                np.isfinite(radius) & (radius > 0), bisect(norm, attacks, below, radius), radius
            )
            bisected = median_radius(narrowed)
        out.append(
            Radius(
                norm=norm,
                eps=eps,
                fooled_at=[int(((radius == e) & clean_correct).sum()) for e in eps],
                wrong_on_clean=int((~clean_correct).sum()),
                not_fooled=int(np.isinf(radius).sum()),
                median=median_radius(radius),
                bisection_steps=bisection_steps if bisect is not None and norm != "l0" else 0,
                bisected_median=bisected,
            )
        )
    return out


def _gallery(records: SampleRecords, stages: list[Stage]) -> list[Example]:
    out = []
    for st in stages:
        threat = (st.threat.norm, st.threat.eps)
        for pos, (attack, x, x_adv) in sorted(records.examples[threat].items()):
            rec = records.adversarial[(attack, *threat)]  # the prediction the runner recomputed
            out.append(
                Example(
                    sample_index=int(records.indices[pos]),
                    attack=attack,
                    norm=st.threat.norm,
                    eps=st.threat.eps,
                    label=int(records.labels[pos]),
                    clean_pred=int(records.clean_pred[pos]),
                    clean_conf=float(records.clean_conf[pos]),
                    adv_pred=int(rec.pred[pos]),
                    adv_conf=float(rec.conf[pos]),
                    original_png=png_data_uri(x),
                    perturbation_png=png_data_uri(magnified_perturbation(x, x_adv)),
                    adversarial_png=png_data_uri(x_adv),
                )
            )
    return out


@dataclass
class Prepared:
    """Everything loaded and checked before the first attack runs."""

    adapter: ModelAdapter
    dataset: Dataset
    indices: np.ndarray
    stages: list[Stage]
    notes: list[str]
    timings: dict[str, float]
    restore: Callable[[], None]  # puts the user's model back as it was (training mode, requires_grad)
    batch_size: int  # --batch-size, or what auto chose


def prepare(config: AuditConfig, module: torch.nn.Module | None = None) -> Prepared:
    """Load and check everything before any attack runs, so bad input fails fast and writes nothing.

    ``module``: audit this in-memory PyTorch model instead of opening ``config.model`` (which then
    only names it in the report). Its training mode and ``requires_grad`` flags are restored by
    ``Prepared.restore``.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    device = resolve_device(config.device)
    attacks = build_attacks(config)
    handle = load_model(config, device) if module is None else module_handle(module, config, device)
    try:
        return _prepare_with(config, handle, attacks, timings, start)
    except BaseException:
        handle.restore()
        raise


def _prepare_with(
    config: AuditConfig, handle: ModelHandle, attacks: list[Attack], timings: dict[str, float], start: float
) -> Prepared:
    overrides = threat_overrides(config, attacks)
    declared = handle.declared_shape
    accepts_mnist = declared is None and config.data is None and handle.accepts(MNIST_SHAPE)
    data_spec = _choose_data(config, declared, accepts_mnist)
    dataset = open_dataset(
        data_spec,
        labels=config.labels,
        npz_keys=config.npz_keys,
        expected_shape=declared,
        resize=config.resize,
    )
    dataset.validate(config.float_data_range, num_classes=None)
    indices = np.arange(len(dataset))
    if config.limit is not None:
        indices = stratified_subset(dataset.labels, config.limit, config.seed)
    if len(indices) == 0:
        raise InputError(f"{dataset.path}: the dataset is empty; give at least one labelled image")
    fixed_batch = DEFAULT_BATCH_SIZE if config.batch_size == "auto" else config.batch_size
    probe_idx = indices[: min(fixed_batch, len(indices))]
    probe = torch.from_numpy(dataset.to_unit(dataset.read(probe_idx), config.float_data_range))
    adapter = handle.bind(dataset.sample_shape, probe)
    dataset.validate(config.float_data_range, num_classes=adapter.num_classes, pixels=False)
    notes = list(handle.notes) + list(dataset.notes)
    batch_size = fixed_batch
    if config.batch_size == "auto":
        if adapter.capabilities.gradients:
            auto = choose_batch_size(adapter, probe, len(indices))
            batch_size = auto.batch_size
            notes.append(auto.describe())
        else:
            notes.append(f"--batch-size auto: the model has no gradients to probe with; kept {batch_size}")
    timings["load_seconds"] = round(time.perf_counter() - start, 4)

    if data_spec == MNIST_NAME and config.data is None:
        notes.insert(0, "no --data given: evaluated on the bundled MNIST test set")
    caps = adapter.capabilities
    if caps.backend == "onnx" and caps.gradients:
        notes.append(
            f"{Path(config.model).name}: converted to PyTorch with {caps.converter}; largest logit difference from "
            f"ONNX Runtime on the first batch {caps.parity_max_abs_diff:.3g}"
        )
    gradient_attacks = [a.name for a in attacks if a.needs_gradients]
    if gradient_attacks and not caps.gradients:
        remaining = [a.name for a in attacks if not a.needs_gradients]
        message = f"{config.model}: {caps.gradient_note}; gradient attacks ({', '.join(gradient_attacks)}) cannot run"
        if not remaining:
            raise InputError(
                message
                + "; re-export it with standard ops (from PyTorch, torch.onnx.export(..., dynamo=True)), or "
                "audit the PyTorch model directly (TorchScript, .pt2, or a state_dict with --arch)"
            )
        notes.append(message + f"; running only {', '.join(remaining)}")
        attacks = [a for a in attacks if not a.needs_gradients]
    if config.target not in ("none", "random", "least-likely") and int(config.target) >= adapter.num_classes:
        raise UsageError(
            f"--target {config.target}: the model has {adapter.num_classes} classes; give 0..{adapter.num_classes - 1}"
        )
    if config.radius_bisect and config.target != "none":
        raise UsageError("--radius-bisect: bisects the untargeted radius; drop --target or --radius-bisect")
    stages = plan_cascade(attacks, config.norms, config.eps, config.pixels, overrides)  # type: ignore[arg-type]
    return Prepared(adapter, dataset, indices, stages, notes, timings, handle.restore, batch_size)


def run_audit(
    config: AuditConfig, progress: ProgressSink | None = None, module: torch.nn.Module | None = None
) -> AuditResult:
    """Load, attack, verify and summarise. Raises a RobauditError subclass for anything the user can fix.

    ``module``: audit an in-memory PyTorch model (see ``prepare``); it is left as it was found.
    """
    total_start = time.perf_counter()
    # Attacks need gradients even when the caller's notebook runs under inference_mode or no_grad.
    with float32_math(config.tf32), torch.inference_mode(False), torch.enable_grad():
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
    model_sha = _sha256(Path(config.model)) if module is None else weights_sha256(module)
    run_dir = None
    if config.run_dir is not None:
        run_dir = RunDir(config.run_dir)
        run_dir.check_inputs({"model_sha256": model_sha, "data_sha256": prepared.dataset.sha256})
        # The batch size auto chose, not "auto": a resumed run must cut the same batches as the saved ones.
        run_dir.write_config(
            config.model_copy(update={"batch_size": prepared.batch_size}).model_dump_json(indent=2)
        )
    records = evaluate(
        prepared.adapter,
        prepared.dataset,
        prepared.indices,
        prepared.stages,
        batch_size=prepared.batch_size,
        seed=config.seed,
        data_range=config.float_data_range,
        target=config.target,
        progress=progress,
        gallery_size=config.gallery_size,
        keep_adversarial=config.adversarial_path is not None,
        run_dir=run_dir,
    )
    interrupted = records.interrupted
    if interrupted and records.completed == 0:
        raise KeyboardInterrupt  # no batch finished: no figure to report, so no partial report either
    if interrupted:
        records = completed_part(records)
    adapter, dataset, indices = prepared.adapter, prepared.dataset, prepared.indices
    notes, timings, stages = prepared.notes, prepared.timings, prepared.stages
    caps = adapter.capabilities
    # "onnx" rows report how many samples the converted graph alone was fooled on; that needs a conversion.
    row_backend = "onnx" if caps.backend == "onnx" and caps.gradients else "torch"
    rows, worst = _rows(records, stages, row_backend, adapter.num_classes)
    if interrupted:
        resume = f"; resume with robaudit scan --resume {config.run_dir}" if config.run_dir else ""
        notes.insert(
            0,
            f"INCOMPLETE: interrupted after {records.completed} of {len(indices)} samples; the figures cover "
            f"only those{resume}",
        )
    if records.batch_size_used < prepared.batch_size:
        notes.append(
            f"out of memory at --batch-size {prepared.batch_size}: batches were split down to "
            f"{records.batch_size_used}; results are the same, per-sample seeds do not depend on batching"
        )
    bisect = None
    if config.radius_bisect > 0 and not interrupted:

        def bisect(norm: str, attacks: list[Attack], low: np.ndarray, high: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            narrowed = bisect_radius(
                adapter, dataset, indices, attacks, norm, low, high,
                steps=config.radius_bisect, seed=config.seed, data_range=config.float_data_range,
                batch_size=prepared.batch_size,
            )  # fmt: skip
            timings["radius_seconds"] = round(
                timings.get("radius_seconds", 0.0) + time.perf_counter() - start, 4
            )
            return narrowed

    if config.per_sample_path is not None:
        write_per_sample(records, stages, config.per_sample_path)
    if config.adversarial_path is not None:
        saved = write_adversarial(records, config.adversarial_path)
        notes.append(f"saved {saved} adversarial examples to {config.adversarial_path}")
    clean_correct = records.clean_pred == records.labels
    timings["clean_seconds"] = round(records.clean_seconds, 4)
    caps = adapter.capabilities
    model_path = Path(config.model)
    model_format = "onnx" if caps.backend == "onnx" else model_path.suffix.lstrip(".") or "torch"
    if module is not None:
        model_format = f"in-memory {type(module).__name__}"
    subset = "all" if len(indices) == len(dataset) else f"seeded stratified subset, seed {config.seed}"
    result = AuditResult(
        schema_version=SCHEMA_VERSION,
        robaudit_version=__version__,
        created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        model=ModelInfo(
            path=str(model_path),
            format=model_format,
            sha256=model_sha,
            backend=caps.backend,
            sample_shape=list(adapter.sample_shape),
            num_classes=adapter.num_classes,
            output_kind=adapter.output_kind,
            layout=adapter.preprocessing.layout,
            gradients=caps.gradients,
            converter=caps.converter,
            gradient_note=caps.gradient_note,
            parity_max_abs_diff=caps.parity_max_abs_diff,
            runtime_provider=caps.runtime_provider,
        ),
        data=DataInfo(
            source=dataset.path,
            description=dataset.description,
            sha256=dataset.sha256,
            n_total=len(dataset),
            n_evaluated=len(indices),
            subset=subset,
        ),
        settings={
            "attacks": _attack_names(stages),
            "pgd": attack_settings_for("pgd", config, stages),
            "onepixel": attack_settings_for("onepixel", config, stages),
            "attack_kwargs": {k: v for k, v in config.attack_kwargs.items()},
            "threat_models": [st.threat.describe() for st in stages],
            "norms": list(dict.fromkeys(st.threat.norm for st in stages if st.threat.norm != "l0")),
            "eps": sorted({st.threat.eps for st in stages if st.threat.norm != "l0"}),
            "eps_scale": "[0, 1] (the data's pixel range mapped to [0, 1])",
            "target": config.target,
            "input_range": list(config.input_range),
            "data_range": list(config.float_data_range),
            "mean": list(config.mean) if config.mean else None,
            "std": list(config.std) if config.std else None,
            "seed": config.seed,
            "batch_size": prepared.batch_size,
            "batch_size_auto": config.batch_size == "auto",
            "channels_last": config.channels_last,
            "resize": list(config.resize) if config.resize else None,
            "tf32": config.tf32,
            "batch_size_used": records.batch_size_used,
            "device": str(adapter.device),
        },
        environment=_environment(adapter.device),
        clean_accuracy=float(clean_correct.mean()),
        n_clean_correct=int(clean_correct.sum()),
        mean_confidence_clean=float(records.clean_conf.mean()),
        rows=rows,
        clean_accuracy_ci=_ci(int(clean_correct.sum()), len(clean_correct)),
        confidence_clean=Confidence(*confidence_split(records.clean_conf, clean_correct)),
        classes=_classes(records, adapter.num_classes, dataset.class_names),
        radius=_radius(stages, worst, clean_correct, bisect, config.radius_bisect),
        gallery=_gallery(records, stages),
        notes=notes,
        timings=timings,
    )
    flags = reliability_flags(result)
    if config.checks:
        flags += pixel_attack_inside_ball(records, stages, worst)
    if config.checks and not interrupted and records.completed:
        start = time.perf_counter()
        positions = probe_samples(records.clean_pred, records.labels)
        idx = indices[positions]
        x = torch.from_numpy(dataset.to_unit(dataset.read(idx), config.float_data_range)).to(adapter.device)
        y = torch.from_numpy(records.labels[positions]).to(adapter.device)
        seeds = torch.from_numpy(sample_seeds(config.seed, idx)).to(adapter.device)
        probed, probe_notes = probe_flags(adapter, x, y, seeds, stages)
        flags += probed
        notes = [*notes, *probe_notes]
        timings["checks_seconds"] = round(time.perf_counter() - start, 4)
    # The whole audit's wall time: the radius bisection and the reliability probes included.
    timings["total_seconds"] = round(time.perf_counter() - total_start, 4)
    return replace(result, flags=flags, notes=list(notes), timings=dict(timings), complete=not interrupted)
