"""The attack registry: every attack declared once, with what the rest of robaudit needs to know of it.

An entry names the attack, gives its pydantic settings model (defaults, validation and help text in one
place), the threat models it supports, what it needs from the model (gradients, scores only, or labels
only), whether it is deterministic given the per-sample seeds, and its place in the cascade (cheapest
first). The CLI's attack flags, profile validation, ``profile show``, the results' settings and the
cascade order all read it. The module imports no torch: ``robaudit profile validate`` stays fast, and
an attack's implementation is imported only when the attack is built.

Adding an attack is one new module with its implementation and one ``register(...)`` call here; see
docs/architecture.md, "Adding an attack".
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from robaudit.errors import UsageError

if TYPE_CHECKING:
    from robaudit.attacks.base import Attack

Needs = Literal["gradients", "scores", "labels"]
ART_PREFIX = "art:"


class AttackSettings(BaseModel):
    """Base of every attack's settings model: unknown settings are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class AttackInfo:
    name: str  # as written in --attack and in a profile's attacks[].name
    summary: str  # one line for --help and the docs
    settings: type[AttackSettings]
    threat_models: tuple[str, ...]  # linf, l2, l1 (eps-balls) and l0 (changed pixel locations)
    needs: Needs  # gradients: a differentiable model; scores/labels: the reference runtime is enough
    deterministic: bool  # the same per-sample seeds give the same candidates
    cost_rank: int  # the cascade runs cheaper attacks first
    implementation: str  # "module:Class"; its fields take the settings, imported only when built

    def build(
        self, settings: Mapping[str, Any] | None = None, kwargs: Mapping[str, Any] | None = None
    ) -> Attack:
        """The attack with ``settings`` (validated; defaults filled in) as its fields."""
        module, _, cls_name = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        values = self.settings.model_validate(dict(settings or {})).model_dump()
        return cls(**values)


class SettingError(ValueError):
    """An attack setting that its settings model refuses: ``field`` names it (``steps``), ``reason``
    says why. Profiles report it as ``attacks[1].steps: ...``, the CLI as ``--steps: ...``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


REGISTRY: dict[str, AttackInfo] = {}


def register(info: AttackInfo) -> AttackInfo:
    if info.name in REGISTRY:
        raise ValueError(f"attack {info.name!r} is registered twice")
    REGISTRY[info.name] = info
    return info


def is_art(name: str) -> bool:
    return name.strip().lower().startswith(ART_PREFIX)


def lookup(name: str, field: str = "--attack") -> AttackInfo:
    """The registry entry of a native attack name (any case), or a one-line UsageError listing them."""
    key = name.strip().lower()
    if is_art(key):
        if not key[len(ART_PREFIX) :].strip().isidentifier():
            raise UsageError(f"{field} {name}: write an ART class name after art:, e.g. art:DeepFool")
        return REGISTRY["art"]
    if key not in REGISTRY or key == "art":
        raise UsageError(
            f"{field} {name}: unknown attack; choose from {', '.join(native_names())}, or art:ClassName"
        )
    return REGISTRY[key]


def native_names() -> list[str]:
    return sorted(n for n in REGISTRY if n != "art")


def validate_settings(name: str, settings: Mapping[str, Any]) -> None:
    """Raise SettingError when ``settings`` do not fit the attack's settings model. An unknown name is
    left to ``lookup`` at plan time, so a profile's schema check names the field it is in."""
    key = name.strip().lower()
    info = REGISTRY.get("art" if is_art(key) else key)
    if info is None:
        return
    try:
        info.settings.model_validate(dict(settings))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        reason = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown key; check the spelling (robaudit profile init writes every key)"
        raise SettingError(where, reason) from None


def build_attack(
    name: str, settings: Mapping[str, Any] | None = None, kwargs: Mapping[str, Any] | None = None
) -> Attack:
    """Make an attack from its name: a native one with ``settings`` (each attack takes the fields its
    settings model declares and ignores the rest), or ``art:ClassName`` with ``kwargs``."""
    info = lookup(name)
    if info.name == "art":
        from robaudit.attacks.art import ArtAttack

        return ArtAttack(class_name=name.strip()[len(ART_PREFIX) :].strip(), kwargs=dict(kwargs or {}))
    own = set(info.settings.model_fields)
    return info.build({k: v for k, v in (settings or {}).items() if k in own})


def settings_of(attack: object) -> dict[str, Any]:
    """Every field a built attack runs with (its settings and its internal knobs), for the results."""
    if not is_dataclass(attack):
        return {}
    return {f.name: getattr(attack, f.name) for f in fields(attack)}


def info_of(attack: object) -> AttackInfo | None:
    """The registry entry a built attack came from (by its implementation class), or None."""
    where = f"{type(attack).__module__}:{type(attack).__name__}"
    return next((info for info in REGISTRY.values() if info.implementation == where), None)


def cost_rank(attack: object) -> int:
    """An attack's place in the cascade, cheapest first: the registry's rank, or for an attack object
    the registry does not know (a test's double) its own ``cost_rank``."""
    info = info_of(attack)
    return info.cost_rank if info is not None else int(getattr(attack, "cost_rank", len(REGISTRY)))


def setting_fields() -> dict[str, list[AttackInfo]]:
    """Each setting name and the attacks that take it (``steps``: pgd), for run-wide flags."""
    out: dict[str, list[AttackInfo]] = {}
    for info in REGISTRY.values():
        for field in info.settings.model_fields:
            out.setdefault(field, []).append(info)
    return out


# --- the attacks -------------------------------------------------------------------------------------


# One --eot flag for every gradient attack (expectation over transformation, Athalye et al. 2018).
EOT_FIELD = Field(
    default=0,
    ge=0,
    description="EOT gradient samples per step (0: auto, 10 on a random model).",
)


class FGSMSettings(AttackSettings):
    """FGSM's one setting: EOT's gradient samples (its step is eps)."""

    eot: int = EOT_FIELD


register(
    AttackInfo(
        name="fgsm",
        summary="FGSM (Goodfellow et al. 2015) for linf, FGM for l2 and l1: one steepest-ascent step of size eps",
        settings=FGSMSettings,
        threat_models=("linf", "l2", "l1"),
        needs="gradients",
        deterministic=True,
        cost_rank=0,
        implementation="robaudit.attacks.fgsm:FGSM",
    )
)


class PGDSettings(AttackSettings):
    steps: int = Field(default=40, gt=0, description="PGD iterations.")
    restarts: int = Field(default=1, gt=0, description="PGD random restarts.")
    rel_step_size: float = Field(
        default=2.5, gt=0, description="PGD step size as a multiple of eps/steps (Madry et al.: 2.5)."
    )
    loss: Literal["ce", "dlr"] = Field(
        default="ce", description="PGD loss: ce (cross-entropy) or dlr (Croce & Hein 2020)."
    )
    eot: int = EOT_FIELD


register(
    AttackInfo(
        name="pgd",
        summary="PGD (Madry et al. 2018) with random start, restarts and the CE or DLR loss",
        settings=PGDSettings,
        threat_models=("linf", "l2", "l1"),
        needs="gradients",
        deterministic=True,
        cost_rank=10,
        implementation="robaudit.attacks.pgd:PGD",
    )
)


class APGDSettings(AttackSettings):
    steps: int = Field(default=100, gt=0, description="APGD iterations (apgd-t: per target).")
    restarts: int = Field(default=1, gt=0, description="APGD random restarts (apgd-t: per target).")
    loss: Literal["ce", "dlr"] = Field(
        default="ce", description="APGD loss: ce (cross-entropy) or dlr (Croce & Hein 2020)."
    )
    eot: int = EOT_FIELD


register(
    AttackInfo(
        name="apgd",
        summary="APGD (Croce & Hein 2020): PGD with an adaptive step, momentum and the CE or DLR loss",
        settings=APGDSettings,
        threat_models=("linf", "l2", "l1"),
        needs="gradients",
        deterministic=True,
        cost_rank=20,
        implementation="robaudit.attacks.apgd:APGD",
    )
)


class APGDTSettings(AttackSettings):
    steps: int = Field(default=100, gt=0, description="APGD iterations (apgd-t: per target).")
    restarts: int = Field(default=1, gt=0, description="APGD random restarts (apgd-t: per target).")
    n_targets: int = Field(
        default=9, gt=0, description="APGD-T: the most likely other classes it targets, one run each."
    )
    eot: int = EOT_FIELD


register(
    AttackInfo(
        name="apgd-t",
        summary="APGD-T (Croce & Hein 2020): targeted DLR against the k most likely other classes",
        settings=APGDTSettings,
        threat_models=("linf", "l2", "l1"),
        needs="gradients",
        deterministic=True,
        cost_rank=30,
        implementation="robaudit.attacks.apgd:APGDT",
    )
)


class OnePixelSettings(AttackSettings):
    pixels: int = Field(default=1, gt=0, description="L0 attacks: pixel locations they may change.")
    population: int = Field(default=400, ge=4, description="One-pixel: candidates per generation.")
    generations: int = Field(default=100, ge=0, description="One-pixel: differential-evolution generations.")


register(
    AttackInfo(
        name="onepixel",
        summary="one-pixel attack (Su et al. 2019): differential evolution over k pixel locations",
        settings=OnePixelSettings,
        threat_models=("l0",),
        needs="scores",
        deterministic=True,
        cost_rank=70,
        implementation="robaudit.attacks.onepixel:OnePixel",
    )
)


class SparseRSSettings(AttackSettings):
    pixels: int = Field(default=1, gt=0, description="L0 attacks: pixel locations they may change.")
    queries: int = Field(
        default=5000, gt=0, description="Score-based attacks: model queries per sample (square: per restart)."
    )


register(
    AttackInfo(
        name="sparse-rs",
        summary="Sparse-RS (Croce et al. 2022): score-based random search over k pixel locations, l0",
        settings=SparseRSSettings,
        threat_models=("l0",),
        needs="scores",
        deterministic=True,
        cost_rank=60,
        implementation="robaudit.attacks.sparse_rs:SparseRS",
    )
)


class SquareSettings(AttackSettings):
    queries: int = Field(default=5000, gt=0, description="Square: model queries per sample and restart.")
    restarts: int = Field(default=1, gt=0, description="Square: random restarts.")


register(
    AttackInfo(
        name="square",
        summary="Square attack (Andriushchenko et al. 2020): score-based random search, linf and l2",
        settings=SquareSettings,
        threat_models=("linf", "l2"),
        needs="scores",
        deterministic=True,
        cost_rank=50,
        implementation="robaudit.attacks.square:Square",
    )
)


class ArtSettings(AttackSettings):
    """ART attacks take their keyword arguments as ``kwargs`` (``--attack-kwargs``), checked by ART."""


register(
    AttackInfo(
        name="art",
        summary="any evasion attack of the Adversarial Robustness Toolbox, as art:ClassName",
        settings=ArtSettings,
        threat_models=("linf", "l2", "l1"),
        needs="gradients",
        deterministic=False,
        cost_rank=90,
        implementation="robaudit.attacks.art:ArtAttack",
    )
)
