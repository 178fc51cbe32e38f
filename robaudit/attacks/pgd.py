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

from robaudit.attacks import l1box
from robaudit.attacks.base import LogitsFn, loss_and_grad, succeeded
from robaudit.attacks.norms import (
    ascent_direction,
    clip_to_bounds,
    float32_safe_eps,
    per_sample,
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


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Two classes: the other logit minus the true one. It is DLR's numerator; DLR divides it by the gap
    between the largest and the third largest logit, which two classes do not have. Like DLR it does
    not saturate as cross-entropy does on a confident model, whose gradient underflows to zero."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    return logits.gather(1, (1 - y)[:, None])[:, 0] - z_y


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
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")

    steps: int = 40
    rel_step_size: float = 2.5  # step = rel_step_size * eps / steps (Madry et al.)
    restarts: int = 1
    loss: Literal["ce", "dlr"] = "ce"
    random_init: bool = True
    l1_sparsity: float = 0.05  # fraction of coordinates an L1 step moves
    # Drop fooled samples from the working batch. The returned points are the same either way (each
    # sample keeps its first fooling iterate) up to float rounding: a convolution's backward pass can
    # round a sample's gradient differently with the batch's size (1 ulp in L2 seen on the CPU; L∞'s
    # sign hides it). The probes turn it off to watch whole trajectories.
    early_stop: bool = True
    # Read the fooled flags one step late (see HostFlags); None: on a GPU only. Tests set it on the CPU.
    lagged: bool | None = None
    # A sample counts as fooled only when a wrong class leads by more than this. 0 for a model that is
    # the model audited; for a surrogate (a quantized graph's float twin) the runner sets twice their
    # largest logit difference, so that a point which fools the surrogate fools the real model too.
    min_margin: float = 0.0
    eot: int = 0  # gradient samples averaged per step (EOT, for random models); 0 and 1: one

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
        if self.loss == "dlr" and k == 2:
            return margin_loss(logits, y)
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")

    def _loss_and_grad(
        self, model: LogitsFn, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return loss_and_grad(model, x, lambda z: self.losses(z, y, t), samples=self.eot)

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
        run = _Run(
            model=model,
            x=x,
            y=y,
            targets=targets,
            norm=norm,
            alpha=self.rel_step_size * eps / self.steps,
            radius=float32_safe_eps(eps, norm, x[0].numel()),
            seeds=[int(s) for s in seeds.cpu()],
            # On a GPU the loop never waits for the step it has just queued (see HostFlags).
            lagged=self.lagged if self.lagged is not None else x.device.type == "cuda",
            observer=observer,
            best=x.clone(),
            fooled=torch.zeros(x.shape[0], dtype=torch.bool, device=x.device),
        )
        for restart in range(self.restarts):
            active = torch.nonzero(~run.fooled).flatten()
            if active.numel() == 0:
                break
            self._restart(run, restart, active)
        return run.best.detach()

    def _restart(self, run: _Run, restart: int, active: torch.Tensor) -> None:
        """One restart's iterations over the samples at positions ``active`` (those not yet fooled)."""
        batch = self._start(run, restart, active)
        flags = HostFlags(run.lagged)
        # The last restart returns its final iterate whether or not it fools the model (the runner
        # checks it on the reference model), so that iterate needs a check only when someone watches
        # the steps, or when a further restart must know which samples are left: one forward pass
        # less per batch, about 1% of PGD-40.
        check_last = run.observer is not None or restart < self.restarts - 1
        loss: torch.Tensor | None
        for step in range(self.steps + 1):
            if step < self.steps:
                logits, loss, grad = self._loss_and_grad(run.model, batch.x_adv, batch.y, batch.t)
            elif not check_last:
                break
            else:  # the last iterate is only checked: a forward pass, no gradient
                with torch.no_grad():
                    logits = run.model(batch.x_adv)
                loss = None
                grad = torch.zeros_like(batch.x_adv)
            self._record(run, batch, restart, step, logits, loss)
            if step == self.steps:
                break
            if self.early_stop:  # fooled samples leave the working batch
                grad = batch.drop_fooled(flags, run.fooled, grad)
                if batch.active.numel() == 0:
                    break
                flags.send(run.fooled[batch.active])
            batch.x_adv = self._step(run, batch, grad)
        if restart == self.restarts - 1:  # return the last iterate of the last restart
            unbroken = ~run.fooled[batch.active]
            run.best[batch.active] = torch.where(
                per_sample(unbroken, batch.x_adv), batch.x_adv, run.best[batch.active]
            )

    def _start(self, run: _Run, restart: int, active: torch.Tensor) -> _Batch:
        """The working batch of a restart: the samples at ``active``, at a random point of the ball (a
        seed per sample and restart, so the draw does not depend on the batch) or at the clean input."""
        xa, ya = run.x[active], run.y[active]
        ta = run.targets[active] if run.targets is not None else None
        if self.random_init:
            start = random_start(
                tuple(xa.shape),
                run.radius,
                run.norm,
                [
                    (run.seeds[i] ^ (restart * 0x9E3779B97F4A7C15)) & 0x7FFFFFFFFFFFFFFF
                    for i in active.tolist()
                ],
                run.x.device,
            )
            x_adv = clip_to_bounds(xa + start)
        else:
            x_adv = xa.clone()
        return _Batch(active=active, x=xa, y=ya, t=ta, x_adv=x_adv)

    def _record(
        self,
        run: _Run,
        batch: _Batch,
        restart: int,
        step: int,
        logits: torch.Tensor,
        loss: torch.Tensor | None,
    ) -> None:
        """Check the iterate whose logits are given, tell the observer, and keep first fooling points."""
        active = batch.active
        hit = succeeded(logits, batch.y, batch.t, self.min_margin)
        if run.observer is not None:
            run.observer(
                restart, step, active, self.losses(logits, batch.y, batch.t) if loss is None else loss, hit
            )
        # Keep each sample's first fooling iterate (the best, not the last). Lagged, a fooled
        # sample stays in the working batch one step longer, so a hit may not be its first.
        first = hit & ~run.fooled[active]
        if run.lagged:  # record on the device, without asking whether anything was hit (that waits)
            run.best[active] = torch.where(per_sample(first, batch.x_adv), batch.x_adv, run.best[active])
            run.fooled[active] = run.fooled[active] | first
        elif bool(first.any()):  # touch only the rows hit (the CPU: asking costs nothing)
            run.best[active[first]] = batch.x_adv[first]
            run.fooled[active[first]] = True

    def _step(self, run: _Run, batch: _Batch, grad: torch.Tensor) -> torch.Tensor:
        """One ascent step of size alpha from the current iterate, projected back onto the eps-ball
        around the clean input and into [0, 1]. L1 moves only the top coordinates that can still move
        (sparse_l1_direction) and projects onto the ball and the box together (``l1box.project``): the
        ball's projection followed by a clip wastes the mass the clip removes."""
        if run.norm == "l1":
            direction = sparse_l1_direction(grad, batch.x_adv, self.l1_sparsity)
            delta = batch.x_adv + run.alpha * direction - batch.x
            return clip_to_bounds(batch.x + l1box.project(delta, batch.x, run.radius)).detach()
        direction = ascent_direction(grad, run.norm)
        delta = batch.x_adv + run.alpha * direction - batch.x
        return clip_to_bounds(batch.x + project(delta, run.radius, run.norm)).detach()


@dataclass(frozen=True)
class _Run:
    """One PGD call: its inputs, and the results its restarts fill in place. ``best`` (N, C, H, W) holds
    each sample's first fooling iterate (else its latest), ``fooled`` (N,) whether it has one."""

    model: LogitsFn
    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor | None
    norm: str
    alpha: float  # the step size
    radius: float  # eps, shrunk so that float32 rounding keeps points inside the ball
    seeds: list[int]  # one per sample
    lagged: bool
    observer: StepObserver | None
    best: torch.Tensor
    fooled: torch.Tensor


@dataclass
class _Batch:
    """A restart's working batch: ``active`` holds the positions of its rows in the call's batch; ``x``,
    ``y`` and ``t`` are their clean inputs, labels and targets; ``x_adv`` their current iterates."""

    active: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor | None
    x_adv: torch.Tensor

    def drop_fooled(self, flags: HostFlags, fooled: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Drop the rows the host knows are fooled (lagged: as of a step ago); returns ``grad``'s rows kept."""
        done = flags.read(fooled[self.active])
        if done is not None and bool(done.any()):  # a host tensor: no wait
            keep = _on_device(torch.nonzero(~done).flatten(), self.x.device)
            self.active, self.x, self.y, self.x_adv = (
                self.active[keep],
                self.x[keep],
                self.y[keep],
                self.x_adv[keep],
            )
            self.t = self.t[keep] if self.t is not None else None
            grad = grad[keep]
        return grad


def _on_device(index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host index tensor on the device, without waiting for the device's queued work."""
    if device.type != "cuda":
        return index.to(device)
    return index.pin_memory().to(device, non_blocking=True)


class HostFlags:
    """Per-sample "fooled" flags of PGD's working batch, as the host may read them.

    Dropping fooled samples from the working batch needs their flags on the host. Read at once, they
    make a GPU run wait for the step just queued: the GPU then idles while the host queues the next
    step's kernels, which on small and mid-sized models costs a large part of each step. Lagged, the
    flags are copied to pinned host memory without waiting and read one step later, when the GPU has
    long finished that copy: a fooled sample takes one more step before it leaves, and nothing waits.
    The points returned are the same either way (each sample's trajectory does not depend on its batch,
    beyond the float rounding of kernels whose summation order follows the batch's size).
    """

    def __init__(self, lagged: bool) -> None:
        self.lagged = lagged
        self._sent: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def read(self, fooled: torch.Tensor) -> torch.Tensor | None:
        """Flags to drop rows by, on the host: this step's unlagged, else those sent a step ago (if any)."""
        if not self.lagged:
            return fooled.cpu()
        if self._copied is not None:
            self._copied.synchronize()  # the copy was queued a whole step ago: done, or nearly
        sent, self._sent, self._copied = self._sent, None, None
        return sent

    def send(self, fooled: torch.Tensor) -> None:
        """This step's flags for the rows that stayed, to be read next step (lagged only)."""
        if not self.lagged:
            return
        if fooled.device.type != "cuda":
            self._sent = fooled.cpu()
            return
        host = torch.empty(fooled.shape, dtype=fooled.dtype, pin_memory=True)
        host.copy_(fooled, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        self._sent = host
