"""The audit configuration: validated once at the edge, then frozen.

Every number the runner uses comes from here, so a result can record exactly what produced it.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from robaudit.errors import UsageError

Layout = Literal["auto", "nchw", "nhwc"]
OutputKind = Literal["auto", "logits", "probabilities", "log-probabilities"]
DEFAULT_BATCH_SIZE = 256
Norm = Literal["linf", "l2", "l1"]

_EPS_PATTERN = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)(\s*/\s*(\d+(\.\d*)?|\.\d+))?\s*$")


def parse_batch_size(value: object) -> int | str:
    """A positive whole number of samples, or ``auto`` (the largest batch that fits, probed)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"must be a positive whole number of samples or auto, not {value!r}")


# Two eps closer than this are one budget: 8/255 written as a fraction and as 0.0313725490196.
EPS_TOLERANCE = 1e-9


def parse_eps(text: str | float | int, field: str = "--eps") -> float:
    """Parse an epsilon written as ``0.1``, ``8/255`` or ``.03``, on the [0, 1] pixel scale."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _EPS_PATTERN.match(str(text))
        if not match:
            raise UsageError(f"{field}: {text!r} is not a number; write e.g. 0.1 or 8/255")
        if match.group(3):
            num, den = str(text).split("/")
            if float(den) == 0:
                raise UsageError(f"{field}: {text!r} divides by zero; write e.g. 8/255")
            value = float(Fraction(num.strip()) / Fraction(den.strip()))
        else:
            value = float(match.group(1))
    if not (value >= 0.0):
        raise UsageError(f"{field}: {text!r} must be >= 0")
    return value


def check_linf_eps(eps: float, field: str = "--eps") -> None:
    """An L∞ budget above 1 would allow any image: almost always 8 meant as 8/255."""
    if eps > 1.0:
        raise UsageError(
            f"{field}: {eps:g} is larger than 1, but eps is measured on the [0, 1] pixel scale whatever "
            f"the data's range; for 8 grey levels of 255 write 8/255"
        )


def parse_target(value: object) -> str:
    """none, random, least-likely or a class index (an int from YAML, or its digits)."""
    text = str(value).strip().lower()
    if not isinstance(value, bool) and (text in ("none", "random", "least-likely") or text.isdigit()):
        return text
    raise ValueError("use none, random, least-likely or a class index such as 3")


class AuditConfig(BaseModel):
    """Everything one audit needs. Paths are as the user gave them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Path
    arch: str | None = None
    arch_kwargs: dict[str, object] = Field(default_factory=dict)
    trust_model: bool = False

    data: str | None = None
    labels: Path | None = None
    npz_keys: tuple[str, str] = ("x", "y")
    limit: int | None = Field(default=None, gt=0)

    # The scale the model takes its input in (preprocessing); float data are stored in data_range, which
    # defaults to the same scale. They differ when, say, float 0..255 arrays feed a [0, 1] model.
    input_range: tuple[float, float] = (0.0, 1.0)
    data_range: tuple[float, float] | None = None
    # Image folders only: each image's shorter side scaled to cover (height, width), then centre-cropped.
    resize: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: Layout = "auto"
    output: OutputKind = "auto"

    attacks: tuple[str, ...] = ("fgsm",)
    norms: tuple[Norm, ...] = ("linf",)
    eps: tuple[float, ...] = (0.1,)
    # PGD settings (Madry et al. 2018 defaults: step = 2.5 * eps / steps).
    steps: int = Field(default=40, gt=0)
    restarts: int = Field(default=1, gt=0)
    rel_step_size: float = Field(default=2.5, gt=0)
    loss: Literal["ce", "dlr"] = "ce"
    # One-pixel settings (Su et al. 2019 defaults).
    pixels: int = Field(default=1, gt=0)
    population: int = Field(default=400, ge=4)
    generations: int = Field(default=100, ge=0)
    # none (untargeted), random, least-likely, or a class index.
    target: str = "none"
    # Keyword arguments per attack name, e.g. {"art:DeepFool": {"max_iter": 20}}.
    attack_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # From a profile: one entry per attack, {"name", "settings", "norms", "eps"}; settings override the
    # run-wide ones above for that attack, and norms/eps (when not None) its threat models.
    attack_specs: tuple[dict[str, Any], ...] = ()

    device: str = "auto"
    batch_size: int | Literal["auto"] = DEFAULT_BATCH_SIZE
    # Convolution weights laid out channels-last (faster for some models on the CPU, slower for others).
    channels_last: bool = False
    # TF32 math on NVIDIA GPUs (see precision.py); off: full FP32, the same decisions on every machine.
    tf32: bool = False
    seed: int = 0

    # ONNX Runtime vs converted PyTorch graph: max |diff| allowed is atol + rtol * max |reference|.
    parity_atol: float = Field(default=1e-4, ge=0)
    parity_rtol: float = Field(default=1e-3, ge=0)

    # Outputs. JSON, HTML and Markdown are rendered from the results object; the per-sample lines
    # and the adversarial examples come from the runner's records.
    json_path: Path | None = None
    html_path: Path | None = None
    markdown_path: Path | None = None
    per_sample_path: Path | None = None
    adversarial_path: Path | None = None
    gallery_size: int = Field(default=4, ge=0)
    # Narrow each sample's robustness radius between swept eps by this many bisection steps (0: off).
    radius_bisect: int = Field(default=0, ge=0, le=30)

    # The gate: threshold checks (robaudit.gate.Check fields), and regression against a baseline.
    gate_checks: tuple[dict[str, Any], ...] = ()
    baseline: Path | None = None
    max_drop: float | None = Field(default=None, ge=0, le=1)
    allow_mismatch: bool = False
    junit_path: Path | None = None
    strict: bool = False  # exit 4 when a reliability flag fires
    checks: bool = True  # run the reliability probes (a few seconds on up to 100 samples)
    run_dir: Path | None = None  # save finished batches here, so an interrupted run can resume

    @model_validator(mode="after")
    def _linf_eps_at_most_one(self) -> AuditConfig:
        if "linf" in self.norms:
            for e in self.eps:
                check_linf_eps(e)
        return self

    @property
    def float_data_range(self) -> tuple[float, float]:
        """The range float data are stored in (uint8 data are 0..255 whatever this says)."""
        return self.input_range if self.data_range is None else self.data_range

    @field_validator("input_range", "data_range")
    @classmethod
    def _range_ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("the low end must be below the high end, e.g. 0,1 or 0,255")
        return value

    @field_validator("resize")
    @classmethod
    def _size_positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError("both sides must be at least 1 pixel, e.g. 224,224")
        return value

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and any(s <= 0 for s in value):
            raise ValueError("every std must be > 0")
        return value

    @field_validator("norms")
    @classmethod
    def _norms_given(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one norm")
        return tuple(dict.fromkeys(value))

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size_valid(cls, value: object) -> int | str:
        return parse_batch_size(value)

    @field_validator("target")
    @classmethod
    def _target_valid(cls, value: str) -> str:
        return parse_target(value)

    @field_validator("attack_kwargs")
    @classmethod
    def _kwargs_for_known(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not name.startswith("art:"):
                raise ValueError(
                    f"{name}: keyword arguments are for art:ClassName attacks; native attacks take flags"
                )
        return value

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_parsed(cls, value: object) -> object:
        # The library takes eps as the CLI and profiles do: 0.1, or "8/255".
        if isinstance(value, (list, tuple)):
            return tuple(parse_eps(e) if isinstance(e, str) else e for e in value)
        return value

    @field_validator("eps")
    @classmethod
    def _eps_valid(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("give at least one eps")
        for e in value:
            parse_eps(e)
        return tuple(sorted(set(value)))
