"""The transfer document: frozen dataclasses, schema version first; nothing here imports torch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robaudit.errors import InputError

TRANSFER_SCHEMA_VERSION = "1.0"
DOCUMENT = "robaudit-transfer"
DENOMINATORS = ("all", "source-correct", "both-correct")
DEFAULT_DENOMINATOR = "both-correct"
DENOMINATOR_TEXT = {
    "all": "all samples; a clean error of the target counts as an error, as in scan's robust error",
    "source-correct": "the samples the source model classifies correctly (the ones it attacked); scan's "
    "attack success rate on the diagonal",
    "both-correct": "the samples both the source and the target classify correctly, so an error is one "
    "the example caused; scan's attack success rate on the diagonal",
}


@dataclass(frozen=True)
class TransferModel:
    name: str
    path: str
    sha256: str
    backend: str
    layout: str
    num_classes: int
    clean_accuracy: float
    n_clean_correct: int


@dataclass(frozen=True)
class Cell:
    """Examples made on ``source``, predicted by ``target`` on its reference runtime."""

    source: int  # index into the document's models
    target: int
    n: int  # the denominator's samples
    errors: int  # of those, the target misclassifies the source's example
    error_rate: float | None
    error_rate_ci: list[float] | None  # Wilson 95%
    confidence_on_errors: float | None  # the target's mean top-1 softmax confidence on those errors
    # [errors, n] under every convention, so another convention can be read off without a rerun;
    # "source-fooled": samples whose example fools the source itself.
    counts: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TransferExample:
    source: int
    target: int
    sample_index: int
    label: int
    source_pred: int
    target_pred: int
    target_conf: float
    original_png: str
    adversarial_png: str


@dataclass(frozen=True)
class TransferMatrix:
    attack: str  # an attack's name, or worst-case: per sample the first of the stage's attacks that fools the source
    norm: str
    eps: float
    cells: list[Cell]
    examples: list[TransferExample] = field(default_factory=list)
    error: str | None = None  # the attack failed on a source model: no cells

    def cell(self, source: int, target: int) -> Cell:
        return next(c for c in self.cells if c.source == source and c.target == target)


@dataclass(frozen=True)
class TransferResult:
    schema_version: str
    document: str
    robaudit_version: str
    created_utc: str
    denominator: str
    denominator_text: str
    data: dict[str, Any]
    settings: dict[str, Any]
    models: list[TransferModel]
    matrices: list[TransferMatrix]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferResult:
        matrices = [
            TransferMatrix(
                **{
                    **m,
                    "cells": [Cell(**c) for c in m["cells"]],
                    "examples": [TransferExample(**e) for e in m.get("examples", [])],
                }
            )
            for m in data["matrices"]
        ]
        return cls(**{**data, "models": [TransferModel(**m) for m in data["models"]], "matrices": matrices})


def load_transfer(path: Path) -> TransferResult:
    """A transfer document from JSON; InputError naming the file for anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot read a transfer document ({exc}); give a robaudit transfer --json file"
        ) from None
    if not isinstance(data, dict) or data.get("document") != DOCUMENT:
        raise InputError(f"{path}: not a robaudit transfer document; give a robaudit transfer --json file")
    return TransferResult.from_dict(data)


def schema_path() -> Path:
    return Path(__file__).resolve().parent.parent / "schema" / "transfer.schema.json"
