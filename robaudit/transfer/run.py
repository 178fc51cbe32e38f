"""``run_transfer(configs)``: every model attacks the same samples, every example set is tried on every model.

Each model is prepared as ``scan`` prepares it (``audit.preparation.prepare``), so its attacks, batches,
seeds and verification are scan's, and the diagonal of every matrix is scan's white-box figure. The
examples travel in pixel space, (N, C, H, W) on [0, 1]; each target's handle applies its own layout and
normalisation, and predicts on its reference runtime (ONNX Runtime for an ONNX file).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit import __version__
from robaudit.audit.gallery import png_data_uri
from robaudit.audit.preparation import Prepared, prepare
from robaudit.errors import UsageError
from robaudit.hashing import sha256_file
from robaudit.models.torch_model import weights_sha256
from robaudit.precision import float32_math
from robaudit.results import WORST_CASE
from robaudit.transfer.examples import Key, SourceExamples, batches, make_examples, predict
from robaudit.transfer.matrix import Predictions, cell, masks, worst_case_choice
from robaudit.transfer.result import (
    DEFAULT_DENOMINATOR,
    DENOMINATOR_TEXT,
    DENOMINATORS,
    DOCUMENT,
    TRANSFER_SCHEMA_VERSION,
    TransferExample,
    TransferMatrix,
    TransferModel,
    TransferResult,
)

if TYPE_CHECKING:
    from robaudit.config import AuditConfig

EXAMPLES_PER_PAIR = 2  # transferred examples kept per (source, target) off the diagonal, for the report


def run_transfer(
    configs: Sequence[AuditConfig],
    denominator: str = DEFAULT_DENOMINATOR,
    modules: Sequence[torch.nn.Module | None] | None = None,
) -> TransferResult:
    """Transfer matrices of the configurations' models (one configuration per model: the same data,
    attacks and threat models; each its own model and preprocessing). ``modules``: in-memory PyTorch
    models in place of the configurations' files (None entries open the file). Raises UsageError for
    fewer than two models, a targeted run, or models that do not see the same samples."""
    if len(configs) < 2:
        raise UsageError("MODEL: transfer needs at least two models; give two or more model files")
    if denominator not in DENOMINATORS:
        raise UsageError(f"--denominator {denominator}: choose one of {', '.join(DENOMINATORS)}")
    if any(c.threat.target != "none" for c in configs):
        raise UsageError("--target: transfer measures untargeted errors; drop --target")
    mods = list(modules) if modules is not None else [None] * len(configs)
    start = time.perf_counter()
    prepared: list[Prepared] = []
    with float32_math(configs[0].run.tf32), torch.inference_mode(False), torch.enable_grad():
        try:
            for config, module in zip(configs, mods, strict=True):
                prepared.append(prepare(config, module))
            _check_same_samples(configs, prepared)
            return _transfer(configs, prepared, mods, denominator, start)
        finally:
            for p in prepared:
                p.restore()


def _check_same_samples(configs: Sequence[AuditConfig], prepared: Sequence[Prepared]) -> None:
    first = prepared[0]
    for config, p in zip(configs[1:], prepared[1:], strict=True):
        same = p.dataset.sha256 == first.dataset.sha256 and np.array_equal(p.indices, first.indices)
        if not same or p.dataset.sample_shape != first.dataset.sample_shape:
            raise UsageError(
                f"{config.model.path}: sees other samples than {configs[0].model.path}; give every model the "
                "same --data, --limit and --resize"
            )
        if [s.threat for s in p.stages] != [s.threat for s in first.stages]:
            raise UsageError(
                f"{config.model.path}: runs other threat models than {configs[0].model.path}; some attacks "
                "cannot run on it (no gradients?); give models that take the same attacks"
            )


def _transfer(
    configs: Sequence[AuditConfig],
    prepared: list[Prepared],
    modules: Sequence[torch.nn.Module | None],
    denominator: str,
    start: float,
) -> TransferResult:
    timings: dict[str, float] = {"load_seconds": round(time.perf_counter() - start, 4)}
    first = prepared[0]
    labels = first.dataset.labels[first.indices].astype(np.int64)
    clean_x = np.concatenate([x for _, x, _ in batches(configs[0], first)])
    clean = [predict(p, clean_x)[0] for p in prepared]
    sources: list[SourceExamples] = []
    for i, (config, p) in enumerate(zip(configs, prepared, strict=True)):
        sources.append(make_examples(config, p, clean[i]))
        timings[f"attack_seconds[{i}]"] = round(sources[-1].seconds, 4)
    # preds[s][t][key]: target t on source s's examples of key
    preds: list[list[dict[Key, Predictions]]] = []
    for s, src in enumerate(sources):
        row = []
        for t, p in enumerate(prepared):
            tick = time.perf_counter()
            row.append({key: Predictions(*predict(p, adv)) for key, adv in src.adversarial.items()})
            timings[f"evaluate_seconds[{s}][{t}]"] = round(time.perf_counter() - tick, 4)
        preds.append(row)
    matrices = _matrices(first, sources, preds, clean, clean_x, labels, denominator)
    notes = list(dict.fromkeys(n for p in prepared for n in p.notes))
    timings["total_seconds"] = round(time.perf_counter() - start, 4)
    return TransferResult(
        schema_version=TRANSFER_SCHEMA_VERSION,
        document=DOCUMENT,
        robaudit_version=__version__,
        created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        denominator=denominator,
        denominator_text=DENOMINATOR_TEXT[denominator],
        data={
            "path": str(first.dataset.path),
            "sha256": first.dataset.sha256,
            "n_samples": len(labels),
        },
        settings={
            "seed": configs[0].run.seed,
            "attacks": list(dict.fromkeys(a.name for st in first.stages for a in st.attacks)),
            "threat_models": [st.threat.describe() for st in first.stages],
        },
        models=[
            _model(c, p, m, cl, labels) for c, p, m, cl in zip(configs, prepared, modules, clean, strict=True)
        ],
        matrices=matrices,
        notes=notes,
        timings=timings,
    )


def _model(
    config: AuditConfig, p: Prepared, module: torch.nn.Module | None, clean: np.ndarray, labels: np.ndarray
) -> TransferModel:
    correct = clean == labels
    return TransferModel(
        name=config.model_path.stem if module is None else config.model_path.name,
        path=str(config.model_path),
        sha256=sha256_file(config.model_path) if module is None else weights_sha256(module),
        backend=p.adapter.capabilities.backend,
        layout=p.adapter.preprocessing.layout,
        num_classes=p.adapter.num_classes,
        clean_accuracy=float(correct.mean()) if len(correct) else 0.0,
        n_clean_correct=int(correct.sum()),
    )


def _matrices(
    first: Prepared,
    sources: list[SourceExamples],
    preds: list[list[dict[Key, Predictions]]],
    clean: list[np.ndarray],
    clean_x: np.ndarray,
    labels: np.ndarray,
    denominator: str,
) -> list[TransferMatrix]:
    n_models = len(sources)
    out = []
    for stage in first.stages:
        norm, eps = stage.threat.norm, stage.threat.eps
        keys = [(a.name, norm, eps) for a in stage.attacks]
        for key in keys:
            failed = [src.errors[key] for src in sources if key in src.errors]
            if failed:
                out.append(TransferMatrix(key[0], norm, eps, cells=[], error=failed[0]))
                continue
            pick = [[preds[s][t][key] for t in range(n_models)] for s in range(n_models)]
            advs = [src.adversarial[key] for src in sources]
            out.append(_matrix(key[0], norm, eps, pick, advs, clean, clean_x, labels, denominator, first))
        usable = [k for k in keys if all(k in src.adversarial for src in sources)]
        if len(usable) > 1:
            out.append(_worst_case(usable, sources, preds, clean, clean_x, labels, denominator, first))
    return out


def _worst_case(
    keys: list[Key],
    sources: list[SourceExamples],
    preds: list[list[dict[Key, Predictions]]],
    clean: list[np.ndarray],
    clean_x: np.ndarray,
    labels: np.ndarray,
    denominator: str,
    first: Prepared,
) -> TransferMatrix:
    """The stage's worst case per source: each sample's example from the first attack that fools the
    source (the cascade's order), so its diagonal is scan's worst-case row at this eps."""
    n_models = len(sources)
    rows = np.arange(len(labels))
    pick: list[list[Predictions]] = []
    advs = []
    for s in range(n_models):
        choice = worst_case_choice([preds[s][s][k].pred != labels for k in keys])
        pick.append(
            [
                Predictions(
                    np.stack([preds[s][t][k].pred for k in keys])[choice, rows],
                    np.stack([preds[s][t][k].conf for k in keys])[choice, rows],
                )
                for t in range(n_models)
            ]
        )
        stacked = np.stack([sources[s].adversarial[k] for k in keys])
        advs.append(stacked[choice, rows])
    _, norm, eps = keys[0]
    return _matrix(WORST_CASE, norm, eps, pick, advs, clean, clean_x, labels, denominator, first)


def _matrix(
    attack: str,
    norm: str,
    eps: float,
    pick: list[list[Predictions]],
    advs: list[np.ndarray],
    clean: list[np.ndarray],
    clean_x: np.ndarray,
    labels: np.ndarray,
    denominator: str,
    first: Prepared,
) -> TransferMatrix:
    n_models = len(pick)
    cells = [
        cell(s, t, denominator, labels, clean[s], clean[t], pick[s][t], pick[s][s])
        for s in range(n_models)
        for t in range(n_models)
    ]
    examples = []
    for s in range(n_models):
        for t in range(n_models):
            if s == t:
                continue
            mask = masks(labels, clean[s], clean[t])[denominator]
            hits = np.flatnonzero(mask & (pick[s][t].pred != labels) & (clean[s] == labels))[
                :EXAMPLES_PER_PAIR
            ]
            examples += [
                TransferExample(
                    source=s,
                    target=t,
                    sample_index=int(first.indices[i]),
                    label=int(labels[i]),
                    source_pred=int(pick[s][s].pred[i]),
                    target_pred=int(pick[s][t].pred[i]),
                    target_conf=float(pick[s][t].conf[i]),
                    original_png=png_data_uri(clean_x[i]),
                    adversarial_png=png_data_uri(advs[s][i]),
                )
                for i in hits
            ]
    return TransferMatrix(attack, norm, eps, cells, examples)
