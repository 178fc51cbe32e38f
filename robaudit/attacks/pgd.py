"""PGD (Madry et al. 2018) in L∞, L2 and L1, with random start, restarts and CE or DLR loss.

Threat model: white box, untargeted or targeted; x on [0, 1], shape (N, C, H, W). Each sample keeps the first
iterate that fooled the model (the best iterate, not the last), and samples already fooled leave the
working batch so they stop costing compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from robaudit.attacks.base import LogitsFn, succeeded
from robaudit.attacks.norms import (
    ascent_direction,
    clip_to_bounds,
    float32_safe_eps,
    project,
    random_start,
    sparse_l1_direction,
)

# Called after every iterate's forward pass with (restart, step, positions in the batch, per-sample loss,
# per-sample success); the reliability probes use it to see the loss curve and lost successes.
StepObserver = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), per sample: shift- and scale-invariant."""
    sorted_logits, _ = logits.sort(1, descending=True)
    z_y = logits.gather(1, y[:, None])[:, 0]
    top = sorted_logits[:, 0]
    second = sorted_logits[:, 1]
    z_other = torch.where(top == z_y, second, top)
    return -(z_y - z_other) / (sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2); needs 4 classes."""
    sorted_logits, _ = logits.sort(1, descending=True)
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, targets[:, None])[:, 0]
    scale = sorted_logits[:, 0] - 0.5 * (sorted_logits[:, 2] + sorted_logits[:, 3])
    return -(z_y - z_t) / (scale + 1e-12)


@dataclass(frozen=True)
class PGD:
    needs_gradients: ClassVar[bool] = True
    cost_rank: ClassVar[int] = 1
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")

    steps: int = 40
    rel_step_size: float = 2.5  # step = rel_step_size * eps / steps (Madry et al.)
    restarts: int = 1
    loss: Literal["ce", "dlr"] = "ce"
    random_init: bool = True
    l1_sparsity: float = 0.05  # fraction of coordinates an L1 step moves
    # Drop fooled samples from the working batch. The returned points are the same either way (each
    # sample keeps its first fooling iterate); the probes turn it off to watch whole trajectories.
    early_stop: bool = True

    @property
    def name(self) -> str:
        """``pgd``, or ``pgd-dlr`` with the DLR loss, so both can run in one cascade (Croce & Hein 2020)."""
        return "pgd" if self.loss == "ce" else f"pgd-{self.loss}"

    def losses(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """The per-sample loss PGD ascends."""
        k = logits.shape[1]
        if t is not None and self.loss == "dlr" and k >= 4:
            return targeted_dlr_loss(logits, y, t)
        if t is not None:
            return -torch.nn.functional.cross_entropy(logits, t, reduction="none")
        if self.loss == "dlr" and k >= 3:
            return dlr_loss(logits, y)
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")

    def _loss_and_grad(
        self, model: LogitsFn, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            loss = self.losses(logits, y, t)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return logits.detach(), loss.detach(), grad

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
        observer: StepObserver | None = None,
    ) -> torch.Tensor:
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        alpha = self.rel_step_size * eps / self.steps
        radius = float32_safe_eps(eps, norm, x[0].numel())
        best = x.clone()
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        seed_list = [int(s) for s in seeds.cpu()]
        loss: torch.Tensor | None
        for restart in range(self.restarts):
            active = torch.nonzero(~fooled).flatten()
            if active.numel() == 0:
                break
            xa, ya = x[active], y[active]
            ta = targets[active] if targets is not None else None
            if self.random_init:
                start = random_start(
                    tuple(xa.shape),
                    radius,
                    norm,
                    [
                        (seed_list[i] ^ (restart * 0x9E3779B97F4A7C15)) & 0x7FFFFFFFFFFFFFFF
                        for i in active.tolist()
                    ],
                    x.device,
                )
                x_adv = clip_to_bounds(xa + start)
            else:
                x_adv = xa.clone()
            # The last restart returns its final iterate whether or not it fools the model (the runner
            # checks it on the reference model), so that iterate needs a check only when someone watches
            # the steps, or when a further restart must know which samples are left: one forward pass
            # less per batch, about 1% of PGD-40.
            check_last = observer is not None or restart < self.restarts - 1
            for step in range(self.steps + 1):
                if step < self.steps:
                    logits, loss, grad = self._loss_and_grad(model, x_adv, ya, ta)
                elif not check_last:
                    break
                else:  # the last iterate is only checked: a forward pass, no gradient
                    with torch.no_grad():
                        logits = model(x_adv)
                    loss = None
                    grad = torch.zeros_like(x_adv)
                hit = succeeded(logits, ya, ta)
                if observer is not None:
                    observer(
                        restart, step, active, self.losses(logits, ya, ta) if loss is None else loss, hit
                    )
                # With early stopping every sample in the batch is unbroken, so every hit is its first.
                first = hit if self.early_stop else hit & ~fooled[active]
                any_first = bool(first.any())  # one host sync per step: a GPU idles while we wait
                if any_first:
                    # Keep the first fooling iterate (the best, not the last).
                    best[active[first]] = x_adv[first]
                    fooled[active[first]] = True
                if self.early_stop and any_first:  # first is hit here
                    keep = ~hit  # fooled samples leave the working batch
                    active, xa, ya, x_adv, grad = active[keep], xa[keep], ya[keep], x_adv[keep], grad[keep]
                    ta = ta[keep] if ta is not None else None
                if active.numel() == 0 or step == self.steps:
                    break
                if norm == "l1":
                    direction = sparse_l1_direction(grad, x_adv, self.l1_sparsity)
                else:
                    direction = ascent_direction(grad, norm)
                x_adv = clip_to_bounds(xa + project(x_adv + alpha * direction - xa, radius, norm)).detach()
            unbroken = ~fooled[active]
            if restart == self.restarts - 1 and bool(unbroken.any()):
                best[active[unbroken]] = x_adv[unbroken]  # return the last iterate of the last restart
        return best.detach()
