"""The run's attacks built from the configuration's attack entries, through the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from robaudit.attacks.registry import REGISTRY, build_attack, settings_of
from robaudit.errors import UsageError

if TYPE_CHECKING:
    from robaudit.attacks.base import Attack
    from robaudit.audit.plan import Stage
    from robaudit.config import AuditConfig


def build_attacks(config: AuditConfig) -> list[Attack]:
    """One attack per entry, with the entry's settings (the registry's defaults for the rest)."""
    attacks = [build_attack(entry.name, entry.settings, entry.kwargs) for entry in config.attacks]
    seen: set[str] = set()
    for i, attack in enumerate(attacks):
        if attack.name in seen:
            raise UsageError(
                f"attacks[{i}]: a second {attack.name}; two entries of one attack need different settings "
                "that change its name (e.g. pgd with loss: dlr is pgd-dlr)"
            )
        seen.add(attack.name)
    return attacks


def threat_overrides(config: AuditConfig, attacks: list[Attack]) -> dict[str, tuple[object, object]]:
    """Per-attack (norms, eps) of the entries that give their own, keyed by the built attack's name."""
    return {a.name: (entry.norms, entry.eps) for a, entry in zip(attacks, config.attacks, strict=True)}


def plan_settings(config: AuditConfig, stages: list[Stage]) -> dict[str, object]:
    """What a result's settings record of the plan: the attacks with their settings and the threat
    models (a baseline compares these, before the audit from the configuration and after it)."""
    return {
        "attacks": attack_names(stages),
        **attack_settings(stages),
        "attack_kwargs": attack_kwargs(config),
        "threat_models": [st.threat.describe() for st in stages],
        "norms": list(dict.fromkeys(st.threat.norm for st in stages if st.threat.norm != "l0")),
        "eps": sorted({st.threat.eps for st in stages if st.threat.norm != "l0"}),
    }


def attack_names(stages: list[Stage]) -> list[str]:
    return list(dict.fromkeys(a.name for st in stages for a in st.attacks))


def attack_settings(stages: list[Stage]) -> dict[str, dict[str, object] | None]:
    """Per registered attack that has settings, every field it ran with (None when it did not run)."""
    out: dict[str, dict[str, object] | None] = {}
    for name, info in REGISTRY.items():
        if info.settings.model_fields:
            attack = next((a for st in stages for a in st.attacks if a.name == name), None)
            out[name] = None if attack is None else settings_of(attack)
    return out


def attack_kwargs(config: AuditConfig) -> dict[str, dict[str, object]]:
    return {entry.name: dict(entry.kwargs) for entry in config.attacks if entry.kwargs is not None}
