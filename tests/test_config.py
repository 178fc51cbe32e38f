"""The configuration declared once: sections, the one merge of flags onto a profile, library keywords,
and the attack registry every layer reads (a new attack needs no change to the CLI, profiles or config)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, ValidationError
from typer.testing import CliRunner

from robaudit.attacks import registry
from robaudit.config import AuditConfig
from robaudit.config.merge import merge
from robaudit.config.profile import parse_profile, profile_values
from robaudit.config.sections import FLAT_FIELDS, SECTIONS
from robaudit.config.template import template_text
from robaudit.errors import UsageError


def test_flat_keywords_and_nested_sections_are_one_configuration() -> None:
    flat = AuditConfig(
        model="m.onnx",
        data="d.npz",
        attacks=("fgsm", "pgd"),
        eps=(0.1, "8/255"),
        steps=5,
        seed=3,
        json_path="r.json",
    )
    nested = AuditConfig(
        model={"path": "m.onnx"},
        data={"path": "d.npz"},
        attacks=[{"name": "fgsm"}, {"name": "pgd", "steps": 5}],
        threat={"eps": [0.1, "8/255"]},
        run={"seed": 3},
        reports={"json": "r.json"},
    )
    assert flat == nested
    assert flat.threat.eps == (8 / 255, 0.1)  # sorted, fractions parsed
    assert flat.attacks[0].settings == {} and flat.attacks[1].settings == {"steps": 5}  # fgsm takes no steps


def test_every_flat_name_maps_to_one_field() -> None:
    assert len(FLAT_FIELDS) == sum(len(cls.model_fields) for cls in SECTIONS.values())
    assert FLAT_FIELDS["eps"] == ("threat", "eps") and FLAT_FIELDS["json_path"] == ("reports", "json_")
    assert FLAT_FIELDS["checks"] == ("gate", "reliability_checks")


PROFILE = """
version: 1
attacks:
  - name: fgsm
  - name: pgd
    steps: 7
    eps: [0.3]
threat: {eps: [0.1]}
gate: {checks: [{metric: clean_accuracy, min: 0.5}]}
"""


def merged(flags: dict[str, Any]) -> AuditConfig:
    return AuditConfig.model_validate(
        merge(profile_values(parse_profile(PROFILE, "p.yaml")), {"model": "m", **flags})
    )


def test_flags_override_a_profile_by_the_documented_rules() -> None:
    plain = merged({})
    assert plain.attacks[1].settings == {"steps": 7} and plain.attacks[1].eps == (0.3,)
    # An attack setting replaces the entry's own; eps replaces the entries' own budgets too.
    over = merged({"steps": 2, "eps": (0.2,)})
    assert (
        over.attacks[1].settings == {"steps": 2} and over.attacks[1].eps is None and over.threat.eps == (0.2,)
    )
    # --attack replaces the list and with it the per-entry settings.
    replaced = merged({"attacks": ("pgd",)})
    assert [a.name for a in replaced.attacks] == ["pgd"] and replaced.attacks[0].settings == {}
    # Gate checks from flags are added: a flag only makes the gate stricter.
    stricter = merged({"gate_checks": [{"metric": "clean_accuracy", "min": 0.9}]})
    assert [c.min for c in stricter.gate.checks] == [0.5, 0.9]


def test_attack_kwargs_need_an_attack_of_the_run_and_an_art_attack() -> None:
    with pytest.raises(UsageError, match="no such --attack in this run"):
        AuditConfig(model="m", attacks=("fgsm",), attack_kwargs={"art:DeepFool": {}})
    with pytest.raises(ValidationError, match="keyword arguments are for art:ClassName"):
        AuditConfig(model="m", attacks=("pgd",), attack_kwargs={"pgd": {"x": 1}})


def test_an_attack_setting_is_validated_by_its_own_settings_model() -> None:
    with pytest.raises(ValidationError, match="steps: Input should be greater than 0"):
        AuditConfig(model="m", attacks=[{"name": "pgd", "steps": 0}])
    with pytest.raises(ValidationError, match="stpes: unknown key"):
        AuditConfig(model="m", attacks=[{"name": "pgd", "stpes": 3}])


def test_the_template_names_every_setting() -> None:
    """profile init writes every section key and every attack setting, so none is undiscoverable."""
    text = template_text()
    for name, cls in SECTIONS.items():
        assert f"\n{name}:" in text, name
        for field, info in cls.model_fields.items():
            assert f" {info.alias or field}:" in text, f"{name}.{field}"
    for setting in registry.setting_fields():
        assert f" {setting}:" in text, setting


class _BlurSettings(registry.AttackSettings):
    radius: int = Field(default=2, gt=0, description="Blur: kernel radius in pixels.")


def _reload_cli() -> Any:
    """The CLI as a fresh process would build it from the registry as it is now."""
    import importlib

    import robaudit.cli
    import robaudit.cli.scan

    importlib.reload(robaudit.cli.scan)
    return importlib.reload(robaudit.cli).app


@pytest.fixture
def blur_attack() -> Iterator[registry.AttackInfo]:
    """An attack registered the documented way: a settings model and one register() call."""
    info = registry.register(
        registry.AttackInfo(
            name="blur",
            summary="test attack",
            settings=_BlurSettings,
            threat_models=("linf",),
            needs="scores",
            deterministic=True,
            cost_rank=5,
            implementation="robaudit.attacks.fgsm:FGSM",
        )
    )
    try:
        yield info
    finally:
        del registry.REGISTRY["blur"]
        _reload_cli()


def test_a_registered_attack_reaches_profiles_config_and_cli(
    blur_attack: registry.AttackInfo, tmp_path: Path
) -> None:
    profile = parse_profile("version: 1\nattacks:\n  - name: blur\n    radius: 3\n", "p.yaml")
    assert profile.attacks[0].settings == {"radius": 3}
    with pytest.raises(UsageError, match=r"attacks\[0\]\.radius: Input should be greater than 0"):
        parse_profile("version: 1\nattacks:\n  - name: blur\n    radius: 0\n", "p.yaml")
    assert AuditConfig(model="m", attacks=("blur",), radius=4).attacks[0].settings == {"radius": 4}

    # The CLI builds its attack flags from the registry when the command is made.
    result = CliRunner().invoke(_reload_cli(), ["scan", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--radius" in result.output and "kernel radius" in result.output
