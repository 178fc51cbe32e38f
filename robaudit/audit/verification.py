"""The runner's check of every candidate an attack returns: the attack proposes, the runner verifies.

A candidate outside the threat model is a bug in the attack, never a success: it is refused with an
explicit raise, by the audit's shards, the radius bisection and the reliability probes alike.
"""

from __future__ import annotations

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
