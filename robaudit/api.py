"""Library entry point: ``run_audit(config) -> AuditResult``. The CLI is a thin layer over this."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from robaudit import __version__
from robaudit.attacks import Attack, build_attack
from robaudit.config import AuditConfig
from robaudit.data import Dataset, open_dataset, stratified_subset
from robaudit.data.dataset import MNIST_NAME, MNIST_SHAPE
from robaudit.errors import InputError, UsageError
from robaudit.models import ModelAdapter, load_model, resolve_device
from robaudit.results import SCHEMA_VERSION, AttackRow, AuditResult, DataInfo, ModelInfo
from robaudit.runner import ProgressSink, SampleRecords, evaluate

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
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def attack_settings(config: AuditConfig) -> dict[str, object]:
    return {
        "steps": config.steps,
        "restarts": config.restarts,
        "rel_step_size": config.rel_step_size,
        "loss": config.loss,
    }


def _choose_data(config: AuditConfig, declared: tuple[int, int, int] | None, accepts_mnist: bool) -> str:
    if config.data is not None:
        return config.data
    if (declared == MNIST_SHAPE) or (declared is None and accepts_mnist):
        log.info("no --data given: the model takes 1x28x28 images, so using the bundled MNIST test set")
        return MNIST_NAME
    shape = "x".join(map(str, declared)) if declared else "an unknown shape"
    raise UsageError(
        f"--data: missing; the model takes {shape} images, not MNIST's 1x28x28, so pass --data "
        f"(an .npz, an .npy with --labels, or an image folder)"
    )


def _rows(
    records: SampleRecords, attacks: list[str], norm: str, eps_list: tuple[float, ...], backend: str
) -> list[AttackRow]:
    labels = records.labels
    n = len(labels)
    clean_correct = records.clean_pred == labels
    n_cc = int(clean_correct.sum())
    rows = []
    for eps in eps_list:
        for name in attacks:
            rec = records.adversarial[(name, eps)]
            robust = clean_correct & (rec.pred == labels)
            wrong = rec.pred != labels
            n_rob = int(robust.sum())
            rows.append(
                AttackRow(
                    attack=name,
                    norm=norm,
                    eps=float(eps),
                    n_samples=n,
                    n_clean_correct=n_cc,
                    n_robust=n_rob,
                    robust_accuracy=n_rob / n if n else 0.0,
                    robust_error=1.0 - n_rob / n if n else 0.0,
                    attack_success_rate=(n_cc - n_rob) / n_cc if n_cc else None,
                    mean_confidence_adversarial_errors=float(rec.conf[wrong].mean()) if wrong.any() else None,
                    n_fooled_converted=int((rec.fooled_converted & clean_correct).sum())
                    if backend == "onnx"
                    else None,
                    seconds=round(rec.seconds, 4),
                )
            )
    return rows


def prepare(
    config: AuditConfig,
) -> tuple[ModelAdapter, Dataset, np.ndarray, list[Attack], list[str], dict[str, float]]:
    """Load and check everything before any attack runs, so bad input fails fast and writes nothing."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    device = resolve_device(config.device)
    attacks = [build_attack(name, attack_settings(config)) for name in config.attacks]
    handle = load_model(config, device)
    declared = handle.declared_shape
    accepts_mnist = declared is None and config.data is None and handle.accepts(MNIST_SHAPE)
    data_spec = _choose_data(config, declared, accepts_mnist)
    dataset = open_dataset(data_spec, labels=config.labels, npz_keys=config.npz_keys, expected_shape=declared)
    dataset.validate(config.input_range, num_classes=None)
    indices = np.arange(len(dataset))
    if config.limit is not None:
        indices = stratified_subset(dataset.labels, config.limit, config.seed)
    if len(indices) == 0:
        raise InputError(f"{dataset.path}: the dataset is empty; give at least one labelled image")
    probe_idx = indices[: min(config.batch_size, len(indices))]
    probe = torch.from_numpy(dataset.to_unit(dataset.read(probe_idx), config.input_range))
    adapter = handle.bind(dataset.sample_shape, probe)
    dataset.validate(config.input_range, num_classes=adapter.num_classes, pixels=False)
    timings["load_seconds"] = round(time.perf_counter() - start, 4)

    notes = list(handle.notes) + list(dataset.notes)
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
                + "; re-export the model with standard ops (e.g. torch.onnx.export), or audit the PyTorch "
                "model directly"
            )
        notes.append(message + f"; running only {', '.join(remaining)}")
        attacks = [a for a in attacks if not a.needs_gradients]
    return adapter, dataset, indices, attacks, notes, timings


def run_audit(config: AuditConfig, progress: ProgressSink | None = None) -> AuditResult:
    """Load, attack, verify and summarise. Raises a RobauditError subclass for anything the user can fix."""
    total_start = time.perf_counter()
    adapter, dataset, indices, attacks, notes, timings = prepare(config)
    for note in notes:
        log.info(note)

    records = evaluate(
        adapter,
        dataset,
        indices,
        attacks,
        norm=config.norm,
        eps_list=config.eps,
        batch_size=config.batch_size,
        seed=config.seed,
        input_range=config.input_range,
        progress=progress,
    )
    rows = _rows(records, [a.name for a in attacks], config.norm, config.eps, adapter.capabilities.backend)
    clean_correct = records.clean_pred == records.labels
    timings["clean_seconds"] = round(records.clean_seconds, 4)
    timings["total_seconds"] = round(time.perf_counter() - total_start, 4)
    caps = adapter.capabilities
    model_path = Path(config.model)
    subset = "all" if len(indices) == len(dataset) else f"seeded stratified subset, seed {config.seed}"
    return AuditResult(
        schema_version=SCHEMA_VERSION,
        robaudit_version=__version__,
        created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        model=ModelInfo(
            path=str(model_path),
            format="onnx" if caps.backend == "onnx" else model_path.suffix.lstrip(".") or "torch",
            sha256=_sha256(model_path),
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
            "attacks": [a.name for a in attacks],
            "pgd": attack_settings(config) if any(a.name == "pgd" for a in attacks) else None,
            "norm": config.norm,
            "eps": list(config.eps),
            "eps_scale": "[0, 1] (the data's pixel range mapped to [0, 1])",
            "input_range": list(config.input_range),
            "mean": list(config.mean) if config.mean else None,
            "std": list(config.std) if config.std else None,
            "seed": config.seed,
            "batch_size": config.batch_size,
            "device": str(adapter.device),
        },
        environment=_environment(adapter.device),
        clean_accuracy=float(clean_correct.mean()),
        n_clean_correct=int(clean_correct.sum()),
        mean_confidence_clean=float(records.clean_conf.mean()),
        rows=rows,
        notes=notes,
        timings=timings,
    )
