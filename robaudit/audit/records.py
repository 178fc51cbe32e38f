"""Per-sample records: what running a shard produces, and the merge that puts shards back together.

A shard is a list of positions in the run's sample order. Its records hold one row per position; the
merge concatenates shards by position, so records of a whole run are the merge of its shards, whether
they ran in one process, in halves after running out of memory, or were loaded from a run directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from robaudit.audit.plan import Stage

RecordKey = tuple[str, str, float]  # (attack name, norm, eps)
Threat = tuple[str, float]  # (norm, eps)
ATTACK_FIELDS = ("pred", "conf", "fooled_converted", "target_hit", "linf", "l2", "l0")
# Exact verification's counterexamples, confirmed on the reference runtime, are recorded like an attack's
# adversarial examples under this name, as the last step of their threat model's cascade.
EXACT = "exact"


def exact_threat(certify: str, norm: str, eps: float) -> bool:
    """Whether ``--certify`` may run exact verification at (norm, eps), so the cascade records an
    ``exact`` step there: the MILP under L∞, the 256-level sweep for one pixel (``certify.run``)."""
    return certify in ("exact", "auto") and (norm == "linf" or (norm == "l0" and int(eps) == 1))


@dataclass
class AttackRecords:
    """Per-sample outcome of one stage's cascade up to and including one attack."""

    pred: np.ndarray
    conf: np.ndarray
    fooled_converted: np.ndarray  # flipped on the differentiable model the attack used
    target_hit: np.ndarray  # targeted runs: classified as the target
    linf: np.ndarray  # norms of the sample's current x_adv - x (0 where no attack ran)
    l2: np.ndarray
    l0: np.ndarray
    seconds: float = 0.0

    @classmethod
    def empty(cls, n: int) -> AttackRecords:
        return cls(
            np.zeros(n, np.int64),
            np.zeros(n, np.float64),
            np.zeros(n, bool),
            np.zeros(n, bool),
            np.zeros(n, np.float64),
            np.zeros(n, np.float64),
            np.zeros(n, np.float64),
        )

    @classmethod
    def concat(cls, parts: Sequence[AttackRecords]) -> AttackRecords:
        """The parts' rows one after another; their seconds add up."""
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ATTACK_FIELDS}
        return cls(**arrays, seconds=sum(p.seconds for p in parts))


@dataclass(frozen=True)
class RecordLayout:
    """What every shard of a run records: one entry per (attack, threat model), then ``exact`` where
    exact verification may run (``certify``), examples per threat model, and (targeted runs) each
    sample's target."""

    keys: tuple[RecordKey, ...]
    threats: tuple[Threat, ...]
    targeted: bool

    @classmethod
    def of(cls, stages: Sequence[Stage], targeted: bool, certify: str = "none") -> RecordLayout:
        keys: list[RecordKey] = []
        for st in stages:
            norm, eps = st.threat.norm, st.threat.eps
            keys += [(a.name, norm, eps) for a in st.attacks]
            if exact_threat(certify, norm, eps):
                keys.append((EXACT, norm, eps))
        return cls(tuple(keys), tuple((st.threat.norm, st.threat.eps) for st in stages), targeted)


@dataclass
class SampleRecords:
    positions: np.ndarray  # each row's position in the run's sample order
    indices: np.ndarray  # each row's sample index in the dataset
    labels: np.ndarray
    clean_pred: np.ndarray
    clean_conf: np.ndarray
    targets: np.ndarray | None  # targeted runs: each sample's target class (-1: not attacked)
    adversarial: dict[RecordKey, AttackRecords] = field(default_factory=dict)
    errors: dict[RecordKey, str] = field(default_factory=dict)  # attacks that failed, with why
    batch_size_used: int = 0  # the smallest batch the run fell back to after running out of memory
    completed: int = 0  # rows whose shards finished (all of them unless interrupted)
    interrupted: bool = False
    # Per threat model (norm, eps): the first few successes of each attack (the one the cascade credits)
    # for the report's gallery, and (when asked) every success, as {row: (attack name, x, x_adv)} with
    # images (C, H, W) on [0, 1].
    examples: dict[Threat, dict[int, tuple[str, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    saved: dict[Threat, dict[int, tuple[str, np.ndarray]]] = field(default_factory=dict)
    clean_seconds: float = 0.0
    # Per threat model: each sample's certification code (certify.run: -1 none ran, 0 not certified,
    # 1 certified, 2 refuted by exact verification: counted as fooled in the ``exact`` record where the
    # reference runtime confirmed the counterexample) and the seconds certification took.
    certified: dict[Threat, np.ndarray] = field(default_factory=dict)
    certify_seconds: dict[Threat, float] = field(default_factory=dict)
    # The one-pixel threat model's exact sweep: pixel positions swept per sample (-1: none ran).
    onepixel_swept: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def blank(
        cls,
        layout: RecordLayout,
        positions: np.ndarray,
        indices: np.ndarray,
        labels: np.ndarray,
        batch_size_used: int,
    ) -> SampleRecords:
        """Zeroed records for these rows, to be filled by a shard's run or a saved shard."""
        n = len(positions)
        return cls(
            positions=positions,
            indices=indices,
            labels=labels.astype(np.int64),
            clean_pred=np.zeros(n, np.int64),
            clean_conf=np.zeros(n, np.float64),
            targets=np.full(n, -1, np.int64) if layout.targeted else None,
            adversarial={key: AttackRecords.empty(n) for key in layout.keys},
            batch_size_used=batch_size_used,
            completed=n,
            examples={threat: {} for threat in layout.threats},
            saved={threat: {} for threat in layout.threats},
            certified={threat: np.full(n, -1, np.int8) for threat in layout.threats},
            certify_seconds=dict.fromkeys(layout.threats, 0.0),
            onepixel_swept=np.full(n, -1, np.int64),
        )


def merge_shards(parts: Sequence[SampleRecords], layout: RecordLayout, gallery_size: int) -> SampleRecords:
    """The shards' rows in position order, as one set of records.

    Errors keep the first shard's message per attack; the gallery takes each attack's examples per
    threat model shard by shard until ``gallery_size`` of that attack are in, which is its first
    successes in position order; seconds add up; ``batch_size_used`` is the smallest of the shards'.
    """
    parts = sorted(parts, key=lambda p: int(p.positions[0]) if len(p.positions) else -1)
    if not parts:
        empty = np.zeros(0, np.int64)
        return SampleRecords.blank(layout, empty, empty, empty, batch_size_used=0)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    merged = SampleRecords(
        positions=cat("positions"),
        indices=cat("indices"),
        labels=cat("labels"),
        clean_pred=cat("clean_pred"),
        clean_conf=cat("clean_conf"),
        targets=cat("targets") if layout.targeted else None,
        adversarial={key: AttackRecords.concat([p.adversarial[key] for p in parts]) for key in layout.keys},
        batch_size_used=min(p.batch_size_used for p in parts),
        completed=sum(p.completed for p in parts),
        examples={threat: {} for threat in layout.threats},
        saved={threat: {} for threat in layout.threats},
        clean_seconds=sum(p.clean_seconds for p in parts),
        certified={t: np.concatenate([p.certified[t] for p in parts]) for t in layout.threats},
        certify_seconds={t: sum(p.certify_seconds[t] for p in parts) for t in layout.threats},
        onepixel_swept=cat("onepixel_swept"),
    )
    offset = 0
    kept: dict[tuple[Threat, str], int] = {}  # examples in the gallery per threat model and attack
    for part in parts:
        for key, message in part.errors.items():
            merged.errors.setdefault(key, message)
        for threat in layout.threats:
            gallery = merged.examples[threat]
            for row, example in sorted(part.examples[threat].items()):
                if kept.get((threat, example[0]), 0) < gallery_size:
                    gallery[offset + row] = example
                    kept[(threat, example[0])] = kept.get((threat, example[0]), 0) + 1
            merged.saved[threat].update({offset + row: v for row, v in part.saved[threat].items()})
        offset += len(part.positions)
    return merged


def keep_examples(
    records: SampleRecords,
    threat: Threat,
    attack: str,
    rows: np.ndarray,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    gallery_size: int,
    keep_all: bool,
) -> None:
    """Copy newly fooled samples' images off the device: the attack's first few for the gallery (up to
    ``gallery_size`` per attack and threat model), all when asked."""
    gallery = records.examples[threat]
    room = max(0, gallery_size - sum(1 for kept in gallery.values() if kept[0] == attack))
    if not (room or keep_all) or len(rows) == 0:
        return
    take = len(rows) if keep_all else min(room, len(rows))
    xs = x[:take].detach().float().cpu().numpy()
    advs = x_adv[:take].detach().float().cpu().numpy()
    for i, row in enumerate(rows[:take].tolist()):
        if i < room:
            gallery[row] = (attack, xs[i], advs[i])
        if keep_all:
            records.saved[threat][row] = (attack, advs[i])
