"""Randomised models: found before the first attack, then audited with EOT and R-majority evaluation.

A model that draws random numbers in its forward pass (noise on the input, dropout left on, a
randomised defence) gives a different gradient and a different prediction at every pass. One pass is
then neither a fair attack nor a fair verdict. Such a model is audited with expectation over
transformation (Athalye et al. 2018): every gradient attack averages ``eot`` gradient samples per
step, and every prediction the runner records (clean and adversarial) is the majority of ``eot_evals``
passes (``verification.majority_predict``). A deterministic model runs one of each, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from robaudit.attacks.base import Attack
    from robaudit.config import AuditConfig
    from robaudit.models import ModelAdapter

# Defaults for a model found random (0 in --eot / --eot-evals means "auto"). Ten gradient samples
# per step is the budget Athalye et al. used against randomised defences at the cost of 10x the
# passes; an odd number of evaluations has no ties, so every sample's majority is decided.
RANDOM_EOT = 10
RANDOM_EVALS = 11
_DETECT_SAMPLES = 16  # samples of the first batch the detection passes run on
_DETECT_PASSES = 3


@dataclass(frozen=True)
class EotPlan:
    """How the run treats the model's randomness: gradient samples per step and passes per verdict."""

    random_model: bool
    eot: int  # gradient samples averaged per attack step
    evals: int  # reference-runtime passes per prediction; the majority decides

    def note(self) -> str | None:
        if not self.random_model:
            return None
        return (
            f"the model is random: passes over the same input gave different outputs, so it was audited "
            f"with expectation over transformation (Athalye et al. 2018): gradient attacks averaged "
            f"{self.eot} gradient samples per step (--eot), and every prediction, clean and adversarial, is "
            f"the majority of {self.evals} passes (--eot-evals); a sample counts as fooled when more than "
            f"half of them misclassify it"
        )


NO_EOT = EotPlan(random_model=False, eot=1, evals=1)


def output_spread(adapter: ModelAdapter, x: torch.Tensor, passes: int) -> tuple[float, float]:
    """The largest difference between ``passes`` passes over the same inputs, on the reference runtime
    and (when there is one) the differentiable model, and the logits' scale it is judged against."""
    runs = [adapter.predict_logits]
    if adapter.capabilities.gradients:
        runs.append(adapter.logits)
    spread, scale = 0.0, 1.0
    for run in runs:
        with torch.no_grad():
            outputs = [run(x).float() for _ in range(passes)]
        scale = max(scale, float(outputs[0].abs().max()))
        spread = max([spread, *(float((o - outputs[0]).abs().max()) for o in outputs[1:])])
    return spread, scale


def differs(spread: float, scale: float) -> bool:
    """Whether a spread between identical passes is more than float noise."""
    return spread > 1e-5 * scale


def is_random(adapter: ModelAdapter, probe: torch.Tensor) -> bool:
    """Whether repeated passes over the first samples differ (``output_spread``)."""
    return differs(*output_spread(adapter, probe[:_DETECT_SAMPLES].to(adapter.device), _DETECT_PASSES))


def plan_eot(config: AuditConfig, random_model: bool) -> EotPlan:
    """The run's EOT plan: --eot-evals as given (0: auto), and the gradient samples of the first attack
    that sets ``eot`` (0: auto); auto is RANDOM_EOT / RANDOM_EVALS on a random model, else 1."""
    given = [int(e.settings.get("eot", 0) or 0) for e in config.attacks]
    eot = max(given, default=0) or (RANDOM_EOT if random_model else 1)
    evals = config.threat.eot_evals or (RANDOM_EVALS if random_model else 1)
    return EotPlan(random_model, eot, evals)


def with_eot(attacks: list[Attack], plan: EotPlan) -> list[Attack]:
    """The attacks with ``eot`` set (those that take it): an attack's own non-zero value stays."""
    out: list[Attack] = []
    for attack in attacks:
        has_eot = is_dataclass(attack) and any(f.name == "eot" for f in fields(attack))
        if has_eot and getattr(attack, "eot", 1) == 0:
            attack = replace(attack, eot=plan.eot)  # type: ignore[type-var]
        out.append(attack)
    return out


def reseed(seed: int, first_index: int) -> None:
    """Seed torch's global generator for one batch of a random model, from the run seed and the batch's
    first sample index: the same batches give the same draws. A random model's draws still depend on
    which samples share a batch, so its results depend on --batch-size (the README says so)."""
    torch.manual_seed((seed * 1_000_003 + first_index) & 0x7FFF_FFFF_FFFF_FFFF)
