"""Everything loaded and checked before the first attack runs, so bad input fails fast and writes nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.audit.attack_plan import build_attacks, threat_overrides
from robaudit.audit.batching import choose as choose_batch_size
from robaudit.audit.plan import Stage, plan_cascade
from robaudit.audit.randomness import NO_EOT, EotPlan, is_random, plan_eot, with_eot
from robaudit.audit.surrogate import load_surrogate, transfer_attacks
from robaudit.config import DEFAULT_BATCH_SIZE
from robaudit.data import Dataset, open_dataset, stratified_subset
from robaudit.data.dataset import MNIST_NAME, MNIST_SHAPE
from robaudit.errors import InputError, UsageError
from robaudit.models import ModelAdapter, load_model, resolve_device
from robaudit.models.torch_model import module_handle

if TYPE_CHECKING:
    from robaudit.attacks.base import Attack
    from robaudit.config import AuditConfig
    from robaudit.models import ModelHandle

log = logging.getLogger("robaudit")


def _choose_data(config: AuditConfig, declared: tuple[int, int, int] | None, accepts_mnist: bool) -> str:
    if config.data.path is not None:
        return config.data.path
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
    eot: EotPlan = NO_EOT  # a random model's gradient samples and passes per prediction


def prepare(config: AuditConfig, module: torch.nn.Module | None = None) -> Prepared:
    """Load and check everything before any attack runs, so bad input fails fast and writes nothing.

    ``module``: audit this in-memory PyTorch model instead of opening ``config.model.path`` (which then
    only names it in the report). Its training mode and ``requires_grad`` flags are restored by
    ``Prepared.restore``.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    device = resolve_device(config.run.device)
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
    dataset, data_spec, indices = _open_data(config, handle)
    fixed_batch = DEFAULT_BATCH_SIZE if config.run.batch_size == "auto" else config.run.batch_size
    probe_idx = indices[: min(fixed_batch, len(indices))]
    probe = torch.from_numpy(dataset.to_unit(dataset.read(probe_idx), config.float_data_range))
    adapter = handle.bind(dataset.sample_shape, probe)
    dataset.validate(config.float_data_range, num_classes=adapter.num_classes, pixels=False)
    notes = list(handle.notes) + list(dataset.notes)
    batch_size = _batch_size(config, adapter, probe, len(indices), fixed_batch, notes)
    timings["load_seconds"] = round(time.perf_counter() - start, 4)

    if data_spec == MNIST_NAME and config.data.path is None:
        notes.insert(
            0,
            "no --data given: evaluated on the bundled MNIST test set, which holds the training images of "
            "robaudit's sample models (0-7999); audit those on their holdout set, --data "
            "sample_models/mnist_holdout.npz",
        )
    restore = handle.restore
    # The transfer attacks join before the target's gradients are checked: they need none of its own.
    if config.model.surrogate is not None:
        attacks, restore = _with_surrogate(
            config, dataset, probe, adapter, attacks, overrides, handle.restore
        )
    random_model = is_random(adapter, probe)
    attacks = _runnable_attacks(config, adapter, attacks, notes, random_model)
    eot = plan_eot(config, random_model)
    attacks = with_eot(attacks, eot)
    notes.extend(n for n in [eot.note()] if n)
    if (
        config.threat.target not in ("none", "random", "least-likely")
        and int(config.threat.target) >= adapter.num_classes
    ):
        raise UsageError(
            f"--target {config.threat.target}: the model has {adapter.num_classes} classes; give 0..{adapter.num_classes - 1}"
        )
    if config.reports.radius_bisect and config.threat.target != "none":
        raise UsageError("--radius-bisect: bisects the untargeted radius; drop --target or --radius-bisect")
    stages = plan_cascade(attacks, config.threat.norms, config.threat.eps, 1, overrides)  # type: ignore[arg-type]
    return Prepared(adapter, dataset, indices, stages, notes, timings, restore, batch_size, eot)


def _with_surrogate(
    config: AuditConfig,
    dataset: Dataset,
    probe: torch.Tensor,
    adapter: ModelAdapter,
    attacks: list[Attack],
    overrides: dict[str, tuple[object, object]],
    target_restore: Callable[[], None],
) -> tuple[list[Attack], Callable[[], None]]:
    """The run's attacks plus a transfer attack per gradient attack (``--surrogate``), each under its
    attack's own threat models; and a restore that also lets go of the surrogate."""
    surrogate, handle = load_surrogate(config, dataset.sample_shape, probe, adapter.num_classes)
    extra = transfer_attacks(attacks, surrogate)
    if not extra:
        handle.restore()
        raise UsageError(
            "--surrogate: the run has no gradient attack to run on it; add --attack fgsm or --attack pgd"
        )
    overrides.update({t.name: overrides[t.inner.name] for t in extra})

    def restore() -> None:
        try:
            target_restore()
        finally:
            handle.restore()

    return [*attacks, *extra], restore


def _open_data(config: AuditConfig, handle: ModelHandle) -> tuple[Dataset, str, np.ndarray]:
    """The dataset (pixels checked), what --data resolved to, and the indices of the samples to audit."""
    declared = handle.declared_shape
    accepts_mnist = declared is None and config.data.path is None and handle.accepts(MNIST_SHAPE)
    data_spec = _choose_data(config, declared, accepts_mnist)
    dataset = open_dataset(
        data_spec,
        labels=config.data.labels,
        npz_keys=config.data.npz_keys,
        expected_shape=declared,
        resize=config.data.resize,
    )
    dataset.validate(config.float_data_range, num_classes=None)
    indices = np.arange(len(dataset))
    if config.data.limit is not None:
        indices = stratified_subset(dataset.labels, config.data.limit, config.run.seed)
        if config.data.limit > len(dataset):
            dataset.notes.append(
                f"--limit {config.data.limit}: {dataset.path} holds only {len(dataset)} images, so all "
                f"{len(dataset)} were evaluated"
            )
    if len(indices) == 0:
        raise InputError(f"{dataset.path}: the dataset is empty; give at least one labelled image")
    return dataset, data_spec, indices


def _batch_size(
    config: AuditConfig, adapter: ModelAdapter, probe: torch.Tensor, n: int, fixed: int, notes: list[str]
) -> int:
    """--batch-size, or with auto the probe's choice (noted)."""
    if config.run.batch_size != "auto":
        return fixed
    if not adapter.capabilities.gradients:
        notes.append(f"--batch-size auto: the model has no gradients to probe with; kept {fixed}")
        return fixed
    auto = choose_batch_size(adapter, probe, n)
    notes.append(auto.describe())
    return auto.batch_size


def _runnable_attacks(
    config: AuditConfig, adapter: ModelAdapter, attacks: list[Attack], notes: list[str], random_model: bool
) -> list[Attack]:
    """The attacks the model can take: without gradients, only the gradient-free ones (noted), and
    none at all is an error."""
    caps = adapter.capabilities
    if caps.backend == "onnx" and caps.gradients:
        notes.append(
            f"{config.model_path.name}: converted to PyTorch with {caps.converter}; largest logit difference from "
            f"ONNX Runtime on the first batch {caps.parity_max_abs_diff:.3g}"
            + (" (between the means of many passes: the model is random)" if random_model else "")
        )
    gradient_attacks = [a.name for a in attacks if a.needs_gradients]
    if not gradient_attacks or caps.gradients:
        return attacks
    remaining = [a.name for a in attacks if not a.needs_gradients]
    message = f"{config.model.path}: {caps.gradient_note}; gradient attacks ({', '.join(gradient_attacks)}) cannot run"
    if not remaining:
        raise InputError(
            message
            + "; re-export it with standard ops (from PyTorch, torch.onnx.export(..., dynamo=True)), or "
            "audit the PyTorch model directly (TorchScript, .pt2, or a state_dict with --arch)"
        )
    notes.append(message + f"; running only {', '.join(remaining)}")
    return [a for a in attacks if not a.needs_gradients]
