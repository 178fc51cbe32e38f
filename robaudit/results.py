"""The audit result: frozen dataclasses, schema version first, numbers kept as numbers.

Reporters read only this object; nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.0"

UPPER_BOUND_CAVEAT = (
    "Robust accuracy found by attacks is an upper bound on true robust accuracy: these attacks found "
    "adversarial examples for the samples counted as fooled, and a stronger attack can only find more, "
    "never fewer."
)


@dataclass(frozen=True)
class ModelInfo:
    path: str
    format: str
    sha256: str
    backend: str
    sample_shape: list[int]
    num_classes: int
    output_kind: str
    layout: str
    gradients: bool
    converter: str | None = None
    gradient_note: str | None = None
    parity_max_abs_diff: float | None = None
    runtime_provider: str | None = None


@dataclass(frozen=True)
class DataInfo:
    source: str
    description: str
    sha256: str
    n_total: int
    n_evaluated: int
    subset: str  # "all" or a description of the seeded stratified subset


WORST_CASE = "worst-case"


@dataclass(frozen=True)
class AttackRow:
    """One (attack, norm, eps): counts over all evaluated samples.

    A sample is robust only if it is correct on clean input and no attack flipped it. Attacks run as
    a cascade, so an attack's row counts the samples fooled by it or by a cheaper attack before it in
    the same threat model; ``n_fooled_by_attack`` is its own share. The ``worst-case`` row per (norm,
    eps) counts every attack, and samples fooled at a smaller eps of the same norm. For ``l0``, eps is
    the number of pixel locations the attack may change.
    """

    attack: str
    norm: str
    eps: float
    n_samples: int
    n_clean_correct: int
    n_robust: int
    robust_accuracy: float
    robust_error: float
    attack_success_rate: float | None  # over clean-correct samples
    mean_confidence_adversarial_errors: float | None  # mean top-1 confidence on misclassified x_adv
    n_fooled_by_attack: int | None = None  # fooled first by this attack in the cascade (None: worst case)
    n_target_hits: int | None = None  # targeted runs: clean-correct samples now classified as the target
    n_fooled_converted: int | None = None  # ONNX: fooled on the converted graph (before re-checking)
    seconds: float = 0.0


@dataclass(frozen=True)
class AuditResult:
    schema_version: str
    robaudit_version: str
    created_utc: str
    model: ModelInfo
    data: DataInfo
    settings: dict[str, Any]
    environment: dict[str, str]
    clean_accuracy: float
    n_clean_correct: int
    mean_confidence_clean: float
    rows: list[AttackRow]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    caveat: str = UPPER_BOUND_CAVEAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # field order keeps schema_version first


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder and rename: a crash never leaves half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
