"""The attack suite. Each attack is a small stateless callable, declared once in ``registry``.

The registry imports no torch; the implementations (and their names re-exported here) load on first use.
"""

from __future__ import annotations

from robaudit.attacks.registry import REGISTRY, AttackInfo, build_attack, lookup
from robaudit.lazy import lazy_names

_LAZY = {
    "Attack": "robaudit.attacks.base",
    "LogitsFn": "robaudit.attacks.base",
    "ArtAttack": "robaudit.attacks.art",
    "FGSM": "robaudit.attacks.fgsm",
    "OnePixel": "robaudit.attacks.onepixel",
    "SparseRS": "robaudit.attacks.sparse_rs",
    "PGD": "robaudit.attacks.pgd",
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = ["REGISTRY", "AttackInfo", "build_attack", "lookup", *_LAZY]
