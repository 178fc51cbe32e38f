"""The attack suite. Each attack is a small stateless callable; the registry maps CLI names to them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from robaudit.attacks.art import ArtAttack
from robaudit.attacks.base import Attack, LogitsFn
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.onepixel import OnePixel
from robaudit.attacks.pgd import PGD
from robaudit.errors import UsageError

REGISTRY: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD, "onepixel": OnePixel}


def build_attack(
    name: str, settings: dict[str, Any] | None = None, kwargs: dict[str, Any] | None = None
) -> Attack:
    """Make an attack from its CLI name.

    ``settings`` holds the run's attack flags (each attack takes the fields it declares and ignores
    the rest); ``kwargs`` are keyword arguments for an ``art:ClassName`` pass-through.
    """
    key = name.strip()
    if key.lower().startswith("art:"):
        class_name = key[4:].strip()
        if not class_name.isidentifier():
            raise UsageError(f"--attack {name}: write an ART class name after art:, e.g. art:DeepFool")
        return ArtAttack(class_name=class_name, kwargs=dict(kwargs or {}))
    key = key.lower()
    if key not in REGISTRY:
        choices = ", ".join(sorted(REGISTRY))
        raise UsageError(f"--attack {name}: unknown attack; choose from {choices}, or art:ClassName")
    cls = REGISTRY[key]
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in (settings or {}).items() if k in names})


__all__ = ["ArtAttack", "Attack", "LogitsFn", "REGISTRY", "build_attack"]
