"""Records -> the result's figures: rows per attack and threat model, classes, radius and gallery."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from robaudit.audit.gallery import magnified_perturbation, png_data_uri
from robaudit.audit.records import ATTACK_FIELDS, EXACT, AttackRecords, SampleRecords, Threat
from robaudit.metrics import (
    confidence_split,
    median_radius,
    per_class_accuracy,
    radius_per_sample,
    wilson_interval,
)
from robaudit.results import WORST_CASE, AttackRow, ClassInfo, Confidence, Example, Perturbation, Radius

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from robaudit.attacks.base import Attack
    from robaudit.audit.plan import Stage

    # (norm, the stage's attacks, per-sample lower and upper radius) -> narrowed upper radius
    Bisect = Callable[[str, list[Attack], np.ndarray, np.ndarray], np.ndarray]


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


def ci(successes: int, n: int) -> list[float] | None:
    """The Wilson 95% interval as a list, or None when there is nothing to estimate."""
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
        robust_accuracy_ci=ci(n_rob, n),
        attack_success_rate_ci=ci(n_cc - n_rob, n_cc),
        confidence=Confidence(*confidence_split(rec.conf, ~wrong)),
        perturbation=_perturbation(rec, fooled),
        per_class_robust_accuracy=per_class_accuracy(labels, robust, num_classes),
        n_fooled_by_attack=newly_fooled,
        n_target_hits=hits,
        n_fooled_converted=int((rec.fooled_converted & clean_correct).sum()) if backend == "onnx" else None,
        seconds=round(rec.seconds if seconds is None else seconds, 4),
        error=records.errors.get((name, stage.threat.norm, stage.threat.eps)),
    )


def attack_rows(
    records: SampleRecords,
    stages: list[Stage],
    backend: str,
    num_classes: int,
    exact_threats: Collection[Threat] = (),
) -> tuple[list[AttackRow], dict[Threat, np.ndarray]]:
    """One row per (attack, threat model), cumulative along the cascade, then a worst-case row.

    Where exact verification ran (``exact_threats``), an ``exact`` row follows the attacks: the samples
    it newly fools are those whose counterexample the reference runtime confirmed (``audit.shard``).
    The worst case at (norm, eps) also counts samples fooled at a smaller eps of the same norm: their
    adversarial example lies inside the larger ball too, so worst-case robust accuracy never rises with eps.
    Also returns each threat model's worst-case fooled mask.
    """
    labels = records.labels
    clean_correct = records.clean_pred == labels
    rows: list[AttackRow] = []
    worst_by_threat: dict[Threat, np.ndarray] = {}
    fooled_by_norm: dict[str, np.ndarray] = {}
    carried: dict[str, AttackRecords] = {}  # per norm: each sample's record where the worst case fooled it
    for stage in stages:
        norm, eps = stage.threat.norm, stage.threat.eps
        # The converted graph's count means something only when every attack of the stage used it.
        worst_backend = backend if all(a.needs_gradients for a in stage.attacks) else "runtime-only"
        steps = [(a.name, backend if a.needs_gradients else "runtime-only") for a in stage.attacks]
        if (EXACT, norm, eps) in records.adversarial:  # the cascade's last step (equal to the one
            steps.append((EXACT, worst_backend))  # before it where exact verification did not run)
        previous = np.zeros(len(labels), bool)
        rec = None
        shown = []
        for name, step_backend in steps:
            rec = records.adversarial[(name, norm, eps)]
            fooled = clean_correct & (rec.pred != labels)
            newly = int((fooled & ~previous).sum())
            if name != EXACT or (norm, eps) in exact_threats or newly:
                rows.append(_row(name, stage, records, fooled, rec, step_backend, newly, num_classes))
                shown.append(name)
            previous = fooled
        assert rec is not None  # a stage always has at least one attack
        earlier = fooled_by_norm.get(norm, np.zeros(len(labels), bool))
        worst = previous | earlier
        # Samples fooled only at a smaller eps keep that stage's prediction, confidence and sizes.
        merged = _merge(rec, carried.get(norm), earlier & ~previous)
        carried[norm] = merged
        fooled_by_norm[norm] = worst
        worst_by_threat[(norm, eps)] = worst
        stage_seconds = sum(records.adversarial[(name, norm, eps)].seconds for name in shown)
        rows.append(
            _row(WORST_CASE, stage, records, worst, merged, worst_backend, None, num_classes, stage_seconds)
        )
    return rows, worst_by_threat


def _merge(current: AttackRecords, earlier: AttackRecords | None, take_earlier: np.ndarray) -> AttackRecords:
    if earlier is None or not take_earlier.any():
        return current
    merged = AttackRecords.empty(len(take_earlier))
    for name in ATTACK_FIELDS:
        getattr(merged, name)[:] = np.where(take_earlier, getattr(earlier, name), getattr(current, name))
    merged.seconds = current.seconds
    return merged


def class_infos(records: SampleRecords, num_classes: int, names: list[str] | None) -> list[ClassInfo]:
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


def radii(
    stages: list[Stage],
    worst: dict[Threat, np.ndarray],
    clean_correct: np.ndarray,
    bisect: Bisect | None = None,
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


def gallery_examples(records: SampleRecords, stages: list[Stage]) -> list[Example]:
    out = []
    for st in stages:
        threat = (st.threat.norm, st.threat.eps)
        for row, (attack, x, x_adv) in sorted(records.examples[threat].items()):
            rec = records.adversarial[(attack, *threat)]  # the prediction the runner recomputed
            out.append(
                Example(
                    sample_index=int(records.indices[row]),
                    attack=attack,
                    norm=st.threat.norm,
                    eps=st.threat.eps,
                    label=int(records.labels[row]),
                    clean_pred=int(records.clean_pred[row]),
                    clean_conf=float(records.clean_conf[row]),
                    adv_pred=int(rec.pred[row]),
                    adv_conf=float(rec.conf[row]),
                    original_png=png_data_uri(x),
                    perturbation_png=png_data_uri(magnified_perturbation(x, x_adv)),
                    adversarial_png=png_data_uri(x_adv),
                )
            )
    return out
