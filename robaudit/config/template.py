"""The template ``robaudit profile init`` writes, made from the sections and the attack registry, so a new
setting or attack appears in it with its default and its help text, and nothing is written twice."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from robaudit.attacks.registry import REGISTRY
from robaudit.config.sections import SECTIONS

HEADER = """\
# robaudit audit profile. Run it with:  robaudit scan --profile THIS_FILE
# Check it without running:           robaudit profile validate THIS_FILE
# See every value, defaults filled in: robaudit profile show THIS_FILE
# Flags given on the command line override the values here. Every key below is shown with its default;
# remove the '# ' in front of a key to set it.
version: 1
"""
# Settings a scan needs a value for, written out so the template runs once the paths are edited.
STARTERS = {("model", "path"): "model.onnx", ("data", "path"): "data.npz"}
# The attacks the template runs (the others are listed commented out).
STARTER_ATTACKS = ("fgsm", "pgd")
ART_EXAMPLE = {"name": "art:DeepFool", "kwargs": {"max_iter": 20}}


def _value(value: Any) -> str:
    """A value as YAML on one line."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Path):
        value = str(value)
    return (
        str(yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False))
        .strip()
        .removesuffix("...")
        .strip()
    )


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, 96 - len(indent), break_on_hyphens=False)]


def _section(name: str) -> list[str]:
    """The section's keys, commented out with their defaults, but for its first key (or the starter),
    written out so that the section is a mapping once any other key is uncommented."""
    lines = ["", f"{name}:"]
    for i, (field, info) in enumerate(SECTIONS[name].model_fields.items()):
        key = info.alias or field
        lines += _comment(info.description or key, "  ")
        default = info.get_default(call_default_factory=True)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if (name, field) in STARTERS or i == 0:
            if "example" in extra:
                lines.append(f"  # e.g. {key}: {_value(extra['example'])}")
            lines.append(f"  {key}: {STARTERS.get((name, field), _value(default))}")
            continue
        lines.append(f"  # {key}: {_value(extra.get('example', default))}")
    return lines


def _attacks() -> list[str]:
    lines = ["", "# Run cheapest first; later attacks only see the samples still robust.", "attacks:"]
    for name, info in REGISTRY.items():
        if name == "art":
            continue
        on = name in STARTER_ATTACKS
        mark = "" if on else "# "
        lines.append(f"  {mark}- name: {name}")
        lines += _comment(info.summary, "    ")
        for field, setting in info.settings.model_fields.items():
            lines.append(f"    # {field}: {_value(setting.default)}    # {setting.description}")
        if name == "pgd":
            lines.append("    # eps: [8/255, 16/255]    # this attack's own budgets (default: threat.eps)")
    lines += _comment(REGISTRY["art"].summary + " (pip install 'robaudit[art]')", "  ")
    lines.append(f"  # - name: {ART_EXAMPLE['name']}")
    lines.append(f"  #   kwargs: {_value(ART_EXAMPLE['kwargs'])}")
    return lines


def template_text() -> str:
    """Every section with every key, in the order a profile lists them."""
    lines = HEADER.splitlines()
    for name in SECTIONS:
        lines += _section(name)
        if name == "data":
            lines += _attacks()
    return "\n".join(lines) + "\n"
