"""Certification codes -> the result's figures: each row's certified count, its interval and the
samples left unknown, the notes for threat models without a certificate, and the note on exact
verification's counterexamples (confirmed ones count as fooled in the ``exact`` row)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from robaudit.audit.records import EXACT
from robaudit.audit.summary import ci
from robaudit.certify.onepixel_run import sweep_note
from robaudit.certify.run import CERTIFIED, NULL, REFUTED, check_sound, methods_used, note_for
from robaudit.certify.walk import Walk, walk_adapter
from robaudit.results import WORST_CASE, AttackRow

if TYPE_CHECKING:
    from robaudit.audit.plan import Stage
    from robaudit.audit.preparation import Prepared
    from robaudit.audit.records import SampleRecords, Threat


def model_walk(prepared: Prepared, method: str, data_range: tuple[float, float]) -> Walk | None:
    """The model's chain of ops (walked once per model; None when nothing is to be certified)."""
    if method == "none":
        return None
    dataset = prepared.dataset
    x = torch.from_numpy(dataset.to_unit(dataset.read(prepared.indices[:2]), data_range))
    return walk_adapter(prepared.adapter, x)


def exact_threats(stages: list[Stage], method: str, walk: Walk | None) -> set[Threat]:
    """The threat models where exact verification ran (``crown+exact``): their cascade ends in an
    ``exact`` step that the rows and the per-sample records show."""
    threats = ((st.threat.norm, st.threat.eps) for st in stages)
    return {t for t in threats if methods_used(method, t[0], walk, t[1]) == "crown+exact"}


def certified_rows(
    rows: list[AttackRow],
    records: SampleRecords,
    stages: list[Stage],
    worst: dict[Threat, np.ndarray],
    method: str,
    walk: Walk | None,
) -> tuple[list[AttackRow], list[str]]:
    """The rows with their threat model's certification, and one note per reason a threat model has
    none (or less than was asked). Raises ``CertificationError`` for a certified sample that the worst
    case fooled, which includes a smaller eps of the same norm (its example lies in the larger ball)."""
    notes: list[str] = []
    if method == "none":
        return rows, notes
    labels = records.labels
    clean_correct = records.clean_pred == labels
    out = []
    for row in rows:
        threat = (row.norm, row.eps)
        codes = records.certified.get(threat)
        used = methods_used(method, row.norm, walk, row.eps)
        note = note_for(method, row.norm, walk, row.eps)
        if note is not None and note not in notes:
            notes.append(note)
        if codes is None or used is None or bool((codes == NULL).all()) and len(codes):
            out.append(row)
            continue
        if row.attack == WORST_CASE:
            robust = clean_correct & ~worst[threat]
            check_sound(codes, worst[threat], records.indices, f"{row.norm} eps={row.eps:g}")
        else:
            robust = clean_correct & (records.adversarial[(row.attack, *threat)].pred == labels)
        n = len(labels)
        n_cert = int((codes == CERTIFIED).sum())
        confirmed = _confirmed(records, threat)
        exact = used == "crown+exact"
        out.append(
            replace(
                row,
                n_certified=n_cert,
                certified_robust_accuracy=n_cert / n if n else 0.0,
                certified_robust_accuracy_ci=ci(n_cert, n),
                # A refuted sample whose counterexample the reference runtime did not confirm is unknown.
                n_unknown=int((robust & (codes != CERTIFIED) & ~confirmed).sum()),
                certification_method=used,
                n_refuted_unconfirmed=int(((codes == REFUTED) & ~worst[threat]).sum()) if exact else None,
            )
        )
    return out, [*notes, *_sweep_notes(records, walk)]


def _sweep_notes(records: SampleRecords, walk: Walk | None) -> list[str]:
    """How much of the one-pixel sweep bounding skipped (none when no sweep ran)."""
    if walk is None or not len(records.onepixel_swept):
        return []
    positions = int(np.prod(walk.sample_shape[1:]))
    seconds = records.certify_seconds.get(("l0", 1.0), 0.0)
    n_correct = int((records.clean_pred == records.labels).sum())
    note = sweep_note(records.onepixel_swept, positions, seconds, n_correct)
    return [] if note is None else [note]


def _confirmed(records: SampleRecords, threat: Threat) -> np.ndarray:
    """Samples the ``exact`` step fooled: exact counterexamples the reference runtime confirmed (the step
    records nothing else that an attack before it did not)."""
    rec = records.adversarial.get((EXACT, *threat))
    if rec is None:
        return np.zeros(len(records.labels), bool)
    labels = records.labels
    confirmed: np.ndarray = (records.certified[threat] == REFUTED) & (rec.pred != labels)
    return confirmed


def exact_note(records: SampleRecords, stages: list[Stage], worst: dict[Threat, np.ndarray]) -> list[str]:
    """Per threat model, the samples exact verification proved not robust though no attack fooled them:
    how many count as fooled (confirmed on the reference runtime), and how many do not, and why."""
    notes = []
    for st in stages:
        threat = (st.threat.norm, st.threat.eps)
        codes = records.certified.get(threat)
        refuted = codes == REFUTED if codes is not None else np.zeros(0, bool)
        if not refuted.any():
            continue
        confirmed = _confirmed(records, threat)
        targets = records.targets
        not_attacked = refuted & (targets < 0) if targets is not None else np.zeros_like(refuted)
        missed = refuted & ~worst[threat] & ~not_attacked  # confirmed, or fooled at a smaller eps, count
        parts = [
            f"certify: at {st.threat.describe()}, exact verification proved {int(refuted.sum())} samples not "
            f"robust that no attack fooled; {int(confirmed.sum())} of its counterexamples, confirmed on the "
            f"reference runtime, count as fooled (row {EXACT})"
        ]
        if missed.any():
            parts.append(
                f"{int(missed.sum())} did not reproduce there (float32 rounding or the conversion's gap): "
                "robust in the attacked figure, unknown in the bracket"
            )
        if not_attacked.any():
            parts.append(
                f"{int(not_attacked.sum())} are not attacked in this targeted run (their label is the target)"
            )
        notes.append("; ".join(parts))
    return notes
