"""The attack suite. Each attack is a small stateless callable, declared once in ``registry``.

The registry imports no torch; the implementations (and their names re-exported here) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from robaudit.attacks.registry import REGISTRY, AttackInfo, build_attack, lookup

_LAZY = {
    "Attack": "robaudit.attacks.base",
    "LogitsFn": "robaudit.attacks.base",
    "ArtAttack": "robaudit.attacks.art",
    "FGSM": "robaudit.attacks.fgsm",
    "OnePixel": "robaudit.attacks.onepixel",
    "PGD": "robaudit.attacks.pgd",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robaudit.attacks' has no attribute {name!r}")


__all__ = ["REGISTRY", "AttackInfo", "build_attack", "lookup", *_LAZY]
