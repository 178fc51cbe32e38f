"""The audit result: frozen dataclasses, schema version first, numbers kept as numbers.

Reporters read only this object; nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.3"

UPPER_BOUND_CAVEAT = (
    "Robust accuracy found by attacks is an upper bound on true robust accuracy: these attacks found "
    "adversarial examples for the samples counted as fooled, and a stronger attack can only find more, "
    "never fewer."
)

# The caveat when a certificate ran: attacks bound true robust accuracy from above, certificates from below.
BRACKET_CAVEAT = (
    "Where a certificate ran, true robust accuracy lies in [certified, attacked]: the attacks, and exact "
    "verification where it ran, found adversarial examples, confirmed on the reference runtime, for the "
    "samples counted as fooled (a stronger attack can only find more), and bound propagation proved no "
    "input in the threat model changes the prediction of the samples counted as certified. Samples in "
    "neither set are unknown."
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
    n_evaluated: int  # samples whose figures the result holds: fewer than n_requested when interrupted
    subset: str  # "all" or a description of the seeded stratified subset
    n_requested: int | None = None  # samples the run was asked for (None: written by an earlier robaudit)


WORST_CASE = "worst-case"


@dataclass(frozen=True)
class Flag:
    """A sign that the evaluation may overstate robustness, with what to do about it."""

    code: str  # stable identifier, e.g. "eps-monotonicity"
    message: str
    advice: str


@dataclass(frozen=True)
class Confidence:
    """Mean top-1 softmax confidence: over all samples, on correctly classified ones, on errors."""

    overall: float | None
    correct: float | None
    errors: float | None


@dataclass(frozen=True)
class Perturbation:
    """Size of the successful adversarial perturbations (x_adv - x on the [0, 1] scale).

    l0 counts changed pixel locations.
    """

    n: int
    linf_mean: float
    linf_median: float
    l2_mean: float
    l2_median: float
    l0_mean: float
    l0_median: float


@dataclass(frozen=True)
class ClassInfo:
    index: int
    name: str | None
    n: int
    clean_accuracy: float | None


@dataclass(frozen=True)
class Radius:
    """Per norm: each sample's smallest swept eps at which the worst case fools it.

    ``fooled_at[i]`` counts samples whose radius is ``eps[i]``; samples wrong on clean input have
    radius 0, and ``not_fooled`` survived every eps. ``median`` is None when more than half the
    samples survived the largest eps (the median lies above the sweep). With bisection, each fooled
    sample's interval between two swept eps is halved ``bisection_steps`` times.
    """

    norm: str
    eps: list[float]
    fooled_at: list[int]
    wrong_on_clean: int
    not_fooled: int
    median: float | None
    bisection_steps: int = 0  # 0: the sweep only
    bisected_median: float | None = None  # median after narrowing each sample's interval by bisection


@dataclass(frozen=True)
class Example:
    """One adversarial example for the report's gallery, images as PNG data URIs."""

    sample_index: int
    attack: str
    norm: str
    eps: float
    label: int
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float
    original_png: str
    perturbation_png: str  # |x_adv - x| scaled to the full grey range
    adversarial_png: str


@dataclass(frozen=True)
class AttackRow:
    """One (attack, norm, eps): counts over all evaluated samples.

    A sample is robust only if it is correct on clean input and no attack flipped it. Attacks run as
    a cascade, so an attack's row counts the samples fooled by it or by a cheaper attack before it in
    the same threat model; ``n_fooled_by_attack`` is its own share. Where exact verification ran, an
    ``exact`` row ends the cascade: its own share is the samples whose exact counterexample the
    reference runtime confirmed. The ``worst-case`` row per (norm,
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
    robust_accuracy_ci: list[float] | None = None  # 95% Wilson interval
    attack_success_rate_ci: list[float] | None = None
    confidence: Confidence | None = None  # on the adversarial inputs (clean input where none was made)
    perturbation: Perturbation | None = None  # of the samples this row counts as fooled
    per_class_robust_accuracy: list[float | None] = field(default_factory=list)
    n_fooled_by_attack: int | None = None  # fooled first by this attack in the cascade (None: worst case)
    n_target_hits: int | None = None  # targeted runs: clean-correct samples now classified as the target
    n_fooled_converted: int | None = None  # ONNX: fooled on the converted graph (before re-checking)
    seconds: float = 0.0
    error: str | None = None  # the attack failed: why (it then fooled nothing); flagged
    # Certified lower bound at this row's threat model (None: no certificate ran for it, or an older
    # result). The same for every attack of a threat model; n_unknown: robust here, yet not certified.
    n_certified: int | None = None
    certified_robust_accuracy: float | None = None
    certified_robust_accuracy_ci: list[float] | None = None  # 95% Wilson interval
    n_unknown: int | None = None
    certification_method: str | None = None  # ibp | crown | crown+exact
    # crown+exact: samples exact verification proved not robust whose counterexample the reference
    # runtime did not misclassify (not counted as fooled; unknown). None: no exact verification (or <1.3).
    n_refuted_unconfirmed: int | None = None


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
    clean_accuracy_ci: list[float] | None = None
    confidence_clean: Confidence | None = None
    classes: list[ClassInfo] = field(default_factory=list)
    radius: list[Radius] = field(default_factory=list)
    gallery: list[Example] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    caveat: str = UPPER_BOUND_CAVEAT
    complete: bool = True  # False: interrupted, the figures cover only the samples finished

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # field order keeps schema_version first

    def incomplete_headline(self) -> str | None:
        """For an interrupted run, the line every report leads with; None for a complete one."""
        if self.complete:
            return None
        d = self.data
        of = f" of {d.n_requested}" if d.n_requested is not None else ""
        return f"INCOMPLETE: {d.n_evaluated}{of} samples evaluated; every figure covers only those"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        """Rebuild a result from its JSON form (for re-rendering reports without re-running)."""

        def conf(d: dict[str, Any] | None) -> Confidence | None:
            return Confidence(**d) if d is not None else None

        rows = [
            AttackRow(
                **{
                    **r,
                    "confidence": conf(r.get("confidence")),
                    "perturbation": Perturbation(**r["perturbation"]) if r.get("perturbation") else None,
                }
            )
            for r in data["rows"]
        ]
        return cls(
            **{
                **data,
                "model": ModelInfo(**data["model"]),
                "data": DataInfo(**data["data"]),
                "rows": rows,
                "confidence_clean": conf(data.get("confidence_clean")),
                "classes": [ClassInfo(**c) for c in data.get("classes", [])],
                "radius": [Radius(**r) for r in data.get("radius", [])],
                "gallery": [Example(**e) for e in data.get("gallery", [])],
                "flags": [Flag(**f) for f in data.get("flags", [])],
            }
        )


def eot_summary(settings: dict[str, Any]) -> str | None:
    """How a model found random was audited, in one line for the reports; None for a deterministic one
    (and for results from before schema 1.2, which did not record it)."""
    if not settings.get("random_model"):
        return None
    return (
        f"random model: audited with EOT, {settings.get('eot')} gradient samples per step, each prediction "
        f"the majority of {settings.get('eot_evals')} passes"
    )


def load_result(path: Path) -> AuditResult:
    """Read a results JSON back, or raise an InputError naming the file and what is wrong."""
    from robaudit.errors import InputError

    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path}: no such results file; give the JSON written by robaudit scan --json"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not a readable results JSON ({exc}); give the file robaudit scan --json wrote"
        ) from None
    if not isinstance(payload, dict) or "schema_version" not in payload:
        raise InputError(f"{path}: not a robaudit results file (no schema_version)")
    major = str(payload["schema_version"]).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            f"{path}: schema_version {payload['schema_version']} is not readable by this robaudit "
            f"(reads {SCHEMA_VERSION.split('.')[0]}.x); re-run the audit or use a matching robaudit"
        )
    try:
        return AuditResult.from_dict(payload)
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: results JSON does not match schema {SCHEMA_VERSION} ({exc})") from None


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write through a temporary file and a rename: a crash never leaves half a report."""
    from robaudit.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
