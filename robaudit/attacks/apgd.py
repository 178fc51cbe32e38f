"""APGD (Croce & Hein 2020) in L∞, L2 and L1, and its targeted-DLR variant APGD-T.

Threat model: white box, untargeted (or targeted when the runner gives targets); x on [0, 1], shape
(N, C, H, W). APGD is PGD without a step size to tune: it starts at 2 eps (L1: eps) and halves the step
at checkpoints where the loss stopped rising, restarting from the best point found so far; a momentum
term (0.75) smooths the path. Under L1 it follows "Mind the box" (Croce & Hein 2021): a sparse step over
the coordinates that can still move, its sparsity adapted to the best point's, and the exact projection
onto the intersection of the L1 ball and the [0, 1] box.

APGD-T runs targeted DLR against each of the k most likely other classes in turn (AutoAttack's k = 9),
each with its own budget, on the samples no earlier target broke. Success is any wrong class.

Every random choice comes from per-sample seeds; fooled samples leave the working batch; everything
stays on the tensor's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from robaudit.attacks import l1box
from robaudit.attacks.base import LogitsFn, loss_and_grad, succeeded
from robaudit.attacks.norms import (
    ascent_direction,
    clip_to_bounds,
    flat,
    float32_safe_eps,
    per_sample,
    project,
    random_start,
)
from robaudit.attacks.pgd import dlr_loss, margin_loss, targeted_dlr_loss

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
_GOLDEN = 0x9E3779B97F4A7C15
_MASK63 = 0x7FFFFFFFFFFFFFFF


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: w_j = ceil(p_j steps), with p_0 = 0, p_1 = 0.22
    and p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, section 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p[1:] if 0 < math.ceil(q * steps) < steps})


def mix_seed(seed: int, salt: int) -> int:
    """A sample's seed for one restart (or one target): distinct streams, still per sample."""
    return (seed ^ (salt * _GOLDEN)) & _MASK63


@dataclass
class _State:
    """The working batch of one APGD run: one row per sample still being attacked."""

    pos: torch.Tensor  # rows' positions in the call's batch
    x: torch.Tensor
    y: torch.Tensor
    t: torch.Tensor | None  # the loss's target (APGD-T, or a targeted run)
    t_hit: torch.Tensor | None  # the class success is measured against (None: any wrong class)
    cur: torch.Tensor  # current iterate
    prev: torch.Tensor  # previous iterate (the momentum term)
    grad: torch.Tensor
    loss: torch.Tensor
    eta: torch.Tensor  # per-sample step size
    top: torch.Tensor  # loss-best point, its loss and its gradient
    top_loss: torch.Tensor
    top_grad: torch.Tensor
    rises: torch.Tensor  # iterations since the last checkpoint whose loss rose
    eta_then: torch.Tensor  # step size and best loss at the last checkpoint
    top_then: torch.Tensor
    fraction: torch.Tensor  # L1: the share of coordinates a step moves

    def keep(self, rows: torch.Tensor) -> None:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value[rows])


@dataclass
class _Outcome:
    """Per sample of the call: the point to return (first fooling iterate, else the loss-best one)."""

    best: torch.Tensor
    fooled: torch.Tensor


@dataclass(frozen=True)
class APGD:
    needs_gradients: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")

    steps: int = 100
    restarts: int = 1
    loss: Literal["ce", "dlr"] = "ce"
    rho: float = 0.75  # a checkpoint halves the step when under this share of its iterations improved
    momentum: float = 0.75
    eot: int = 0  # gradient samples averaged per step (EOT); 0 and 1: one
    early_stop: bool = True  # fooled samples leave the working batch
    min_margin: float = 0.0  # see PGD.min_margin

    @property
    def name(self) -> str:
        return f"apgd-{self.loss}"

    def losses(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """The per-sample loss APGD ascends (DLR falls back to the margin with 2 classes)."""
        return objective(self.loss, logits, y, t)

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
        out = _Outcome(x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))
        if eps == 0 or x.shape[0] == 0:
            return out.best
        seed_list = [int(s) for s in seeds.cpu()]
        for restart in range(self.restarts):
            active = torch.nonzero(~out.fooled).flatten()
            if active.numel() == 0:
                break
            run_seeds = [mix_seed(seed_list[i], restart) for i in active.tolist()]
            t = targets[active] if targets is not None else None
            search(self, model, x, y, active, t, t, eps, norm, run_seeds, out)
        return out.best.detach()


def objective(kind: str, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """CE or DLR, untargeted or towards ``t``; DLR needs 3 classes (4 targeted) and falls back."""
    k = logits.shape[1]
    if t is not None and kind == "dlr" and k >= 4:
        return targeted_dlr_loss(logits, y, t)
    if t is not None and kind == "dlr":
        return logits.gather(1, t[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]
    if t is not None:
        return -torch.nn.functional.cross_entropy(logits, t, reduction="none")
    if kind == "dlr" and k >= 3:
        return dlr_loss(logits, y)
    if kind == "dlr" and k == 2:
        return margin_loss(logits, y)
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


def search(
    attack: APGD,
    model: LogitsFn,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    active: torch.Tensor,
    t_loss: torch.Tensor | None,
    t_hit: torch.Tensor | None,
    eps: float,
    norm: str,
    seeds: list[int],
    out: _Outcome,
) -> None:
    """One APGD run of ``attack.steps`` iterations on the samples at ``active``, writing first fooling
    points (and, for the rest, loss-best points) into ``out``. ``t_loss`` is the loss's target, ``t_hit``
    the target success is measured against (None: any wrong class)."""
    radius = float32_safe_eps(eps, norm, x_all[0].numel())
    x, y = x_all[active], y_all[active]
    st, logits = _start(attack, model, x, y, (t_loss, t_hit), radius, norm, seeds, active)
    _record(out, st, succeeded(logits, y, t_hit, attack.min_margin))
    marks = set(checkpoints(attack.steps))
    last = 0
    for k in range(attack.steps):
        if st.pos.numel() == 0:
            break
        st.cur, st.prev = _next(attack, st, radius, norm, first=k == 0), st.cur
        logits, loss, grad = _evaluate(attack, model, st)
        hit = succeeded(logits, st.y, st.t_hit, attack.min_margin)
        _record(out, st, hit)
        st.rises += (loss > st.loss).to(st.rises.dtype)
        better = loss > st.top_loss
        st.top = torch.where(per_sample(better, st.cur), st.cur, st.top)
        st.top_grad = torch.where(per_sample(better, grad), grad, st.top_grad)
        st.top_loss = torch.where(better, loss, st.top_loss)
        st.loss, st.grad = loss, grad
        if k + 1 in marks:
            _checkpoint(st, attack, k + 1 - last, norm, radius)
            last = k + 1
        if attack.early_stop and bool(hit.any()):
            st.keep(torch.nonzero(~hit).flatten())
    unbroken = ~out.fooled[st.pos]
    out.best[st.pos] = torch.where(per_sample(unbroken, st.top), st.top, out.best[st.pos])


def _evaluate(attack: APGD, model: LogitsFn, st: _State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, t = st.y, st.t
    return loss_and_grad(model, st.cur, lambda z: attack.losses(z, y, t), samples=attack.eot)


def _start(
    attack: APGD,
    model: LogitsFn,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: tuple[torch.Tensor | None, torch.Tensor | None],
    radius: float,
    norm: str,
    seeds: list[int],
    active: torch.Tensor,
) -> tuple[_State, torch.Tensor]:
    """A random point of the ball (per-sample seeds) inside the box, its loss and gradient; and its logits."""
    t, t_hit = targets
    delta = random_start(tuple(x.shape), radius, norm, seeds, x.device)
    cur = l1box.project(delta, x, radius) + x if norm == "l1" else clip_to_bounds(x + delta)
    logits, loss, grad = loss_and_grad(model, cur, lambda z: attack.losses(z, y, t), samples=attack.eot)
    n = x.shape[0]
    eta = torch.full((n,), radius * (1.0 if norm == "l1" else 2.0), device=x.device)
    state = _State(
        pos=active,
        x=x,
        y=y,
        t=t,
        t_hit=t_hit,
        cur=cur,
        prev=cur,
        grad=grad,
        loss=loss,
        eta=eta,
        top=cur,
        top_loss=loss,
        top_grad=grad,
        rises=torch.zeros(n, device=x.device),
        eta_then=eta.clone(),
        top_then=loss,
        fraction=torch.full((n,), 0.2, device=x.device),
    )
    return state, logits


def _record(out: _Outcome, st: _State, hit: torch.Tensor) -> None:
    """Keep each sample's first fooling iterate."""
    first = hit & ~out.fooled[st.pos]
    if bool(first.any()):
        out.best[st.pos[first]] = st.cur[first]
        out.fooled[st.pos[first]] = True


def _next(attack: APGD, st: _State, radius: float, norm: str, *, first: bool) -> torch.Tensor:
    """z = P(x_k + eta dir(grad)); x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})) (a = 1 at first)."""
    if norm == "l1":
        direction = l1box.sparse_direction(st.grad, st.cur, st.fraction)
    else:
        direction = ascent_direction(st.grad, norm)
    z = _project(st.x, st.cur + per_sample(st.eta, st.cur) * direction, radius, norm)
    if first:
        return z
    a = attack.momentum
    return _project(st.x, st.cur + a * (z - st.cur) + (1 - a) * (st.cur - st.prev), radius, norm)


def _project(x: torch.Tensor, point: torch.Tensor, radius: float, norm: str) -> torch.Tensor:
    """Back into the threat model: the ball around x intersected with [0, 1] (exactly, for L1)."""
    if norm == "l1":
        return (x + l1box.project(point - x, x, radius)).detach()
    return clip_to_bounds(x + project(point - x, radius, norm)).detach()


def _checkpoint(st: _State, attack: APGD, span: int, norm: str, radius: float) -> None:
    """Halve the step where too few iterations since the last checkpoint raised the loss, or where
    neither the step nor the best loss changed; those samples restart from their loss-best point."""
    stalled = st.rises < attack.rho * span
    flat_run = (st.eta == st.eta_then) & (st.top_loss == st.top_then)
    halve = stalled | flat_run
    st.eta_then, st.top_then = st.eta.clone(), st.top_loss.clone()
    st.eta = torch.where(halve, st.eta / 2, st.eta)
    if norm == "l1":  # "Mind the box": follow the best point's sparsity, and a smaller step with it
        d = st.x[0].numel()
        sparsity = (flat(st.top - st.x) != 0).sum(1).to(st.eta.dtype) / d
        shrink = sparsity < 0.95 * st.fraction
        st.fraction = (sparsity / 1.5).clamp(min=1.0 / d, max=1.0)
        st.eta = torch.where(shrink, st.eta / 1.5, st.eta).clamp_min(radius * 10.0 / d)
    back = per_sample(halve, st.cur)
    st.cur = torch.where(back, st.top, st.cur)
    st.prev = torch.where(back, st.top, st.prev)
    st.grad = torch.where(back, st.top_grad, st.grad)
    st.loss = torch.where(halve, st.top_loss, st.loss)
    st.rises = torch.zeros_like(st.rises)


@dataclass(frozen=True)
class APGDT:
    """APGD-T: targeted DLR against the k most likely other classes, one full run per target."""

    name: ClassVar[str] = "apgd-t"
    needs_gradients: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")

    steps: int = 100
    n_targets: int = 9  # AutoAttack's k; fewer when the model has fewer other classes
    restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    eot: int = 0
    early_stop: bool = True
    min_margin: float = 0.0

    def _inner(self) -> APGD:
        return APGD(
            steps=self.steps,
            loss="dlr",
            rho=self.rho,
            momentum=self.momentum,
            eot=self.eot,
            early_stop=self.early_stop,
            min_margin=self.min_margin,
        )

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
        """Untargeted runs try the targets in order of the clean logits, each on the samples still
        robust; a targeted run (``targets`` given) attacks its one target with the same budget."""
        out = _Outcome(x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))
        if eps == 0 or x.shape[0] == 0:
            return out.best
        inner = self._inner()
        seed_list = [int(s) for s in seeds.cpu()]
        with torch.no_grad():
            ranked = model(x).sort(1, descending=True).indices
        others = ranked[ranked != y[:, None]].view(x.shape[0], -1)  # every class but the true one
        k = 1 if targets is not None else min(self.n_targets, others.shape[1])
        for j in range(k):
            for restart in range(self.restarts):
                active = torch.nonzero(~out.fooled).flatten()
                if active.numel() == 0:
                    return out.best.detach()
                t = targets[active] if targets is not None else others[active, j]
                hit_t = targets[active] if targets is not None else None
                run_seeds = [mix_seed(seed_list[i], 1 + j * self.restarts + restart) for i in active.tolist()]
                search(inner, model, x, y, active, t, hit_t, eps, norm, run_seeds, out)
        return out.best.detach()
