"""What the gate could never accept, found from the configuration and the cascade plan before the audit starts.

The rows an audit will have follow from its configuration and the registry: the built attacks (pgd
with loss dlr is ``pgd-dlr``) under the threat models of the cascade, and a worst-case row per threat
model (and an ``exact`` row where ``--certify exact|auto`` may run exact verification; whether it
does depends on the model, so the gate after the audit is the one to find it missing). A gate check
that picks none of them, or two, could never pass, and a baseline whose attack
settings differ from this run's is refused: both before any model is loaded, as ``profile validate``
refuses such a profile. The gate after the audit checks again (``gate.gate_result``), since a model
without gradients runs only the gradient-free attacks, and the model's input shape and the data's
sha256 are known only once they are opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from robaudit.audit.attack_plan import build_attacks, plan_settings, threat_overrides
from robaudit.audit.plan import Stage, plan_cascade
from robaudit.audit.records import EXACT, exact_threat
from robaudit.audit.surrogate import TransferAttack
from robaudit.errors import UsageError
from robaudit.gate.baseline import not_comparable, settings_mismatches
from robaudit.gate.selectors import ambiguous, available, find_rows
from robaudit.gate.thresholds import Check
from robaudit.results import WORST_CASE

if TYPE_CHECKING:
    from robaudit.config import AuditConfig
    from robaudit.results import AuditResult


@dataclass(frozen=True)
class PlannedRow:
    """A row the audit will report: an attack, or the worst case, under one threat model."""

    attack: str
    norm: str
    eps: float


def planned_rows(stages: list[Stage], certify: str = "none") -> list[PlannedRow]:
    rows: list[PlannedRow] = []
    for stage in stages:
        norm, eps = stage.threat.norm, stage.threat.eps
        rows += [PlannedRow(attack.name, norm, eps) for attack in stage.attacks]
        if exact_threat(certify, norm, eps):
            rows.append(PlannedRow(EXACT, norm, eps))
        rows.append(PlannedRow(WORST_CASE, norm, eps))
    return rows


def possible_plans(config: AuditConfig) -> list[list[Stage]]:
    """The cascades the run may have: with every attack, and, where some attacks need gradients and
    others do not, with only the gradient-free ones (what a model without gradients runs)."""
    attacks = build_attacks(config)
    overrides = threat_overrides(config, attacks)
    if config.model.surrogate is not None:  # --surrogate's rows; the surrogate itself is not loaded here
        extra = [TransferAttack(a, None) for a in attacks if a.needs_gradients]  # type: ignore[arg-type]
        overrides.update({t.name: overrides[t.inner.name] for t in extra})
        attacks = [*attacks, *extra]
    norms, eps = config.threat.norms, config.threat.eps
    plans = [plan_cascade(attacks, norms, eps, 1, overrides)]  # type: ignore[arg-type]
    gradient_free = [a for a in attacks if not a.needs_gradients]
    if gradient_free and len(gradient_free) < len(attacks):
        plans.append(plan_cascade(gradient_free, norms, eps, 1, overrides))  # type: ignore[arg-type]
    return plans


def check_gate_rows(config: AuditConfig, plans: list[list[Stage]]) -> None:
    """A UsageError for the first gate check that picks no row, or several, in every possible plan."""
    certify = config.certify.method
    everything = planned_rows(plans[0], certify)
    for entry in config.gate.checks:
        check = Check(**entry.model_dump())
        if check.norm is None or check.eps is None:
            continue
        found = [
            find_rows(planned_rows(plan, certify), check.attack, check.norm, check.eps, check.eps_decimals)
            for plan in plans
        ]
        if any(len(rows) == 1 for rows in found):
            continue
        if not any(found):
            raise UsageError(
                f"gate check {check.name}: no row {check.selector} will be in this run's results, so "
                f"the check could never pass; the run will have {available(everything)}; check one of "
                f"those, or add the attack or eps (--attack, --eps)"
            )
        written = (check.selector or "").rsplit(":", 1)[-1]
        raise UsageError(f"gate check {check.name}: {ambiguous(next(r for r in found if r), written)}")


def check_baseline_settings(config: AuditConfig, baseline: AuditResult, plans: list[list[Stage]]) -> None:
    """BaselineNotComparable (exit 3) when the baseline's attack settings differ from this run's in
    every possible plan, unless the configuration allows a mismatch."""
    if config.gate.allow_mismatch:
        return
    found = [
        settings_mismatches(
            baseline.settings,
            {**plan_settings(config, plan), "target": config.threat.target, "seed": config.run.seed},
        )
        for plan in plans
    ]
    if all(found):
        raise not_comparable(str(config.gate.baseline or "baseline"), found[0])


def precheck_gate(config: AuditConfig, baseline: AuditResult | None = None) -> None:
    """Refuse, before the audit, a gate that its results could never pass: a check on a row the run
    will not have (UsageError, exit 2), or a ``baseline`` whose attack settings differ
    (BaselineNotComparable, exit 3, unless ``gate.allow_mismatch``)."""
    if not config.gate.checks and baseline is None:
        return
    plans = possible_plans(config)
    check_gate_rows(config, plans)
    if baseline is not None:
        check_baseline_settings(config, baseline, plans)
