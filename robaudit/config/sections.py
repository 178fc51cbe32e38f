"""The configuration's sections, each declared once: what a profile section, a CLI flag and a library
keyword all build from.

Every field carries its default, its validation and its help text (``description``, which the CLI
shows as the flag's help and ``profile init`` as the template's comment). A field's *flat name* is the
keyword ``AuditConfig(...)`` takes for it and the CLI parameter that sets it (``--eps`` is
``threat.eps``); it is the field's own name unless ``flat(...)`` says otherwise, because two sections
have a ``path``, say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robaudit.config.values import (
    DEFAULT_BATCH_SIZE,
    Layout,
    Norm,
    OutputKind,
    eps_decimals,
    eps_values,
    parse_batch_size,
    parse_target,
)

GateMetric = Literal[
    "robust_accuracy",
    "robust_error",
    "attack_success_rate",
    "mean_confidence_adversarial_errors",
    "clean_accuracy",
    "certified_robust_accuracy",
]

CertifyMethod = Literal["none", "ibp", "crown", "exact", "auto"]


def flat(name: str, **extra: Any) -> dict[str, Any]:
    """A field's ``json_schema_extra``: its flat name (the library keyword and the CLI parameter)."""
    return {"flat": name, **extra}


class Section(BaseModel):
    """A section of the configuration: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelSettings(Section):
    path: Path | None = Field(
        default=None,
        json_schema_extra=flat("model"),
        description="Model file: .onnx, TorchScript, .pt2 (torch.export), or a state_dict (.pt or "
        ".safetensors) with arch.",
    )
    surrogate: Path | None = Field(
        default=None,
        description="Transfer attack: run the gradient attacks on this model file too and try their examples "
        "on the audited model (rows transfer:ATTACK, counted in the worst case), for a model whose gradients "
        "are missing or distrusted. It takes the audited model's preprocessing options.",
    )
    arch: str | None = Field(
        default=None,
        description="package.module:ClassName, or a function that builds the model "
        "(torchvision.models:resnet18), for a state_dict.",
    )
    arch_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for arch.")
    trust_model: bool = Field(
        default=False, description="Allow loading a pickled nn.Module, which runs code from the file."
    )
    output: OutputKind = Field(
        default="auto", description="Model output: auto, logits, probabilities or log-probabilities."
    )
    # ONNX Runtime vs converted PyTorch graph: max |diff| allowed is atol + rtol * max |reference|.
    parity_atol: float = Field(
        default=1e-4, ge=0, description="Allowed ONNX Runtime vs converted-graph logit gap."
    )
    parity_rtol: float = Field(
        default=1e-3, ge=0, description="Allowed logit gap relative to the largest ONNX Runtime logit."
    )


def _ordered(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and not value[0] < value[1]:
        raise ValueError("the low end must be below the high end, e.g. 0,1 or 0,255")
    return value


class PreprocessingSettings(Section):
    # The scale the model takes its input in; float data are stored in data.range, which defaults to
    # the same scale. They differ when, say, float 0..255 arrays feed a [0, 1] model.
    input_range: tuple[float, float] = Field(
        default=(0.0, 1.0),
        description="Pixel range of the model's input: 0,1 or 0,255. Float data are read in this range too "
        "unless the data range says otherwise; uint8 data are always read as 0..255.",
    )
    mean: tuple[float, ...] | None = Field(
        default=None,
        description="Per-channel mean robaudit subtracts before the model, in the model's input scale.",
    )
    std: tuple[float, ...] | None = Field(
        default=None, description="Per-channel std robaudit divides by before the model."
    )
    layout: Layout = Field(default="auto", description="Model input layout: auto, nchw or nhwc.")

    @field_validator("input_range")
    @classmethod
    def _range_ordered(cls, value: tuple[float, float]) -> tuple[float, float] | None:
        return _ordered(value)

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and any(s <= 0 for s in value):
            raise ValueError("every std must be > 0")
        return value


class DataSettings(Section):
    path: str | None = Field(
        default=None,
        json_schema_extra=flat("data"),
        description="Data: an .npz, an .npy (with labels), an image folder, or 'mnist'. Default: bundled "
        "MNIST for 1x28x28 models.",
    )
    labels: Path | None = Field(default=None, description="Labels .npy for an .npy data file.")
    npz_keys: tuple[str, str] = Field(
        default=("x", "y"), description="Names of the image and label arrays in an .npz."
    )
    limit: int | None = Field(
        default=None, gt=0, description="Evaluate a seeded, stratified subset of N samples."
    )
    # Image folders only: each image's shorter side scaled to cover (height, width), then centre-cropped.
    resize: tuple[int, int] | None = Field(
        default=None,
        description="Image folders: resize every image to HEIGHT,WIDTH (or SIZE,SIZE): the shorter side "
        "scaled to cover it, then centre-cropped (bilinear). eps applies to the resized images.",
    )
    range: tuple[float, float] | None = Field(
        default=None,
        json_schema_extra=flat("data_range"),
        description="Pixel range float data are stored in, when it differs from the model's input range "
        "(e.g. float 0..255 arrays for a [0, 1] model: 0,255).",
    )

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _ordered(value)

    @field_validator("resize")
    @classmethod
    def _size_positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError("both sides must be at least 1 pixel, e.g. 224,224")
        return value


class ThreatSettings(Section):
    norms: tuple[Norm, ...] = Field(
        default=("linf",), description="Threat model norm, repeatable: linf, l2 or l1. Default: linf."
    )
    eps: tuple[float, ...] = Field(
        default=(0.1,),
        description="Perturbation budget, repeatable (e.g. --eps 0.1 --eps 8/255). Always on the [0, 1] "
        "scale: the data's pixel range mapped to [0, 1], so 0.1 means 25.5 grey levels of 255 whatever "
        "the input range is.",
    )
    # none (untargeted), random, least-likely, or a class index.
    target: str = Field(
        default="none",
        description="Targeted attacks: none, random (a seeded random wrong class), least-likely, or a class "
        "index.",
    )

    # How many passes decide a prediction; for a random model (see audit/randomness.py).
    eot_evals: int = Field(
        default=0,
        ge=0,
        description="Passes per prediction, majority wins (0: auto).",
    )

    @field_validator("norms")
    @classmethod
    def _norms_given(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one norm")
        return tuple(dict.fromkeys(value))

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_parsed(cls, value: object) -> object:
        # eps as the CLI and profiles write it: 0.1, or "8/255".
        if isinstance(value, (list, tuple)):
            return eps_values(list(value))
        return value

    @field_validator("eps")
    @classmethod
    def _eps_valid(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("give at least one eps")
        return tuple(sorted(set(value)))

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: object) -> str:
        # `target: 3` reads as an int in YAML; the CLI's --target 3 is the same class index.
        return parse_target(value)


class AttackEntry(BaseModel):
    """One attack of the cascade. Its settings (``steps: 100``) sit beside its name and are checked
    against the attack's own settings model from the registry; settings left out take that model's
    defaults. ``norms``/``eps`` narrow or widen the threat models it runs under (default: ``threat``'s)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    norms: tuple[Norm, ...] | None = None
    eps: tuple[float, ...] | None = None
    kwargs: dict[str, Any] | None = None  # for art:ClassName

    @field_validator("eps", mode="before")
    @classmethod
    def _eps(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(eps_values(list(value)))
        return value

    @model_validator(mode="after")
    def _settings_known(self) -> AttackEntry:
        from robaudit.attacks.registry import validate_settings

        validate_settings(self.name, self.settings)
        return self

    @property
    def settings(self) -> dict[str, Any]:
        """The settings given for this entry (not the defaults): ``{"steps": 100}``."""
        return dict(self.model_extra or {})


class GateCheck(Section):
    """One threshold: ``metric`` of the row (attack, norm, eps) at least ``min`` and/or at most ``max``."""

    metric: GateMetric
    attack: str = "worst-case"
    norm: Literal["linf", "l2", "l1", "l0"] | None = None
    eps: float | None = None
    min: float | None = Field(default=None, ge=0, le=1)
    max: float | None = Field(default=None, ge=0, le=1)
    use_interval: bool = False
    # The decimals eps was written with (0.0314: 4), so that it picks the row it rounds from (8/255);
    # None: exact as written (8/255, a pixel count). Filled in from eps when not given.
    eps_decimals: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _precision(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("eps") is not None and "eps_decimals" not in values:
            return {**values, "eps_decimals": eps_decimals(values["eps"])}
        return values

    @field_validator("eps", mode="before")
    @classmethod
    def _eps(cls, value: object) -> object:
        return None if value is None else eps_values([value])[0]  # type: ignore[list-item]

    @model_validator(mode="after")
    def _complete(self) -> GateCheck:
        if self.min is None and self.max is None:
            raise ValueError("give min or max (or both)")
        if self.metric == "clean_accuracy" and (self.norm is not None or self.eps is not None):
            raise ValueError("clean_accuracy takes no norm or eps")
        if self.metric != "clean_accuracy" and (self.norm is None or self.eps is None):
            raise ValueError(f"{self.metric} needs norm and eps to pick the row, e.g. norm: linf, eps: 8/255")
        return self


class GateSettings(Section):
    checks: tuple[GateCheck, ...] = Field(
        default=(),
        json_schema_extra=flat(
            "gate_checks",
            example=[
                {
                    "metric": "robust_accuracy",
                    "norm": "linf",
                    "eps": "8/255",
                    "min": 0.5,
                    "use_interval": False,
                }
            ],
        ),
        description="Threshold checks: exit 1 when a metric of a row (attack, norm, eps; attack defaults to "
        "worst-case) is below min or above max; use_interval compares the unfavourable end of the 95% interval.",
    )
    baseline: Path | None = Field(
        default=None, description="Gate: a previous results JSON to compare robust accuracy against."
    )
    max_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Gate with a baseline: largest allowed drop in any robust accuracy (default 0.02).",
    )
    allow_mismatch: bool = Field(
        default=False,
        description="Compare with a baseline made with another input shape, data set or attack settings.",
    )
    strict: bool = Field(
        default=False,
        description="Exit 4 when a reliability flag fires (the numbers may overstate robustness).",
    )
    reliability_checks: bool = Field(
        default=True,
        json_schema_extra=flat("checks"),
        description="Run the reliability probes (randomness, gradients, unbounded attack, ...) on 100 samples.",
    )


class ReportsSettings(Section):
    json_: Path | None = Field(
        default=None,
        alias="json",
        json_schema_extra=flat("json_path"),
        description="Write the results as JSON.",
    )
    html: Path | None = Field(
        default=None,
        json_schema_extra=flat("html_path"),
        description="Write a self-contained HTML report (no network needed to view it).",
    )
    markdown: Path | None = Field(
        default=None,
        json_schema_extra=flat("markdown_path"),
        description="Write a Markdown summary (for a CI job summary or a PR comment).",
    )
    junit: Path | None = Field(
        default=None, json_schema_extra=flat("junit_path"), description="Write the gate checks as JUnit XML."
    )
    per_sample: Path | None = Field(
        default=None,
        json_schema_extra=flat("per_sample_path"),
        description="Write one JSON line per sample with every attack's outcome.",
    )
    save_adversarial: Path | None = Field(
        default=None,
        json_schema_extra=flat("adversarial_path"),
        description="Save every adversarial example found to an .npz.",
    )
    gallery_size: int = Field(
        default=4, ge=0, description="Adversarial examples shown per attack and threat model."
    )
    # Narrow each sample's robustness radius between swept eps by this many bisection steps (0: off).
    radius_bisect: int = Field(
        default=0,
        ge=0,
        le=30,
        description="Narrow each sample's robustness radius between swept eps by this many bisection "
        "steps (0: off).",
    )


class CertifySettings(Section):
    # A certificate is a lower bound beside the attacks' upper bound (robaudit/certify/).
    method: CertifyMethod = Field(
        default="none",
        json_schema_extra=flat("certify"),
        description="Certified lower bound (linf, l2): none, ibp, crown, exact (MILP) or auto.",
    )
    time_limit: float = Field(
        default=10.0,
        gt=0,
        json_schema_extra=flat("certify_time_limit"),
        description="Seconds per sample for --certify exact.",
    )


class RunSettings(Section):
    device: str = Field(default="auto", description="auto (CUDA if present), cpu, cuda or cuda:N.")
    batch_size: int | Literal["auto"] = Field(
        default=DEFAULT_BATCH_SIZE,
        description="Samples per batch, or auto: the largest that fits, found by a quick probe.",
    )
    # Convolution weights laid out channels-last (faster for some models on the CPU, slower for others).
    channels_last: bool = Field(
        default=False,
        description="Lay convolution weights out channels-last: faster for some models on a CPU.",
    )
    # TF32 math on NVIDIA GPUs (see precision.py); off: full FP32, the same decisions on every machine.
    tf32: bool = Field(
        default=False,
        description="Let NVIDIA GPUs run float32 convolutions and matrix products in TF32: faster, but the "
        "model's outputs change slightly. Default: full FP32.",
    )
    seed: int = Field(default=0, description="Run seed; each sample's seed derives from it and its index.")
    run_dir: Path | None = Field(
        default=None,
        description="Save finished batches in this folder, so an interrupted run can --resume.",
    )
    # Where the shards run (audit/distributed.py); results do not depend on it, so --resume may change it.
    workers: int | Literal["auto"] = Field(
        default=0,
        description="Ray workers (needs pip install 'robaudit[ray]'): 0 runs in this process; auto: one per "
        "GPU, or one per CPU where there is no GPU.",
    )
    ray_address: str | None = Field(
        default=None,
        description="Join this Ray cluster (or RAY_ADDRESS) instead of starting a local Ray runtime.",
    )
    shard_size: int | None = Field(
        default=None,
        ge=1,
        description="Samples per shard, the unit handed to a worker and saved in --run-dir. Default: the "
        "batch size.",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_valid(cls, value: object) -> int | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError(f"must be a whole number of workers (0: in this process) or auto, not {value!r}")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size_valid(cls, value: object) -> int | str:
        return parse_batch_size(value)


# The sections in the order a profile lists them; ``attacks`` sits between data and threat.
SECTIONS: dict[str, type[Section]] = {
    "model": ModelSettings,
    "preprocessing": PreprocessingSettings,
    "data": DataSettings,
    "threat": ThreatSettings,
    "gate": GateSettings,
    "reports": ReportsSettings,
    "certify": CertifySettings,
    "run": RunSettings,
}


def flat_name(section: str, field: str) -> str:
    extra = SECTIONS[section].model_fields[field].json_schema_extra
    return str(extra["flat"]) if isinstance(extra, dict) and "flat" in extra else field


# flat name -> (section, field): ``eps`` -> ("threat", "eps").
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    flat_name(section, field): (section, field)
    for section, cls in SECTIONS.items()
    for field in cls.model_fields
}


def describe(flat: str) -> str:
    """A setting's help text, by its flat name."""
    section, field = FLAT_FIELDS[flat]
    return SECTIONS[section].model_fields[field].description or ""
