"""The attack suite. Each attack is a small stateless callable; the registry maps CLI names to them."""

from __future__ import annotations

from robaudit.attacks.base import Attack, LogitsFn
from robaudit.attacks.fgsm import FGSM
from robaudit.errors import UsageError

REGISTRY: dict[str, type[Attack]] = {"fgsm": FGSM}


def build_attack(name: str) -> Attack:
    """Make an attack with its default settings from its CLI name."""
    key = name.strip().lower()
    if key not in REGISTRY:
        raise UsageError(f"--attack {name}: unknown attack; choose from {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]()


__all__ = ["Attack", "LogitsFn", "REGISTRY", "build_attack"]
