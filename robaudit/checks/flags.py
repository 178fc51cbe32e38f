"""Reliability checks: signs that an evaluation overstates robustness, as typed flags.

Each check reads only the results object, or for ``pixel_attack_inside_ball`` the runner's per-sample
records (so they cost nothing to run), and returns flags that say what was seen and what to do.
``--strict`` turns any flag into exit code 4. Checks that need extra model queries (randomness,
gradient masking, an unbounded attack) are the probes, in ``robaudit.checks.probes``.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

from robaudit.audit.records import EXACT
from robaudit.report.eps import eps_text
from robaudit.results import WORST_CASE, AuditResult, Flag

if TYPE_CHECKING:  # the results-only checks stay free of torch
    import numpy as np

    from robaudit.audit.plan import Stage
    from robaudit.audit.records import SampleRecords


def clean_sanity(result: AuditResult) -> list[Flag]:
    """A model at or near chance level has nothing to lose to an attack: robust accuracy means little."""
    chance = 1.0 / max(result.model.num_classes, 1)
    if result.clean_accuracy > chance + 0.05:
        return []
    return [
        Flag(
            code="clean-sanity",
            message=(
                f"clean accuracy {100 * result.clean_accuracy:.1f}% is within 5 points of chance "
                f"({100 * chance:.1f}% for {result.model.num_classes} classes)"
            ),
            advice="check the labels, --input-range, --mean/--std and --layout before reading robust accuracy",
        )
    ]


def runtime_transfer(result: AuditResult) -> list[Flag]:
    """Adversarial examples found on the converted ONNX graph that ONNX Runtime does not confirm."""
    flags = []
    for row in result.rows:
        if row.attack == WORST_CASE or row.n_fooled_converted is None:
            continue
        confirmed = row.n_clean_correct - row.n_robust
        if row.n_fooled_converted != confirmed:
            flags.append(
                Flag(
                    code="runtime-transfer",
                    message=(
                        f"{row.attack} {row.norm} eps={eps_text(row.norm, row.eps)}: {row.n_fooled_converted} samples fooled on the "
                        f"converted graph, {confirmed} on ONNX Runtime"
                    ),
                    advice=(
                        "the PyTorch conversion and ONNX Runtime disagree near the decision boundary; the reported "
                        "figure is ONNX Runtime's, but attacks on the conversion may be weaker than on the real model"
                    ),
                )
            )
    return flags


def eps_monotonicity(result: AuditResult) -> list[Flag]:
    """Robust accuracy that rises with eps means the attack failed at the larger budget (Carlini et al.
    2019): every adversarial example at a small eps is one at a larger eps too."""
    flags = []
    keys = dict.fromkeys((r.attack, r.norm) for r in result.rows if r.attack != WORST_CASE and r.norm != "l0")
    for attack, norm in keys:
        rows = sorted((r for r in result.rows if (r.attack, r.norm) == (attack, norm)), key=lambda r: r.eps)
        for small, large in pairwise(rows):
            if large.n_robust > small.n_robust:
                flags.append(
                    Flag(
                        code="eps-monotonicity",
                        message=(
                            f"{attack} {norm}: robust accuracy rises from {100 * small.robust_accuracy:.1f}% at "
                            f"eps={eps_text(norm, small.eps)} to {100 * large.robust_accuracy:.1f}% at eps={eps_text(norm, large.eps)}"
                        ),
                        advice="the attack is failing at the larger budget: use more --steps or --restarts, or --loss dlr",
                    )
                )
    return flags


def attack_failed(result: AuditResult) -> list[Flag]:
    """An attack that crashed fooled nothing, so every figure that includes it is overstated."""
    return [
        Flag(
            code="attack-failed",
            message=f"{row.attack} {row.norm} eps={eps_text(row.norm, row.eps)} failed and was skipped ({row.error})",
            advice="robust accuracy counts none of its adversarial examples; fix the cause (--debug shows more) or drop the attack",
        )
        for row in result.rows
        if row.error is not None and row.attack != WORST_CASE
    ]


TRANSFER_PREFIX = "transfer:"  # audit.surrogate's row names; not imported, to keep this module free of torch


def transfer_beats_white_box(result: AuditResult) -> list[Flag]:
    """Examples made on a surrogate (``--surrogate``) that fool samples every white-box attack missed:
    the model's own gradients mislead its attacks (masked gradients; Athalye et al. 2018, Carlini et al.
    2019). The cascade runs the transfer rows after every white-box gradient attack of their stage, so a
    transfer row's newly fooled samples are exactly those."""
    flags = []
    for norm, eps in dict.fromkeys((r.norm, r.eps) for r in result.rows):
        stage = [r for r in result.rows if (r.norm, r.eps) == (norm, eps) and r.attack != WORST_CASE]
        first = next((i for i, r in enumerate(stage) if r.attack.startswith(TRANSFER_PREFIX)), None)
        if first is None:
            continue
        white = [r.attack for r in stage[:first] if r.error is None]
        transfer = [r for r in stage[first:] if r.attack.startswith(TRANSFER_PREFIX)]
        beaten = sum(r.n_fooled_by_attack or 0 for r in transfer)
        if not white or not beaten:
            continue  # nothing white-box ran to compare with (a model without gradients), or nothing won
        flags.append(
            Flag(
                code="transfer-beats-white-box",
                message=(
                    f"{norm} eps={eps_text(norm, eps)}: examples made on the surrogate "
                    f"({', '.join(r.attack for r in transfer)}) fooled {beaten} samples that every white-box "
                    f"attack ({', '.join(white)}) missed (Athalye et al. 2018)"
                ),
                advice=(
                    "the model's gradients mislead its attacks (masked or saturated outputs?): white-box robust "
                    "accuracy is overstated; the worst case counts the transfer rows, keep --surrogate and add "
                    "gradient-free attacks (square)"
                ),
            )
        )
    return flags


CHECKS = (clean_sanity, runtime_transfer, eps_monotonicity, attack_failed, transfer_beats_white_box)


def reliability_flags(result: AuditResult) -> list[Flag]:
    return [flag for check in CHECKS for flag in check(result)]


def pixel_attack_inside_ball(
    records: SampleRecords, stages: list[Stage], worst: dict[tuple[str, float], np.ndarray]
) -> list[Flag]:
    """A few-pixel adversarial example is a point like any other: when its L∞ or L2 size fits inside a
    gradient stage's ball and that stage's attacks left the sample robust, the weaker, gradient-free
    attack has won (Athalye et al. 2018), and the stage's robust accuracy is overstated."""
    clean_correct = records.clean_pred == records.labels
    flags = []
    for pixel_stage in (st for st in stages if st.threat.norm == "l0"):
        last = pixel_stage.attacks[-1].name
        rec = records.adversarial[(last, "l0", pixel_stage.threat.eps)]
        found = clean_correct & (rec.pred != records.labels)
        steps = [a.name for a in pixel_stage.attacks]
        exact = records.adversarial.get((EXACT, "l0", pixel_stage.threat.eps))  # the sweep's examples
        if exact is not None and bool((clean_correct & (exact.pred != records.labels) & ~found).any()):
            rec, found, steps = exact, clean_correct & (exact.pred != records.labels), [*steps, EXACT]
        names = ", ".join(steps)
        for stage in stages:
            norm, eps = stage.threat.norm, stage.threat.eps
            if norm not in ("linf", "l2"):
                continue  # L1 sizes are not recorded, and l0 is the pixel stage's own threat model
            size = rec.linf if norm == "linf" else rec.l2
            missed = int((found & (size <= eps + 1e-6) & ~worst[(norm, eps)]).sum())
            if missed:
                flags.append(
                    Flag(
                        code="weaker-attack-wins",
                        message=(
                            f"{norm} eps={eps_text(norm, eps)}: {names} ({pixel_stage.threat.describe()}) fooled {missed} samples "
                            f"with a change inside this ball that {', '.join(a.name for a in stage.attacks)} left "
                            "robust (Athalye et al. 2018)"
                        ),
                        advice=(
                            "robust accuracy at this budget is overstated by at least these samples: the gradient "
                            "attacks are failing (masked gradients?); use more --restarts or --loss dlr"
                        ),
                    )
                )
    return flags


def l1_box_binds(records: SampleRecords, stages: list[Stage], channels: int) -> list[str]:
    """Notes for the L1 attacks that the [0, 1] box, not eps, held back.

    An L1 budget larger than the mass the box lets the attack move (pixels already at the bound they are
    pushed to cannot move) is never spent: raising eps then changes nothing. L1 sizes are not recorded,
    but C * l0 coordinates moved with the recorded L2 and L∞ sizes bound the L1 norm from above
    (Cauchy-Schwarz: ||d||_1 <= sqrt(m) ||d||_2, and ||d||_1 <= m ||d||_inf for m moved coordinates). A
    note when, for most of the samples an attack left robust, that bound is under half of eps.
    """
    clean_correct = records.clean_pred == records.labels
    notes = []
    for stage in (st for st in stages if st.threat.norm == "l1"):
        eps = stage.threat.eps
        for attack in stage.attacks:
            rec = records.adversarial.get((attack.name, "l1", eps))
            if rec is None:
                continue
            robust = clean_correct & (rec.pred == records.labels) & (rec.l0 > 0)
            moved = channels * rec.l0
            bound = (moved**0.5 * rec.l2).clip(max=moved * rec.linf)
            low = robust & (bound < 0.5 * eps)
            if not low.any() or 2 * int(low.sum()) <= int(robust.sum()):
                continue
            notes.append(
                f"l1 eps={eps_text('l1', eps)}: for {int(low.sum())} of the {int(robust.sum())} samples {attack.name} "
                f"left robust, its perturbation's L1 norm is at most {float(bound[low].max()):.3g}, under half of "
                "eps: the [0, 1] box, not eps, bounded the attack (the pixels it moves saturate), so a larger "
                "eps would not change them"
            )
    return notes
