"""What ``robaudit profile show`` says before the resolved YAML: the profile's description and, per
threat model, its cascade (the order the attacks run in) with each attack's budget per sample.

The order is the runner's: within a threat model attacks run cheapest first (the registry's cost rank),
each only on the samples still robust. The budget is the most model passes an attack spends on one
sample, from its resolved settings; an attack stops early on a sample it has fooled. Every line is a
YAML comment, so the output stays a valid profile.
"""

from __future__ import annotations

import textwrap
from typing import Any

from robaudit.attacks.registry import is_art, lookup


def budget(settings: dict[str, Any]) -> str:
    """An attack's budget per sample in words: passes per run, times targets and restarts."""
    parts: list[str] = []
    if "queries" in settings:
        runs, kind = int(settings["queries"]), "forward passes (scores only)"
        parts.append(f"{runs} queries")
    elif "generations" in settings:
        runs = int(settings["population"]) * (int(settings["generations"]) + 1)
        kind = "forward passes (scores only)"
        parts.append(f"{settings['population']} candidates x {settings['generations']} generations")
    elif "steps" in settings:
        runs, kind = int(settings["steps"]), "gradient passes"
        parts.append(f"{runs} steps")
    else:
        runs, kind = 1, "gradient pass"
        parts.append("one step")
    for key, word in (("n_targets", "targets"), ("restarts", "restarts")):
        if int(settings.get(key, 1)) > 1:
            runs *= int(settings[key])
            parts.append(f"{settings[key]} {word}")
    return f"{' x '.join(parts)}: at most {runs} {kind} per sample"


def cascade_lines(resolved: dict[str, Any]) -> list[str]:
    """The cascade of each threat model of a resolved profile, one numbered line per attack."""
    threats: dict[str, list[tuple[int, str]]] = {}
    for item in resolved["attacks"]:
        if is_art(item["name"]):
            rank, label = 90, item["name"]
        else:
            info = lookup(item["name"])
            rank, label = info.cost_rank, _label(item)
        if "norms" not in item:  # an L0 attack: its own threat model
            threats.setdefault("l0", []).append((rank, f"{label}: {budget(item)}"))
            continue
        settings = {k: v for k, v in item.items() if k not in ("name", "norms", "eps", "kwargs")}
        for norm in item["norms"]:
            supported = is_art(item["name"]) or norm in lookup(item["name"]).threat_models
            text = f"{label}: {budget(settings)}" if supported else f"{label}: skipped, no {norm} version"
            threats.setdefault(norm, []).append((rank, text))
    lines = []
    for norm, entries in threats.items():
        lines.append(f"{norm}: in this order, each on the samples still robust; worst case per sample")
        lines += [f"  {i}. {text}" for i, (_, text) in enumerate(sorted(entries, key=lambda e: e[0]), 1)]
    return lines


def _label(item: dict[str, Any]) -> str:
    name = str(item["name"])
    return f"{name}-{item['loss']}" if name in ("apgd", "pgd") and "loss" in item else name


def show_header(resolved: dict[str, Any]) -> str:
    """The comment block ``profile show`` prints above the YAML."""
    out = []
    if resolved.get("description"):
        out += [f"# {line}" for line in textwrap.wrap(str(resolved["description"]), 100)]
        out.append("#")
    out.append("# The cascade:")
    out += [f"#   {line}" for line in cascade_lines(resolved)]
    return "\n".join(out) + "\n"
