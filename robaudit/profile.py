"""YAML audit profiles (version 1): an audit checked into a repository, CLI flags on top.

A profile is read with a safe loader that also rejects duplicate keys (PyYAML keeps the last one
silently), validated by pydantic models that forbid unknown keys, and turned into the same keyword
arguments the CLI builds, so ``AuditConfig`` validates both the same way. Every error is one line
naming the field path, e.g. ``attacks[1].eps[0]: must be >= 0``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from robaudit.config import (
    DEFAULT_BATCH_SIZE,
    EPS_TOLERANCE,
    AuditConfig,
    Norm,
    check_linf_eps,
    parse_batch_size,
    parse_eps,
    parse_target,
)
from robaudit.errors import UsageError

BUILTIN = ("quick", "standard", "thorough")
EpsList = list[float | str]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _eps_values(values: EpsList | None) -> list[float] | None:
    if values is None:
        return None
    out = []
    for v in values:
        try:
            out.append(parse_eps(v, field="eps"))
        except UsageError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return out


class ModelSection(_Section):
    path: str | None = None
    arch: str | None = None
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    trust_model: bool = False
    output: Literal["auto", "logits", "probabilities", "log-probabilities"] = "auto"
    parity_atol: float = Field(default=1e-4, ge=0)  # ONNX: allowed converted-graph vs ONNX Runtime logit gap


class PreprocessingSection(_Section):
    input_range: tuple[float, float] = (0.0, 1.0)
    mean: list[float] | None = None
    std: list[float] | None = None
    layout: Literal["auto", "nchw", "nhwc"] = "auto"


class DataSection(_Section):
    path: str | None = None
    labels: str | None = None
    npz_keys: tuple[str, str] = ("x", "y")
    limit: int | None = Field(default=None, gt=0)
    resize: tuple[int, int] | None = None  # image folders: [height, width]
    range: tuple[float, float] | None = None  # float data's pixel range, when not preprocessing.input_range


class AttackEntry(_Section):
    """One attack. Settings left out take the run's defaults; ``norms``/``eps`` narrow or widen the
    threat models this attack runs under (default: the ``threat`` section's)."""

    name: str
    norms: list[Norm] | None = None
    eps: EpsList | None = None
    steps: int | None = Field(default=None, gt=0)
    restarts: int | None = Field(default=None, gt=0)
    rel_step_size: float | None = Field(default=None, gt=0)
    loss: Literal["ce", "dlr"] | None = None
    pixels: int | None = Field(default=None, gt=0)
    population: int | None = Field(default=None, ge=4)
    generations: int | None = Field(default=None, ge=0)
    kwargs: dict[str, Any] | None = None  # for art:ClassName

    @field_validator("eps")
    @classmethod
    def _eps(cls, value: EpsList | None) -> EpsList | None:
        return _eps_values(value)  # type: ignore[return-value]


class ThreatSection(_Section):
    norms: list[Norm] = Field(default_factory=lambda: list[Norm](["linf"]))
    eps: EpsList = Field(default_factory=lambda: list[float | str]([0.1]))
    target: str = "none"

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: object) -> str:
        # `target: 3` reads as an int in YAML; the CLI's --target 3 is the same class index.
        return parse_target(value)

    @field_validator("eps")
    @classmethod
    def _eps(cls, value: EpsList) -> EpsList:
        return _eps_values(value)  # type: ignore[return-value]


class GateCheckEntry(_Section):
    metric: Literal[
        "robust_accuracy",
        "robust_error",
        "attack_success_rate",
        "mean_confidence_adversarial_errors",
        "clean_accuracy",
    ]
    attack: str = "worst-case"
    norm: Literal["linf", "l2", "l1", "l0"] | None = None
    eps: float | str | None = None
    min: float | None = Field(default=None, ge=0, le=1)
    max: float | None = Field(default=None, ge=0, le=1)
    use_interval: bool = False

    @field_validator("eps")
    @classmethod
    def _eps(cls, value: float | str | None) -> float | None:
        vals = _eps_values([value]) if value is not None else None
        return vals[0] if vals else None

    @model_validator(mode="after")
    def _complete(self) -> GateCheckEntry:
        if self.min is None and self.max is None:
            raise ValueError("give min or max (or both)")
        if self.metric == "clean_accuracy" and (self.norm is not None or self.eps is not None):
            raise ValueError("clean_accuracy takes no norm or eps")
        if self.metric != "clean_accuracy" and (self.norm is None or self.eps is None):
            raise ValueError(f"{self.metric} needs norm and eps to pick the row, e.g. norm: linf, eps: 8/255")
        return self


class GateSection(_Section):
    checks: list[GateCheckEntry] = Field(default_factory=list)
    baseline: str | None = None
    max_drop: float | None = Field(default=None, ge=0, le=1)
    allow_mismatch: bool = False
    strict: bool = False  # exit 4 when a reliability flag fires
    reliability_checks: bool = True  # run the reliability probes (--no-checks)


class ReportsSection(_Section):
    json_path: str | None = Field(default=None, alias="json")
    html: str | None = None
    markdown: str | None = None
    junit: str | None = None
    per_sample: str | None = None
    save_adversarial: str | None = None
    gallery_size: int = Field(default=4, ge=0)
    radius_bisect: int = Field(default=0, ge=0, le=30)


class Profile(_Section):
    version: Literal[1]
    model: ModelSection = Field(default_factory=ModelSection)
    preprocessing: PreprocessingSection = Field(default_factory=PreprocessingSection)
    data: DataSection = Field(default_factory=DataSection)
    attacks: list[AttackEntry] = Field(default_factory=lambda: [AttackEntry(name="fgsm")])
    threat: ThreatSection = Field(default_factory=ThreatSection)
    device: str = "auto"
    batch_size: int | Literal["auto"] = DEFAULT_BATCH_SIZE
    channels_last: bool = False
    tf32: bool = False
    seed: int = 0
    gate: GateSection = Field(default_factory=GateSection)
    reports: ReportsSection = Field(default_factory=ReportsSection)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size_valid(cls, value: object) -> int | str:
        return parse_batch_size(value)


# --- reading ----------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key that appears twice in one mapping."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (YAML keeps only the last one)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    return path or "profile"


def parse_profile(text: str, source: str) -> Profile:
    """Parse and validate profile text; any problem is a one-line UsageError naming ``source``."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply to be a profile") from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"{source}: a profile is a mapping starting with 'version: 1'; run robaudit profile init"
        )
    if "version" not in raw:
        raise UsageError(f"{source}: version: missing; a profile starts with 'version: 1'")
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key; check the spelling (robaudit profile init writes every key)"
        elif err["type"] == "literal_error" and tuple(err["loc"]) == ("version",):
            message = "this robaudit reads version 1"
        raise UsageError(f"{source}: {_field_path(tuple(err['loc']))}: {message}") from None


# The native attacks and the norms each runs under (robaudit.attacks.REGISTRY, without importing
# torch: `profile validate` must stay fast; a test keeps the two in step).
NATIVE_ATTACK_NORMS = {"fgsm": ("linf", "l2", "l1"), "pgd": ("linf", "l2", "l1"), "onepixel": ("l0",)}


def check_runnable(profile: Profile, source: str) -> None:
    """What ``robaudit scan`` would refuse or could never pass in a schema-valid profile, named by its
    field: an unknown attack, an L∞ eps above 1, a gate check on a threat model no attack runs."""
    threat_eps = [float(e) for e in profile.threat.eps]
    if "linf" in profile.threat.norms:
        for e in threat_eps:
            check_linf_eps(e, field=f"{source}: threat.eps")
    runs: set[tuple[str, float]] = set()
    unknown_norms = False  # an ART attack's norms are known only once ART is imported
    for i, entry in enumerate(profile.attacks):
        key = entry.name.strip().lower()
        norms = list(entry.norms or profile.threat.norms)
        eps = [float(e) for e in (entry.eps or profile.threat.eps)]
        if "linf" in norms and entry.eps:
            for e in eps:
                check_linf_eps(e, field=f"{source}: attacks[{i}].eps")
        if key.startswith("art:"):
            if not key[4:].strip().isidentifier():
                raise UsageError(
                    f"{source}: attacks[{i}].name: write an ART class name after art:, e.g. art:DeepFool"
                )
            unknown_norms = True
            continue
        if key not in NATIVE_ATTACK_NORMS:
            raise UsageError(
                f"{source}: attacks[{i}].name: unknown attack {entry.name!r}; choose from "
                f"{', '.join(sorted(NATIVE_ATTACK_NORMS))}, or art:ClassName"
            )
        if key == "onepixel":
            runs.add(("l0", float(entry.pixels or AuditConfig.model_fields["pixels"].default)))
        else:
            runs.update((n, e) for n in norms if n in NATIVE_ATTACK_NORMS[key] for e in eps)
    if unknown_norms:
        return
    for j, check in enumerate(profile.gate.checks):
        if check.norm is None or check.eps is None:
            continue
        wanted = (check.norm, float(check.eps))
        if not any(n == wanted[0] and abs(e - wanted[1]) <= EPS_TOLERANCE for n, e in runs):
            ran = ", ".join(f"{n} {e:g}" for n, e in sorted(runs))
            raise UsageError(
                f"{source}: gate.checks[{j}]: no attack of this profile runs {check.norm} at eps "
                f"{float(check.eps):g} (it runs {ran}), so the check could never pass; add the eps to "
                f"threat.eps or check one that runs"
            )


def builtin_text(name: str) -> str:
    return (resources.files("robaudit") / "profiles" / f"{name}.yaml").read_text(encoding="utf-8")


def load_profile(spec: str) -> tuple[Profile, str]:
    """A profile file, or a built-in one by name (quick, standard, thorough). Returns it and its source."""
    if spec in BUILTIN and not Path(spec).exists():
        source = f"built-in profile {spec}"
        profile = parse_profile(builtin_text(spec), source)
        check_runnable(profile, source)
        return profile, spec
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"--profile {spec}: no such file; give a profile .yaml or a built-in name ({', '.join(BUILTIN)})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the profile ({exc})") from None
    profile = parse_profile(text, str(path))
    check_runnable(profile, str(path))
    return profile, str(path)


# --- to configuration -------------------------------------------------------------------------------


def config_values(profile: Profile) -> dict[str, Any]:
    """The profile as AuditConfig keyword arguments (the same names the CLI fills)."""
    p = profile
    specs = []
    for entry in p.attacks:
        settings = {
            k: v
            for k, v in entry.model_dump(exclude={"name", "norms", "eps", "kwargs"}).items()
            if v is not None
        }
        specs.append(
            {
                "name": entry.name,
                "settings": settings,
                "norms": tuple(entry.norms) if entry.norms else None,
                "eps": tuple(entry.eps) if entry.eps else None,
            }
        )
    values: dict[str, Any] = {
        "model": p.model.path,
        "arch": p.model.arch,
        "arch_kwargs": dict(p.model.arch_kwargs),
        "trust_model": p.model.trust_model,
        "output": p.model.output,
        "parity_atol": p.model.parity_atol,
        "channels_last": p.channels_last,
        "tf32": p.tf32,
        "input_range": p.preprocessing.input_range,
        "mean": tuple(p.preprocessing.mean) if p.preprocessing.mean else None,
        "std": tuple(p.preprocessing.std) if p.preprocessing.std else None,
        "layout": p.preprocessing.layout,
        "data": p.data.path,
        "labels": p.data.labels,
        "npz_keys": p.data.npz_keys,
        "resize": p.data.resize,
        "data_range": p.data.range,
        "limit": p.data.limit,
        "attacks": tuple(e.name for e in p.attacks),
        "attack_specs": tuple(specs),
        "attack_kwargs": {e.name: dict(e.kwargs) for e in p.attacks if e.kwargs is not None},
        "norms": tuple(p.threat.norms),
        "eps": tuple(p.threat.eps),
        "target": p.threat.target,
        "device": p.device,
        "batch_size": p.batch_size,
        "seed": p.seed,
        "gate_checks": tuple(c.model_dump() for c in p.gate.checks),
        "baseline": p.gate.baseline,
        "max_drop": p.gate.max_drop,
        "allow_mismatch": p.gate.allow_mismatch,
        "strict": p.gate.strict,
        "checks": p.gate.reliability_checks,
        "json_path": p.reports.json_path,
        "html_path": p.reports.html,
        "markdown_path": p.reports.markdown,
        "junit_path": p.reports.junit,
        "per_sample_path": p.reports.per_sample,
        "adversarial_path": p.reports.save_adversarial,
        "gallery_size": p.reports.gallery_size,
        "radius_bisect": p.reports.radius_bisect,
    }
    return values


def resolved(profile: Profile) -> dict[str, Any]:
    """The profile with every default filled in: each attack with the settings it will run with."""
    from dataclasses import fields, is_dataclass

    from robaudit.attacks import build_attack
    from robaudit.config import AuditConfig

    out = profile.model_dump(mode="json", by_alias=True)
    defaults = AuditConfig.model_fields
    run_wide = {
        k: defaults[k].default
        for k in ("steps", "restarts", "rel_step_size", "loss", "pixels", "population", "generations")
    }
    attacks = []
    for entry, dumped in zip(profile.attacks, out["attacks"], strict=True):
        settings = {
            k: v
            for k, v in entry.model_dump(exclude={"name", "norms", "eps", "kwargs"}).items()
            if v is not None
        }
        attack = build_attack(entry.name, {**run_wide, **settings}, entry.kwargs)
        item: dict[str, Any] = {"name": entry.name}
        if "l0" not in attack.norms:
            item["norms"] = list(dumped["norms"] or out["threat"]["norms"])
            item["eps"] = list(dumped["eps"] or out["threat"]["eps"])
        if is_dataclass(attack):  # the settings a profile can set, as the attack will use them
            settable = set(AttackEntry.model_fields) - {"name", "norms", "eps", "kwargs"}
            item.update({f.name: getattr(attack, f.name) for f in fields(attack) if f.name in settable})
        if entry.kwargs is not None:
            item["kwargs"] = entry.kwargs
        attacks.append(item)
    out["attacks"] = attacks
    return out
