"""The attack suite. Each attack is a small stateless callable; the registry maps CLI names to them."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from robaudit.attacks.base import Attack, LogitsFn
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.pgd import PGD
from robaudit.errors import UsageError

REGISTRY: dict[str, type[Attack]] = {"fgsm": FGSM, "pgd": PGD}


def build_attack(name: str, settings: dict[str, Any] | None = None) -> Attack:
    """Make an attack from its CLI name; ``settings`` holds the fields it takes (others are ignored)."""
    key = name.strip().lower()
    if key not in REGISTRY:
        raise UsageError(f"--attack {name}: unknown attack; choose from {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[key]
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in (settings or {}).items() if k in names})


__all__ = ["Attack", "LogitsFn", "REGISTRY", "build_attack"]
