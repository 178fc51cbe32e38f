"""One merge of settings by flat name onto a nested configuration: CLI flags onto a profile, and the
library's ``AuditConfig(model=..., eps=..., steps=...)`` keywords onto the defaults.

Flat names are the sections' own (``sections.FLAT_FIELDS``) plus the attack settings of the registry
(``steps`` reaches every attack whose settings take it). The rules, the same for flags and keywords:

- ``attacks`` (names) replaces the attack list, and with it the profile's per-attack settings;
- an attack setting (``steps``) replaces that setting in every attack that takes it;
- ``norms`` or ``eps`` replaces the run's threat models, and every attack's own ones too;
- ``attack_kwargs`` ({"art:DeepFool": {...}}) gives an attack of the run its keyword arguments;
- ``gate_checks`` are *added* to the profile's: a flag can only make the gate stricter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robaudit.attacks.registry import setting_fields
from robaudit.config.sections import FLAT_FIELDS, SECTIONS
from robaudit.errors import UsageError

# Flat names that are not one section field: handled by the rules above.
SPECIAL = ("attacks", "attack_kwargs", "gate_checks")


def _plain(value: Any) -> Any:
    """A pydantic model as a dict (by field name), anything else as it is."""
    dump = getattr(value, "model_dump", None)
    return dump(by_alias=False) if callable(dump) else value


def is_flat(key: str, value: Any) -> bool:
    """Whether ``key=value`` is a flat setting rather than a whole section (``model="m.onnx"`` is the
    model's path; ``model={"path": ...}`` the section)."""
    if key in SECTIONS:
        return not isinstance(value, Mapping) and not hasattr(value, "model_dump")
    return key in FLAT_FIELDS or key in SPECIAL or key in setting_fields()


def merge(base: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (nested: sections and ``attacks``) with every flat setting of ``flat`` applied."""
    out: dict[str, Any] = {k: _plain(v) for k, v in base.items()}
    for name in SECTIONS:
        out[name] = dict(out.get(name) or {})
    entries = [dict(_plain(e)) for e in out.get("attacks") or [{"name": "fgsm"}]]
    if "attacks" in flat:
        names = list(dict.fromkeys(flat["attacks"]))  # --attack pgd --attack pgd runs PGD once
        entries = [{"name": n} if isinstance(n, str) else dict(_plain(n)) for n in names]
    for name, kwargs in (flat.get("attack_kwargs") or {}).items():
        matching = [e for e in entries if str(e["name"]).strip() == name.strip()]
        if not matching:
            raise UsageError(f"--attack-kwargs {name}: no such --attack in this run; add --attack {name}")
        for entry in matching:
            entry["kwargs"] = dict(kwargs)
    settings = setting_fields()
    for key, value in flat.items():
        if key in settings and key not in FLAT_FIELDS:
            takers = {info.name for info in settings[key]}
            for entry in entries:
                if str(entry["name"]).strip().lower() in takers:
                    entry[key] = value
    for key in ("norms", "eps"):
        if key in flat:
            for entry in entries:
                entry.pop(key, None)
    for key, value in flat.items():
        if key in FLAT_FIELDS and key not in SPECIAL:
            section, field = FLAT_FIELDS[key]
            out[section][field] = value
    checks = [_plain(c) for c in out["gate"].get("checks") or ()]
    out["gate"]["checks"] = tuple(checks) + tuple(_plain(c) for c in flat.get("gate_checks") or ())
    out["attacks"] = tuple(entries)
    return out


def split_flat(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments into (nested, flat): whole sections and entries, and flat settings."""
    nested: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key == "attacks" and not all(isinstance(a, str) for a in value or ()):
            nested[key] = value
        elif is_flat(key, value):
            flat[key] = str(value) if key == "data" and isinstance(value, Path) else value
        else:
            nested[key] = value
    return nested, flat
