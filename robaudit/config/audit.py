"""The audit configuration: the sections of ``sections.py`` in one frozen model, validated once.

Every number the audit uses comes from here, so a result can record exactly what produced it. A
profile is this model plus ``version: 1`` (``profile.Profile``); the CLI merges its flags onto a profile
with ``merge.merge``; the library may pass whole sections or flat keywords
(``AuditConfig(model="m.onnx", data="d.npz", attacks=("fgsm", "pgd"), eps=(0.1, "8/255"))``), which go
through the same merge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from robaudit.config.merge import merge, split_flat
from robaudit.config.sections import (
    AttackEntry,
    CertifySettings,
    DataSettings,
    GateSettings,
    ModelSettings,
    PreprocessingSettings,
    ReportsSettings,
    RunSettings,
    ThreatSettings,
)
from robaudit.config.values import check_linf_eps


def _default_attacks() -> tuple[AttackEntry, ...]:
    return (AttackEntry(name="fgsm"),)


class AuditSections(BaseModel):
    """The sections, in the order a profile lists them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    accepts_flat: ClassVar[bool] = True  # the library's AuditConfig(model=..., eps=...) keywords

    model: ModelSettings = Field(default_factory=ModelSettings)
    preprocessing: PreprocessingSettings = Field(default_factory=PreprocessingSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    attacks: tuple[AttackEntry, ...] = Field(default_factory=_default_attacks)
    threat: ThreatSettings = Field(default_factory=ThreatSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    reports: ReportsSettings = Field(default_factory=ReportsSettings)
    certify: CertifySettings = Field(default_factory=CertifySettings)

    @model_validator(mode="before")
    @classmethod
    def _flat_keywords(cls, values: Any) -> Any:
        if not isinstance(values, dict) or not cls.accepts_flat:
            return values
        nested, flat = split_flat(values)
        return merge(nested, flat) if flat else nested

    @model_validator(mode="after")
    def _checked(self) -> AuditSections:
        for entry in self.attacks:
            if entry.kwargs is not None and not entry.name.strip().lower().startswith("art:"):
                raise ValueError(
                    f"{entry.name}: keyword arguments are for art:ClassName attacks; native attacks take flags"
                )
        return self

    @property
    def float_data_range(self) -> tuple[float, float]:
        """The range float data are stored in (uint8 data are 0..255 whatever this says)."""
        return self.preprocessing.input_range if self.data.range is None else self.data.range


class AuditConfig(AuditSections):
    """Everything one audit needs; the model's path is required. Paths are as the user gave them."""

    @property
    def model_path(self) -> Path:
        """The model file (required, unlike in a profile, where a flag may give it)."""
        assert self.model.path is not None  # _runnable
        return self.model.path

    @model_validator(mode="after")
    def _runnable(self) -> AuditConfig:
        # A profile names the field instead (profile.check_runnable: threat.eps, attacks[1].eps).
        if "linf" in self.threat.norms:
            for e in self.threat.eps:
                check_linf_eps(e)
        if self.model.path is None:
            raise ValueError("model: missing; give the model file (model.path in a profile)")
        return self
