"""The attack interface (Foolbox 3 / torchattacks style, without holding the model).

An attack proposes; the runner verifies. Attacks take images on the [0, 1] scale, NCHW, already on
the device, and return candidates of the same shape. They never call numpy inside their loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


class Attack(Protocol):
    """``name`` labels result rows; ``needs_gradients`` says whether the attack needs a differentiable
    model (else the runner hands it the reference runtime, e.g. ONNX Runtime, with no conversion);
    ``norms`` lists the threat models it attacks. Its place in the cascade is the registry's
    ``cost_rank`` (an attack object the registry does not know, a test's, may carry its own)."""

    @property
    def name(self) -> str: ...

    @property
    def needs_gradients(self) -> bool: ...

    @property
    def norms(self) -> tuple[str, ...]:
        """The threat models it attacks: linf/l2/l1 eps-balls, or l0 (changed pixel locations)."""
        ...

    def __call__(
        self,
        model: LogitsFn,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str,
        seeds: torch.Tensor,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return x_adv with ``||x_adv - x||_norm <= eps`` and ``0 <= x_adv <= 1``.

        ``seeds`` holds one int64 seed per sample (from the run seed and the sample's index), so
        random choices do not depend on batch size, order or sharding. ``targets``, when given,
        makes the attack targeted: it seeks x_adv classified as ``targets`` instead of any wrong class.
        """
        ...


def input_gradient(
    model: LogitsFn,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None = None,
    samples: int = 1,
) -> torch.Tensor:
    """Gradient of the attack objective w.r.t. x, with torch.autograd.grad (weights untouched).

    Untargeted: ascend the cross-entropy of the true class. Targeted: ascend minus the cross-entropy
    of the target. Summing (not averaging) keeps each sample's gradient independent of its batch.
    ``samples`` > 1 averages that many gradients (EOT, see ``loss_and_grad``).
    """

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        if targets is None:
            return torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return -torch.nn.functional.cross_entropy(logits, targets, reduction="none")

    return loss_and_grad(model, x, loss_fn, samples)[2]


def loss_and_grad(
    model: LogitsFn,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    samples: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, per-sample loss (N,) and the loss's gradient w.r.t. x, all detached.

    ``loss_fn(logits)`` gives the per-sample loss. The backward pass runs on its sum (not its mean), so
    each sample's gradient does not depend on the batch it is in. With ``samples`` > 1 the three are
    averaged over that many forward/backward passes: expectation over transformation (Athalye et al.
    2018) for a model that draws random numbers in its forward pass; for a deterministic model every
    pass is the same and one is enough.
    """
    x = x.detach()
    n = max(1, samples)
    totals: list[torch.Tensor] = []
    for _ in range(n):
        xr = x.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            loss = loss_fn(logits)
            (grad,) = torch.autograd.grad(loss.sum(), xr)
        parts = [logits.detach(), loss.detach(), grad]
        totals = parts if not totals else [t + p for t, p in zip(totals, parts, strict=True)]
    if n > 1:
        totals = [t / n for t in totals]
    return totals[0], totals[1], totals[2]


def succeeded(
    logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, margin: float = 0.0
) -> torch.Tensor:
    """Per-sample success: any wrong class (untargeted) or the target class (targeted), ahead of every
    class it must beat by more than ``margin`` (0: the top class decides)."""
    if margin == 0.0:
        top = logits.argmax(1)
        return top != y if targets is None else top == targets
    if targets is None:  # some other class above the true one by more than the margin
        others = logits.scatter(1, y[:, None], float("-inf"))
        return others.amax(1) > logits.gather(1, y[:, None])[:, 0] + margin
    others = logits.scatter(1, targets[:, None], float("-inf"))
    return logits.gather(1, targets[:, None])[:, 0] > others.amax(1) + margin
