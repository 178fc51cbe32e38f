"""The cascade plan: which attacks run under which threat model, in which order.

A threat model is a norm and a budget: an eps-ball in L∞, L2 or L1 on the [0, 1] scale, or ``l0``
with a budget of changed pixel locations (the one-pixel attack's). Each threat model gets its own
cascade of the attacks that apply to it, cheapest first (AutoAttack's order: later attacks only see
the samples earlier ones could not break).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robaudit.attacks.base import Attack
from robaudit.attacks.registry import cost_rank
from robaudit.report.eps import eps_text


@dataclass(frozen=True)
class ThreatModel:
    norm: str  # linf | l2 | l1 | l0
    eps: float  # the budget; for l0, the number of pixel locations

    def describe(self) -> str:
        if self.norm == "l0":
            n = int(self.eps)
            return f"l0 {n} pixel{'s' if n != 1 else ''}"
        return f"{self.norm} eps={eps_text(self.norm, self.eps)}"


@dataclass(frozen=True)
class Stage:
    threat: ThreatModel
    attacks: tuple[Attack, ...]


def plan_cascade(
    attacks: Sequence[Attack],
    norms: Sequence[str],
    eps_list: Sequence[float],
    pixels: int,
    overrides: Mapping[str, tuple[Sequence[str] | None, Sequence[float] | None]] | None = None,
) -> list[Stage]:
    """One stage per threat model, in the order norms x eps (ascending) then l0; attacks by cost.

    ``overrides`` maps an attack's name to its own (norms, eps) when it should not run under every
    threat model of the run (a profile can give PGD a larger eps than FGSM, say); None keeps the run's.
    """
    overrides = overrides or {}

    def threats(attack: Attack) -> tuple[list[str], list[float]]:
        own_norms, own_eps = overrides.get(attack.name, (None, None))
        chosen_norms = [n for n in (own_norms or norms) if n in attack.norms]
        return chosen_norms, [float(e) for e in (own_eps or eps_list)]

    ordered = sorted(attacks, key=cost_rank)  # stable: equal ranks keep the user's order
    all_norms = list(dict.fromkeys([*norms, *(n for a in ordered for n in threats(a)[0])]))
    all_eps = sorted({float(e) for e in eps_list} | {e for a in ordered for e in threats(a)[1]})
    stages = []
    for norm in all_norms:
        for eps in all_eps:
            chosen = tuple(a for a in ordered if norm in threats(a)[0] and eps in threats(a)[1])
            if chosen:
                stages.append(Stage(ThreatModel(norm, eps), chosen))
    # An L0 attack's budget is its own pixel count (a profile can run one-pixel with 3 pixels).
    budgets = sorted({int(getattr(a, "pixels", pixels)) for a in ordered if "l0" in a.norms})
    for k in budgets:
        chosen = tuple(a for a in ordered if "l0" in a.norms and int(getattr(a, "pixels", pixels)) == k)
        stages.append(Stage(ThreatModel("l0", float(k)), chosen))
    return stages
