"""Certification codes -> the result's figures: each row's certified count, its interval and the
samples left unknown, the notes for threat models without a certificate, and the bracket caveat."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

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
        out.append(
            replace(
                row,
                n_certified=n_cert,
                certified_robust_accuracy=n_cert / n if n else 0.0,
                certified_robust_accuracy_ci=ci(n_cert, n),
                n_unknown=int((robust & (codes != CERTIFIED) & (codes != REFUTED)).sum()),
                certification_method=used,
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


def refuted_note(records: SampleRecords, stages: list[Stage]) -> list[str]:
    """Samples exact verification proved not robust though no attack fooled them, per threat model."""
    notes = []
    for st in stages:
        codes = records.certified.get((st.threat.norm, st.threat.eps))
        if codes is not None and int((codes == REFUTED).sum()):
            notes.append(
                f"certify: at {st.threat.describe()}, exact verification found {int((codes == REFUTED).sum())} "
                "samples not robust that no attack fooled; they count as robust in the attacked figure"
            )
    return notes
