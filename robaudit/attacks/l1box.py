"""L1 maths that respects the [0, 1] box: the steepest step, the sparse direction and the projection.

An L1 budget spent without looking at the box is mostly wasted: a step that puts all its mass on one
pixel already at 1 (or 0) is clipped away, so FGM-L1 at eps 1, 2 or 10 moved the same single pixel by
the same clipped amount. Here every function knows how far each coordinate can still move in the
direction it is pushed ("room"), and the projection is onto the intersection of the L1 ball and the box
(Croce & Hein 2021, "Mind the box"), not onto the ball followed by a clip.

Shapes: batches (N, ...); each sample is treated independently.
"""

from __future__ import annotations

import torch

from robaudit.attacks.norms import flat


def room(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """How far each coordinate of ``x`` can move in the direction of ``grad`` before leaving [0, 1]
    (0 where the gradient is 0: moving such a coordinate gains nothing to first order). Flat (N, d)."""
    g, xf = flat(grad), flat(x)
    return torch.where(g > 0, 1 - xf, torch.where(g < 0, xf, torch.zeros_like(xf))).clamp_min(0)


def free_mass(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per sample (N,): the largest L1 perturbation the box allows along the gradient's signs."""
    return room(grad, x).sum(1)


def steepest_step(grad: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The exact maximiser of <grad, delta> over ||delta||_1 <= eps and 0 <= x + delta <= 1.

    A linear objective over that set is a fractional knapsack: fill the coordinates in decreasing |grad|
    to their box limit, until eps is spent (the last one partly). When eps exceeds the free mass every
    coordinate that can move is filled and the box, not eps, bounds the step.
    """
    g = flat(grad)
    r = room(grad, x)
    score = g.abs().masked_fill(r <= 0, -1.0)
    order = score.argsort(1, descending=True)
    r_sorted = r.gather(1, order)
    before = r_sorted.cumsum(1) - r_sorted
    take = torch.minimum((eps - before).clamp_min(0), r_sorted)
    out = torch.zeros_like(g)
    out.scatter_(1, order, take * g.gather(1, order).sign())
    return out.view_as(grad)


def sparse_direction(grad: torch.Tensor, x: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """A unit-L1 direction on each sample's top ``fraction`` (N,) of the coordinates that can still move,
    ranked by |grad|, with grad's sign: APGD-L1's sparse step, whose sparsity adapts per sample."""
    g = flat(grad)
    movable = room(grad, x) > 0
    score = g.abs().masked_fill(~movable, -1.0)
    n_free = movable.sum(1)
    k = (fraction * g.shape[1]).ceil().long().clamp_min(1)
    k = torch.minimum(k, n_free.clamp_min(1))
    ranked, _ = score.sort(1, descending=True)
    threshold = ranked.gather(1, (k - 1)[:, None])
    chosen = (score >= threshold) & movable
    count = chosen.sum(1, keepdim=True).clamp_min(1)
    return (g.sign() * chosen / count).view_as(grad)


def project(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The Euclidean projection of ``delta`` onto {d : ||d||_1 <= eps, 0 <= x + d <= 1}, exactly.

    Coordinate i of the answer is sign(z_i) min(max(|z_i| - lam, 0), b_i), with b_i the box's room in
    z_i's direction and lam >= 0 the smallest threshold whose L1 mass is at most eps. That mass is
    piecewise linear and decreasing in lam, with breakpoints at |z_i| - b_i (the coordinate leaves its
    cap) and |z_i| (it reaches 0): sorting them gives lam exactly, in float64, with no iteration.
    """
    z = flat(delta).double()
    xf = flat(x).double()
    a = z.abs()
    b = torch.where(z >= 0, 1 - xf, xf).clamp_min(0)
    f0 = torch.minimum(a, b).sum(1)
    points = torch.cat([(a - b).clamp_min(0), a], 1)
    steps = torch.cat([torch.ones_like(a), -torch.ones_like(a)], 1)
    points, order = points.sort(1)
    active = steps.gather(1, order).cumsum(1)  # coordinates decreasing between points j and j + 1
    drops = (active[:, :-1] * points.diff(dim=1)).cumsum(1)
    mass = f0[:, None] - torch.cat([torch.zeros_like(f0)[:, None], drops], 1)  # the mass at each point
    j = ((mass > eps).sum(1) - 1).clamp(0, points.shape[1] - 1)[:, None]
    lam = points.gather(1, j) + (mass.gather(1, j) - eps) / active.gather(1, j).clamp_min(1)
    lam = torch.where((f0 > eps)[:, None], lam, torch.zeros_like(lam))
    out = z.sign() * torch.minimum((a - lam).clamp_min(0), b)
    return out.to(delta.dtype).view_as(delta)
