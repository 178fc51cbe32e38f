"""The runner's check of every candidate an attack returns: the attack proposes, the runner verifies.

A candidate outside the threat model is a bug in the attack, never a success: it is refused with an
explicit raise, by the audit's shards, the radius bisection and the reliability probes alike. Every
prediction the audit records comes from the reference runtime; for a random model it is the majority
of several passes (``majority_predict``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robaudit.attacks.norms import lp_norm
from robaudit.errors import VerificationError

NORM_TOLERANCE = 1e-6  # float32 rounding in x + delta


def verify(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, attack: str) -> None:
    """Raise if a candidate leaves the threat model: a bug in the attack, never a success."""
    if x_adv.shape != x.shape:
        raise VerificationError(
            f"attack {attack} returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x_adv).all()):
        raise VerificationError(f"attack {attack} returned NaN or Inf pixels")
    if bool((x_adv < 0).any()) or bool((x_adv > 1).any()):
        raise VerificationError(f"attack {attack} left the [0, 1] input bounds")
    worst = float(lp_norm(x_adv.double() - x.double(), norm).max()) if x.shape[0] else 0.0
    if worst > eps + NORM_TOLERANCE:
        raise VerificationError(f"attack {attack} exceeded eps: ||delta||_{norm} = {worst:.8g} > {eps:.8g}")


def majority_predict(
    predict: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    evals: int,
    *,
    clean: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recorded prediction of ``x``: (predicted class, its confidence, mean logits) over ``evals``
    passes of ``predict`` (the reference runtime). One pass: its top class, as for any deterministic model.

    For a random model the majority decides (Athalye et al. 2018's evaluation of randomised defences):
    a clean sample is correct when more than half of the passes classify it as ``y``; an adversarial one
    is fooled when more than half misclassify it (``clean=False``). At an exact tie (an even ``evals``)
    neither holds: the clean sample counts as wrong, the adversarial one as not fooled. The recorded
    class is ``y`` when the sample counts as correct (or not fooled), else the wrong class most passes
    chose; its confidence is that class's softmax probability averaged over the passes.
    """
    if evals <= 1:
        logits = predict(x).float()
        conf, pred = torch.softmax(logits, dim=1).max(1)
        return pred, conf, logits
    total_logits: torch.Tensor | None = None
    total_probs: torch.Tensor | None = None
    votes: torch.Tensor | None = None
    for _ in range(evals):
        logits = predict(x).float()
        probs = torch.softmax(logits, dim=1)
        one_hot = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(torch.int64)
        total_logits = logits if total_logits is None else total_logits + logits
        total_probs = probs if total_probs is None else total_probs + probs
        votes = one_hot if votes is None else votes + one_hot
    assert total_logits is not None and total_probs is not None and votes is not None
    right = votes.gather(1, y[:, None])[:, 0]
    keeps_label = 2 * right > evals if clean else 2 * (evals - right) <= evals
    wrong_votes = votes.scatter(1, y[:, None], -1)
    pred = torch.where(keeps_label, y, wrong_votes.argmax(1))
    conf = total_probs.gather(1, pred[:, None])[:, 0] / evals
    return pred, conf, total_logits / evals
