"""Reliability probes: cheap extra queries that catch an evaluation overstating robustness.

They follow the indicators of attack failure (Pintor et al. 2022), the obfuscated-gradients checks
(Athalye et al. 2018) and the evaluation checklist (Carlini et al. 2019), on at most ``PROBE_SAMPLES``
clean-correct samples, so they cost a few seconds next to the audit itself:

- randomness: five passes over the same inputs must give the same logits;
- unavailable gradients: the loss gradient at a random start must be finite and non-zero;
- unbounded attack: PGD at L∞ eps = 1 must fool every sample (any image is reachable);
- weaker attack wins: PGD must also fool the samples FGSM fooled (per sample);
- loss choice: PGD with the DLR loss must not beat cross-entropy by more than half a point;
- incomplete optimisation: twice the PGD steps must not break more than half a point more;
- quantisation: PGD's adversarial examples re-checked with pixels rounded to 8 bits (both figures
  noted; a flag when rounding undoes most of them).

Differences of a sample or two are within what a different random start alone produces, so the
comparisons need more than two samples as well as more than half a point (see ``_noise_floor``).

Every probe's candidates go through the runner's verification, like the audit's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from robaudit.attacks import rng
from robaudit.attacks.base import input_gradient
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.pgd import PGD
from robaudit.errors import one_line
from robaudit.models import ModelAdapter
from robaudit.plan import Stage
from robaudit.results import Flag
from robaudit.runner import is_out_of_memory, verify

PROBE_SAMPLES = 100
_STREAM = 1 << 21  # random starts of the gradient probe


def _noise_floor(n: int) -> float:
    """The smallest difference in robust accuracy a probe reports: half a point (Carlini et al.'s
    threshold) or two samples, whichever is larger, since a different random start alone moves a
    sample or two."""
    return max(0.005, 2.0 / n)


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
    except Exception as exc:  # noqa: BLE001 - any failure here means no gradients
        if is_out_of_memory(exc):
            raise
        return [
            Flag(
                code="gradients-unavailable",
                message=f"the loss gradient cannot be computed ({one_line(exc, 120)})",
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


@dataclass(frozen=True)
class PgdRun:
    """The run's own PGD on the probe samples, computed once and shared by the probes that compare
    against it (per-sample seeds make its outcome on any subset the same as on the whole)."""

    attack: PGD
    x_adv: torch.Tensor
    fooled: torch.Tensor


def run_pgd(
    adapter: ModelAdapter, attack: PGD, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage
) -> PgdRun:
    norm, eps = stage.threat.norm, stage.threat.eps
    x_adv = attack(adapter.logits, x, y, eps=eps, norm=norm, seeds=seeds)
    verify(x_adv, x, eps, norm, attack.name)
    return PgdRun(attack, x_adv, _fooled(adapter, x_adv, y))


def weaker_attack_wins(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage, pgd: PgdRun
) -> list[Flag]:
    """FGSM and PGD per sample at the stage's threat model: PGD should break whatever FGSM breaks."""
    norm, eps = stage.threat.norm, stage.threat.eps
    fgsm_fooled = _fooled(adapter, FGSM()(adapter.logits, x, y, eps=eps, norm=norm, seeds=seeds), y)
    missed = int((fgsm_fooled & ~pgd.fooled).sum())
    if missed == 0:
        return []
    return [
        Flag(
            code="weaker-attack-wins",
            message=(
                f"{norm} eps={eps:g}: FGSM fooled {missed} of {int(fgsm_fooled.sum())} probed samples that "
                f"{pgd.attack.name} did not (Athalye et al. 2018)"
            ),
            advice="the iterative attack is stuck (masked or noisy gradients, too small a step): use more --restarts or --loss dlr",
        )
    ]


def loss_choice(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage, pgd: PgdRun
) -> list[Flag]:
    """PGD with cross-entropy vs the DLR loss (Croce & Hein 2020) at the stage's threat model."""
    if pgd.attack.loss != "ce" or adapter.num_classes < 3:
        return []
    norm, eps = stage.threat.norm, stage.threat.eps
    dlr = run_pgd(adapter, replace(pgd.attack, loss="dlr"), x, y, seeds, stage)
    robust = {"ce": float((~pgd.fooled).float().mean()), "dlr": float((~dlr.fooled).float().mean())}
    if robust["ce"] - robust["dlr"] <= _noise_floor(len(y)):
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


def incomplete_optimisation(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage, pgd: PgdRun
) -> list[Flag]:
    """PGD with twice the steps on the same samples: if it breaks noticeably more, the run's PGD stopped
    before converging (Carlini et al. 2019)."""
    norm, eps = stage.threat.norm, stage.threat.eps
    steps = pgd.attack.steps
    doubled = run_pgd(adapter, replace(pgd.attack, steps=2 * steps), x, y, seeds, stage)
    robust = [float((~pgd.fooled).float().mean()), float((~doubled.fooled).float().mean())]
    if robust[0] - robust[1] <= _noise_floor(len(y)):
        return []
    return [
        Flag(
            code="incomplete-optimisation",
            message=(
                f"{norm} eps={eps:g}: {2 * steps} PGD steps leave {100 * robust[1]:.1f}% of {len(y)} probed samples "
                f"robust, {steps} steps {100 * robust[0]:.1f}%"
            ),
            advice=f"the attack has not converged: raise --steps (at least {2 * steps}) until robust accuracy stops falling",
        )
    ]


def quantisation(
    adapter: ModelAdapter, y: torch.Tensor, stage: Stage, pgd: PgdRun
) -> tuple[list[Flag], str | None]:
    """Re-check PGD's adversarial examples after rounding pixels to 8 bits, as a saved PNG would store
    them: both figures go into the notes, and a flag when rounding undoes most of them."""
    norm, eps = stage.threat.norm, stage.threat.eps
    n = int(pgd.fooled.sum())
    if n == 0:
        return [], None
    rounded = (pgd.x_adv[pgd.fooled] * 255).round() / 255
    kept = int(_fooled(adapter, rounded, y[pgd.fooled]).sum())
    note = (
        f"8-bit check ({norm} eps={eps:g}, {len(y)} probed samples): {n} adversarial examples from "
        f"{pgd.attack.name}, {kept} still fool the model with pixels rounded to 8 bits"
    )
    if kept * 2 >= n:
        return [], note  # the figures are in the note; a flag only when most of the effect is sub-8-bit
    flag = Flag(
        code="quantisation",
        message=f"{n - kept} of {n} adversarial examples stop fooling the model once pixels are rounded to 8 bits",
        advice=(
            "part of the measured vulnerability needs sub-8-bit precision; if inputs arrive as 8-bit images, "
            "read robust accuracy with that in mind"
        ),
    )
    return [flag], note


def probe_flags(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stages: Sequence[Stage]
) -> tuple[list[Flag], list[str]]:
    """All probes on clean-correct samples ``x`` (already on the device): flags, and notes with figures."""
    notes: list[str] = []
    if len(y) == 0:
        return [], notes
    flags: list[Flag] = []

    def attempt(name: str, run: Callable[[], list[Flag]]) -> None:
        """A probe that crashes is reported as a flag of its own; it never ends the audit."""
        try:
            flags.extend(run())
        except Exception as exc:  # noqa: BLE001
            if is_out_of_memory(exc):
                raise
            flags.append(
                Flag(
                    code="probe-failed",
                    message=f"the {name} probe failed ({type(exc).__name__}: {one_line(exc, 160)})",
                    advice="the model misbehaves under the probe's queries; run with --debug, or --no-checks to skip probes",
                )
            )

    attempt("randomness", lambda: randomness(adapter, x))
    if not adapter.capabilities.gradients:
        return flags, notes
    gradient_stages = [
        st for st in stages if st.threat.norm != "l0" and any(isinstance(a, PGD) for a in st.attacks)
    ]
    eps = gradient_stages[0].threat.eps if gradient_stages else 8 / 255
    attempt("gradient", lambda: gradients(adapter, x, y, seeds, eps))
    attempt("unbounded-attack", lambda: unbounded(adapter, x, y, seeds))
    if gradient_stages:
        stage = gradient_stages[0]  # the smallest eps of the first norm: where attacks are least saturated
        attack = next(a for a in stage.attacks if isinstance(a, PGD))
        base: list[PgdRun] = []

        def run_base() -> list[Flag]:
            base.append(run_pgd(adapter, attack, x, y, seeds, stage))
            return []

        attempt("pgd", run_base)
        if base:
            pgd = base[0]
            attempt("weaker-attack", lambda: weaker_attack_wins(adapter, x, y, seeds, stage, pgd))
            attempt("loss-choice", lambda: loss_choice(adapter, x, y, seeds, stage, pgd))
            attempt(
                "incomplete-optimisation", lambda: incomplete_optimisation(adapter, x, y, seeds, stage, pgd)
            )

            def quantised() -> list[Flag]:
                found, note = quantisation(adapter, y, stage, pgd)
                notes.extend([note] if note else [])
                return found

            attempt("quantisation", quantised)
    return flags, notes


def probe_samples(clean_pred: np.ndarray, labels: np.ndarray, limit: int = PROBE_SAMPLES) -> np.ndarray:
    """Positions of the first ``limit`` clean-correct samples."""
    return np.flatnonzero(clean_pred == labels)[:limit]
