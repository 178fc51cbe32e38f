"""Reliability probes: cheap extra queries that catch an evaluation overstating robustness.

They follow the indicators of attack failure (Pintor et al. 2022), the obfuscated-gradients checks
(Athalye et al. 2018) and the evaluation checklist (Carlini et al. 2019), on at most ``PROBE_SAMPLES``
clean-correct samples, so they cost a few seconds next to the audit itself:

- randomness: five passes over the same inputs must give the same logits;
- unavailable gradients: the loss gradient at a random start must be finite and non-zero;
- unbounded attack: PGD at L∞ eps = 1 must fool every sample (any image is reachable);
- weaker attack wins: PGD must also fool the samples FGSM fooled (per sample);
- loss choice: PGD with the DLR loss must not beat cross-entropy by more than half a point.

Every probe's candidates go through the runner's verification, like the audit's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from robaudit.attacks import rng
from robaudit.attacks.base import input_gradient
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.pgd import PGD
from robaudit.models import ModelAdapter
from robaudit.plan import Stage
from robaudit.results import Flag
from robaudit.runner import verify

PROBE_SAMPLES = 100
_STREAM = 1 << 21  # random starts of the gradient probe


def _fooled(adapter: ModelAdapter, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return adapter.predict_logits(x_adv).argmax(1) != y


def randomness(adapter: ModelAdapter, x: torch.Tensor) -> list[Flag]:
    outputs = [adapter.predict_logits(x) for _ in range(5)]
    if adapter.capabilities.gradients:
        with torch.no_grad():
            outputs += [adapter.logits(x).float() for _ in range(5)]
    reference = outputs[0]
    spread = max(float((o - outputs[0 if i < 5 else 5]).abs().max()) for i, o in enumerate(outputs))
    if spread <= 1e-5 * max(1.0, float(reference.abs().max())):
        return []
    return [
        Flag(
            code="randomness",
            message=f"five passes over the same inputs gave logits differing by up to {spread:.3g}",
            advice=(
                "the model is random (dropout or noise left on, or a randomised defence): attack it with "
                "expectation over transformation, and report robust accuracy over several runs"
            ),
        )
    ]


def gradients(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, eps: float
) -> list[Flag]:
    start = (x + eps * (2 * rng.uniform(seeds, _STREAM, x[0].numel()).view_as(x) - 1)).clamp(0, 1)
    try:
        grad = input_gradient(adapter.logits, start, y)
    except RuntimeError as exc:
        return [
            Flag(
                code="gradients-unavailable",
                message=f"the loss gradient cannot be computed ({str(exc).splitlines()[0][:120]})",
                advice="gradient attacks cannot work on this model: rely on gradient-free attacks (onepixel) or export it differentiably",
            )
        ]
    flat = grad.flatten(1)
    bad = ~torch.isfinite(flat).all(1) | (flat.abs().amax(1) == 0)
    if not bool(bad.any()):
        return []
    return [
        Flag(
            code="gradients-unavailable",
            message=(
                f"the loss gradient is zero or not finite for {int(bad.sum())} of {len(bad)} samples at a random start "
                "(gradient masking: Pintor et al. 2022, Athalye et al. 2018)"
            ),
            advice=(
                "gradient attacks are blind here, so robust accuracy is overstated: remove non-differentiable "
                "steps or saturated outputs, try --loss dlr, and add gradient-free attacks (onepixel)"
            ),
        )
    ]


def unbounded(adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor) -> list[Flag]:
    x_adv = PGD(steps=20).__call__(adapter.logits, x, y, eps=1.0, norm="linf", seeds=seeds)
    verify(x_adv, x, 1.0, "linf", "pgd (unbounded probe)")
    fooled = _fooled(adapter, x_adv, y)
    if bool(fooled.all()):
        return []
    return [
        Flag(
            code="unbounded-attack",
            message=(
                f"PGD at L∞ eps = 1, where any image is reachable, fooled only {int(fooled.sum())} of {len(fooled)} "
                "samples (Carlini et al. 2019)"
            ),
            advice="the attack, not the model, is failing: look for gradient masking, and do not trust robust accuracy",
        )
    ]


def weaker_attack_wins(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage
) -> list[Flag]:
    """FGSM and PGD per sample at the stage's threat model: PGD should break whatever FGSM breaks."""
    norm, eps = stage.threat.norm, stage.threat.eps
    pgd = next((a for a in stage.attacks if isinstance(a, PGD)), None)
    if pgd is None:
        return []
    fgsm_fooled = _fooled(adapter, FGSM()(adapter.logits, x, y, eps=eps, norm=norm, seeds=seeds), y)
    idx = torch.nonzero(fgsm_fooled).flatten()
    if idx.numel() == 0:
        return []
    x_adv = pgd(adapter.logits, x[idx], y[idx], eps=eps, norm=norm, seeds=seeds[idx])
    verify(x_adv, x[idx], eps, norm, pgd.name)
    missed = int((~_fooled(adapter, x_adv, y[idx])).sum())
    if missed == 0:
        return []
    return [
        Flag(
            code="weaker-attack-wins",
            message=(
                f"{norm} eps={eps:g}: FGSM fooled {missed} of {idx.numel()} probed samples that {pgd.name} did not "
                "(Athalye et al. 2018)"
            ),
            advice="the iterative attack is stuck (masked or noisy gradients, too small a step): use more --restarts or --loss dlr",
        )
    ]


def loss_choice(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage
) -> list[Flag]:
    """PGD with cross-entropy vs the DLR loss (Croce & Hein 2020) at the stage's threat model."""
    norm, eps = stage.threat.norm, stage.threat.eps
    pgd = next((a for a in stage.attacks if isinstance(a, PGD) and a.loss == "ce"), None)
    if pgd is None or adapter.num_classes < 3:
        return []
    robust = {}
    for attack in (
        pgd,
        PGD(steps=pgd.steps, rel_step_size=pgd.rel_step_size, restarts=pgd.restarts, loss="dlr"),
    ):
        x_adv = attack(adapter.logits, x, y, eps=eps, norm=norm, seeds=seeds)
        verify(x_adv, x, eps, norm, attack.name)
        robust[attack.loss] = float((~_fooled(adapter, x_adv, y)).float().mean())
    if robust["dlr"] >= robust["ce"] - 0.005:
        return []
    return [
        Flag(
            code="loss-choice",
            message=(
                f"{norm} eps={eps:g}: on {len(y)} probed samples PGD with the DLR loss leaves "
                f"{100 * robust['dlr']:.1f}% robust, cross-entropy {100 * robust['ce']:.1f}%"
            ),
            advice="cross-entropy is failing (often saturated or rescaled logits): add --loss dlr, or run the thorough profile",
        )
    ]


def probe_flags(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stages: Sequence[Stage]
) -> list[Flag]:
    """All probes on clean-correct samples ``x`` (already on the device)."""
    if len(y) == 0:
        return []
    flags = randomness(adapter, x)
    if not adapter.capabilities.gradients:
        return flags
    gradient_stages = [
        st for st in stages if st.threat.norm != "l0" and any(isinstance(a, PGD) for a in st.attacks)
    ]
    eps = gradient_stages[0].threat.eps if gradient_stages else 8 / 255
    flags += gradients(adapter, x, y, seeds, eps)
    flags += unbounded(adapter, x, y, seeds)
    if gradient_stages:
        stage = gradient_stages[0]  # the smallest eps of the first norm: where attacks are least saturated
        flags += weaker_attack_wins(adapter, x, y, seeds, stage)
        flags += loss_choice(adapter, x, y, seeds, stage)
    return flags


def probe_samples(clean_pred: np.ndarray, labels: np.ndarray, limit: int = PROBE_SAMPLES) -> np.ndarray:
    """Positions of the first ``limit`` clean-correct samples."""
    return np.flatnonzero(clean_pred == labels)[:limit]
