"""Reliability probes: cheap extra queries that catch an evaluation overstating robustness.

They follow the indicators of attack failure (Pintor et al. 2022), the obfuscated-gradients checks
(Athalye et al. 2018) and the evaluation checklist (Carlini et al. 2019), on at most ``PROBE_SAMPLES``
clean-correct samples, so they cost a few seconds next to the audit itself:

- probability outputs: outputs that look like probabilities must not be attacked as logits;
- randomness: five passes over the same inputs must give the same logits;
- unavailable gradients: the loss gradient at a random start must be finite and non-zero;
- unbounded attack: PGD at L∞ eps = 1 must fool every sample (any image is reachable);
- silent success: a sample PGD fooled at some iterate must still be fooled at its last (robaudit keeps
  the best iterate either way; the flag says the step overshoots);
- weaker attack wins: PGD must also fool the samples FGSM or random search fooled (per sample), and
  under L∞ and L2 more than a couple of those a short Square attack fooled (a score-based attack
  beating the white-box one: Carlini et al. 2019);
- loss choice: PGD with the DLR loss must not beat cross-entropy by more than half a point;
- incomplete optimisation: when the loss of unbroken samples is still rising over the last steps, twice
  the PGD steps must not break more than half a point more;
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
from robaudit.attacks.norms import float32_safe_eps
from robaudit.attacks.pgd import PGD
from robaudit.attacks.square import Square
from robaudit.audit.plan import Stage
from robaudit.audit.randomness import differs, output_spread
from robaudit.audit.verification import verify
from robaudit.errors import is_out_of_memory, one_line
from robaudit.models import ModelAdapter
from robaudit.report.eps import eps_text
from robaudit.results import Flag

PROBE_SAMPLES = 100
_STREAM = 1 << 21  # random starts of the gradient probe


def _noise_floor(n: int) -> float:
    """The smallest difference in robust accuracy a probe reports: half a point (Carlini et al.'s
    threshold) or two samples, whichever is larger, since a different random start alone moves a
    sample or two."""
    return max(0.005, 2.0 / n)


def _fooled(adapter: ModelAdapter, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return adapter.predict_logits(x_adv).argmax(1) != y


def probability_outputs(adapter: ModelAdapter) -> list[Flag]:
    """Outputs that are probabilities (non-negative rows summing to 1) but are attacked as logits:
    cross-entropy of a softmax over probabilities is nearly flat, which masks gradients."""
    if adapter.detected_output_kind != "probabilities" or adapter.output_kind == "probabilities":
        return []
    return [
        Flag(
            code="probability-outputs",
            message=(
                f"the model's outputs are non-negative and sum to 1 on the first batch, but are treated as "
                f"{adapter.output_kind}"
            ),
            advice="pass --output auto (or probabilities) so that attacks use their log; as logits the loss is nearly flat",
        )
    ]


def randomness(adapter: ModelAdapter, x: torch.Tensor) -> list[Flag]:
    spread, scale = output_spread(adapter, x, 5)
    if not differs(spread, scale):
        return []
    return [
        Flag(
            code="randomness",
            message=f"five passes over the same inputs gave logits differing by up to {spread:.3g}",
            advice=(
                "the model is random (dropout or noise left on, or a randomised defence); robaudit attacked it "
                "with expectation over transformation and took each prediction by majority (settings eot, "
                "eot_evals): raise --eot and --eot-evals for a tighter estimate, and report robust accuracy "
                "over several seeds"
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
    x_adv = PGD(steps=20, min_margin=adapter.capabilities.attack_margin)(
        adapter.logits, x, y, eps=1.0, norm="linf", seeds=seeds
    )
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
    against it (per-sample seeds make its outcome on any subset the same as on the whole).

    It runs without early stopping, which returns the same points up to float rounding (each sample
    keeps its first fooling iterate; see ``PGD.early_stop``) but lets every sample's whole trajectory
    be watched.
    """

    attack: PGD
    x_adv: torch.Tensor
    fooled: torch.Tensor
    losses: torch.Tensor  # (steps + 1, n): the loss at every iterate of the first restart
    lost: torch.Tensor  # per sample: a restart hit at some iterate but its last iterate does not fool


def run_pgd(
    adapter: ModelAdapter, attack: PGD, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage
) -> PgdRun:
    norm, eps = stage.threat.norm, stage.threat.eps
    n = len(y)
    losses = torch.full((attack.steps + 1, n), float("nan"), device=x.device)
    hit_in_restart = torch.zeros(n, dtype=torch.bool, device=x.device)
    lost = torch.zeros(n, dtype=torch.bool, device=x.device)

    def observe(restart: int, step: int, active: torch.Tensor, loss: torch.Tensor, hit: torch.Tensor) -> None:
        if restart == 0:
            losses[step, active] = loss.float()
        if step == 0:
            hit_in_restart[:] = False
        hit_in_restart[active[hit]] = True
        if step == attack.steps:
            lost[active[hit_in_restart[active] & ~hit]] = True

    x_adv = replace(attack, early_stop=False)(
        adapter.logits, x, y, eps=eps, norm=norm, seeds=seeds, observer=observe
    )
    verify(x_adv, x, eps, norm, attack.name)
    return PgdRun(attack, x_adv, _fooled(adapter, x_adv, y), losses, lost)


def fooled_by(
    adapter: ModelAdapter, attack: PGD, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage
) -> torch.Tensor:
    """Which samples a variant of the run's PGD fools, run with early stopping (no trajectory needed)."""
    norm, eps = stage.threat.norm, stage.threat.eps
    x_adv = attack(adapter.logits, x, y, eps=eps, norm=norm, seeds=seeds)
    verify(x_adv, x, eps, norm, attack.name)
    return _fooled(adapter, x_adv, y)


def silent_success(stage: Stage, pgd: PgdRun) -> list[Flag]:
    """Samples that PGD fooled at some iterate but not at its last (Pintor et al. 2022). robaudit keeps
    the best iterate, so its own figures count them; the flag says the step size overshoots, and that
    a tool returning the last iterate would call these samples robust."""
    lost = int(pgd.lost.sum())
    if lost == 0:
        return []
    norm, eps = stage.threat.norm, stage.threat.eps
    return [
        Flag(
            code="silent-success",
            message=(
                f"{norm} eps={eps_text(norm, eps)}: {lost} of {len(pgd.lost)} probed samples were adversarial at an earlier "
                f"{pgd.attack.name} iterate but not at its last (Pintor et al. 2022); robaudit kept the earlier "
                "iterate, so they count as fooled"
            ),
            advice=(
                "the step size overshoots, so the loss oscillates: lower --rel-step-size or raise --steps; an "
                "attack that returns its last iterate (art:* attacks, many libraries) misses such samples"
            ),
        )
    ]


RANDOM_DRAWS = 20
_RANDOM_STREAM = 1 << 22  # the random-search probe's draws


def random_search(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, norm: str, eps: float
) -> torch.Tensor:
    """Gradient-free baseline: ``RANDOM_DRAWS`` random points on the eps-sphere around each sample
    (corners of the box for L∞), which a working gradient attack should never lose to."""
    fooled = torch.zeros(len(y), dtype=torch.bool, device=x.device)
    width = x[0].numel()
    radius = float32_safe_eps(eps, norm, width)
    for draw in range(RANDOM_DRAWS):
        u = 2 * rng.uniform(seeds, _RANDOM_STREAM + draw, width).view_as(x) - 1
        if norm == "linf":
            delta = radius * u.sign()
        else:
            order = 2 if norm == "l2" else 1
            delta = radius * u / u.flatten(1).norm(p=order, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_rand = (x + delta).clamp(0, 1)
        verify(x_rand, x, eps, norm, "random search (probe)")
        fooled |= _fooled(adapter, x_rand, y)
    return fooled


SQUARE_QUERIES = 100  # the black-box probe's budget: 100 forward passes over at most 100 samples


def square_search(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, norm: str, eps: float
) -> torch.Tensor:
    """Which samples a short Square attack fools, querying the reference runtime (no gradients)."""
    x_adv = Square(queries=SQUARE_QUERIES)(adapter.predict_logits, x, y, eps=eps, norm=norm, seeds=seeds)
    verify(x_adv, x, eps, norm, "square (probe)")
    return _fooled(adapter, x_adv, y)


def weaker_attack_wins(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage, pgd: PgdRun
) -> list[Flag]:
    """FGSM, random search and (L∞, L2) a short Square attack against PGD, per sample, at the stage's
    threat model: PGD should break whatever they break (Athalye et al. 2018). Square is a different
    search, not a weaker one, so it may find a sample or two PGD missed on a sound model: it counts only
    beyond the noise floor (Carlini et al. 2019: a black-box attack beating white-box ones)."""
    norm, eps = stage.threat.norm, stage.threat.eps
    weaker = {
        "FGSM": _fooled(adapter, FGSM()(adapter.logits, x, y, eps=eps, norm=norm, seeds=seeds), y),
        f"random search ({RANDOM_DRAWS} draws)": random_search(adapter, x, y, seeds, norm, eps),
    }
    floors = dict.fromkeys(weaker, 0)
    if norm in Square.norms:
        square = f"Square ({SQUARE_QUERIES} queries, black box)"
        weaker[square] = square_search(adapter, x, y, seeds, norm, eps)
        floors[square] = int(_noise_floor(len(y)) * len(y))
    flags = []
    for name, fooled in weaker.items():
        missed = int((fooled & ~pgd.fooled).sum())
        if missed > floors[name]:
            flags.append(
                Flag(
                    code="weaker-attack-wins",
                    message=(
                        f"{norm} eps={eps_text(norm, eps)}: {name} fooled {missed} of {int(fooled.sum())} probed samples "
                        f"that {pgd.attack.name} did not (Athalye et al. 2018)"
                    ),
                    advice=(
                        "the iterative attack is stuck (masked or noisy gradients, too small a step): use more "
                        "--restarts or --loss dlr"
                    ),
                )
            )
    return flags


def loss_choice(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage, pgd: PgdRun
) -> list[Flag]:
    """PGD with cross-entropy vs the DLR loss (Croce & Hein 2020) at the stage's threat model."""
    if pgd.attack.loss != "ce" or adapter.num_classes < 3:
        return []
    norm, eps = stage.threat.norm, stage.threat.eps
    dlr = fooled_by(adapter, replace(pgd.attack, loss="dlr"), x, y, seeds, stage)
    robust = {"ce": float((~pgd.fooled).float().mean()), "dlr": float((~dlr).float().mean())}
    if robust["ce"] - robust["dlr"] <= _noise_floor(len(y)):
        return []
    return [
        Flag(
            code="loss-choice",
            message=(
                f"{norm} eps={eps_text(norm, eps)}: on {len(y)} probed samples PGD with the DLR loss leaves "
                f"{100 * robust['dlr']:.1f}% robust, cross-entropy {100 * robust['ce']:.1f}%"
            ),
            advice="cross-entropy is failing (often saturated or rescaled logits): add --loss dlr, or run the thorough profile",
        )
    ]


def still_rising(pgd: PgdRun) -> int:
    """Samples PGD left robust whose loss was still climbing: the best loss of the last fifth of the
    steps beats the best before it by more than 1% of the trajectory's range (Pintor et al. 2022)."""
    losses = pgd.losses
    window = max(1, -(-(losses.shape[0] - 1) // 5))
    early, late = losses[:-window].amax(0), losses[-window:].amax(0)
    spread = losses.amax(0) - losses.amin(0)
    rising = (late - early > 0.01 * spread) & ~pgd.fooled & torch.isfinite(spread)
    return int(rising.sum())


def incomplete_optimisation(
    adapter: ModelAdapter, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, stage: Stage, pgd: PgdRun
) -> list[Flag]:
    """When the loss of unbroken samples is still rising at the end, confirm with twice the steps on the
    same samples: if that breaks noticeably more, the run's PGD stopped before converging (Carlini et
    al. 2019). A flat loss needs no confirmation, which saves the doubled run."""
    rising = still_rising(pgd)
    if rising == 0:
        return []
    norm, eps = stage.threat.norm, stage.threat.eps
    steps = pgd.attack.steps
    doubled = fooled_by(adapter, replace(pgd.attack, steps=2 * steps), x, y, seeds, stage)
    robust = [float((~pgd.fooled).float().mean()), float((~doubled).float().mean())]
    if robust[0] - robust[1] <= _noise_floor(len(y)):
        return []
    return [
        Flag(
            code="incomplete-optimisation",
            message=(
                f"{norm} eps={eps_text(norm, eps)}: the loss was still rising for {rising} unbroken samples, and {2 * steps} PGD "
                f"steps leave {100 * robust[1]:.1f}% of {len(y)} probed samples robust, {steps} steps "
                f"{100 * robust[0]:.1f}%"
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
        f"8-bit check ({norm} eps={eps_text(norm, eps)}, {len(y)} probed samples): {n} adversarial examples from "
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

    flags += probability_outputs(adapter)
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
        attack = replace(
            next(a for a in stage.attacks if isinstance(a, PGD)),
            min_margin=adapter.capabilities.attack_margin,
        )
        base: list[PgdRun] = []

        def run_base() -> list[Flag]:
            base.append(run_pgd(adapter, attack, x, y, seeds, stage))
            return []

        attempt("pgd", run_base)
        if base:
            pgd = base[0]
            attempt("silent-success", lambda: silent_success(stage, pgd))
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
