"""What the result says about the run itself: the model, the data, the settings and the environment."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import TYPE_CHECKING

import torch

from robaudit import __version__
from robaudit.allocator import malloc_setting
from robaudit.audit.attack_plan import plan_settings
from robaudit.results import DataInfo, ModelInfo

if TYPE_CHECKING:
    from robaudit.audit.preparation import Prepared
    from robaudit.audit.records import SampleRecords
    from robaudit.config import AuditConfig

_VERSIONED = ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx2pytorch", "onnx2torch")


def environment(device: torch.device) -> dict[str, str]:
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


def model_info(
    config: AuditConfig, prepared: Prepared, model_sha: str, module: torch.nn.Module | None
) -> ModelInfo:
    adapter = prepared.adapter
    caps = adapter.capabilities
    model_path = config.model_path
    model_format = "onnx" if caps.backend == "onnx" else model_path.suffix.lstrip(".") or "torch"
    if module is not None:
        model_format = f"in-memory {type(module).__name__}"
    return ModelInfo(
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
    )


def data_info(config: AuditConfig, prepared: Prepared, records: SampleRecords) -> DataInfo:
    """``n_evaluated`` counts the samples whose batches finished (fewer than ``n_requested`` when the
    run was interrupted), so that every figure of the result has the same denominator."""
    dataset, indices = prepared.dataset, prepared.indices
    subset = "all" if len(indices) == len(dataset) else f"seeded stratified subset, seed {config.run.seed}"
    return DataInfo(
        source=dataset.path,
        description=dataset.description,
        sha256=dataset.sha256,
        n_total=len(dataset),
        n_evaluated=len(records.labels),
        subset=subset,
        n_requested=len(indices),
    )


def run_settings(config: AuditConfig, prepared: Prepared, records: SampleRecords) -> dict[str, object]:
    stages = prepared.stages
    return {
        **plan_settings(config, stages),
        "eps_scale": "[0, 1] (the data's pixel range mapped to [0, 1])",
        "target": config.threat.target,
        "input_range": list(config.preprocessing.input_range),
        "data_range": list(config.float_data_range),
        "mean": list(config.preprocessing.mean) if config.preprocessing.mean else None,
        "std": list(config.preprocessing.std) if config.preprocessing.std else None,
        "seed": config.run.seed,
        "batch_size": prepared.batch_size,
        "batch_size_auto": config.run.batch_size == "auto",
        "channels_last": config.run.channels_last,
        "resize": list(config.data.resize) if config.data.resize else None,
        "tf32": config.run.tf32,
        "batch_size_used": records.batch_size_used,
        "gallery_size": config.reports.gallery_size,
        "device": str(prepared.adapter.device),
        "random_model": prepared.eot.random_model,
        "eot": prepared.eot.eot,
        "eot_evals": prepared.eot.evals,
    }
