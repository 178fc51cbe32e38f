"""Bound propagation over a chain of ops: IBP (Gowal et al. 2018) and CROWN (Zhang et al. 2018).

The input set is the threat-model ball around x0 intersected with the pixel box [0, 1]^n.

- L∞: the ball ∩ box is itself a box, so a linear function's minimum over it is exact.
- L2: the minimum of a·x over {||x - x0||₂ ≤ eps} ∩ box is bounded from below by Lagrangian weak
  duality: for every μ ≥ 0, min over the box of a·x + μ/2 (||x - x0||² - eps²) is a lower bound (it
  separates per coordinate: x_i = clip(x0_i - a_i/μ, box)). We take the best of a grid of μ around the
  ball's own optimum ||a||/eps, and the box bound (the set lies in the L∞ cube of radius eps ∩ box too).
  Every candidate is a valid lower bound of the same minimum, so their maximum is one as well; per
  coordinate mixing of the two sets would not be, and is not done.

CROWN uses the adaptive lower slope for unstable ReLUs (1 when u > -l, else 0) and the chord above.
Intermediate bounds come from CROWN where the layer is small enough (``crown_max``), otherwise from
IBP, and are always intersected with IBP's (both are sound). CROWN bounds only the elements whose
bounds the relaxations read (``_to_tighten``), one backward pass each, in chunks of ``budget``
elements at the widest layer. MaxPool
(non-overlapping) is relaxed by the input with the largest lower bound below and by the window's
largest upper bound above (exact when one input dominates).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import torch

from robaudit.certify.ops import LINEAR_OPS, Conv, Linear, MaxPool, Op, ReLU

Bounds = tuple[torch.Tensor, torch.Tensor]
_MU_GRID = tuple(2.0**k for k in range(-8, 5))
_GROUP = 8  # samples per intermediate-bound pass (see _layer_bounds)


@dataclass(frozen=True)
class InputSet:
    """The threat-model ball around ``x0`` (N, *shape) intersected with the box [0, 1]."""

    x0: torch.Tensor
    eps: float
    norm: str  # linf | l2

    @property
    def box(self) -> Bounds:
        return (self.x0 - self.eps).clamp(0.0, 1.0), (self.x0 + self.eps).clamp(0.0, 1.0)

    def subset(self, rows: torch.Tensor) -> InputSet:
        """The same set for the samples ``rows`` only (every per-sample tensor field sliced)."""
        sliced = {
            f.name: getattr(self, f.name)[rows]
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **sliced)

    @cached_property
    def _centre_radius(self) -> Bounds:
        """The box as centre and radius, (N, n, 1) each: computed once per set, not per pass."""
        lo, hi = (t.flatten(1).unsqueeze(-1) for t in self.box)
        return (hi + lo) / 2, (hi - lo) / 2

    def minimise(self, lam: torch.Tensor) -> torch.Tensor:
        """A lower bound of min over the set of lam·x, lam (N, M, *shape) -> (N, M)."""
        a = lam.flatten(2)
        c, r = self._centre_radius
        # min over the box of a·x = a·c - |a|·r: two batched products, one temporary (|a|)
        box = (torch.bmm(a, c) - torch.bmm(a.abs(), r)).squeeze(-1)
        if self.norm != "l2" or self.eps == 0:
            return box
        lo, hi = (t.flatten(1).unsqueeze(1) for t in self.box)
        x0 = self.x0.flatten(1).unsqueeze(1)
        best = box
        ball = a.norm(dim=-1, keepdim=True).clamp_min(1e-30) / self.eps
        for factor in _MU_GRID:
            mu = ball * factor
            x = torch.minimum(torch.maximum(x0 - a / mu, lo), hi)
            value = (a * x).sum(-1) + mu[..., 0] / 2 * (((x - x0) ** 2).sum(-1) - self.eps**2)
            best = torch.maximum(best, value)
        return best


def relu_relaxation(bounds: Bounds) -> tuple[torch.Tensor, ...]:
    """Per element (N, 1, *shape): the lower slope, upper minus lower slope, and the upper line's
    intercept. Stable elements get their exact line (slopes 0 or 1, no intercept)."""
    lo, hi = (t.unsqueeze(1) for t in bounds)
    unstable = (lo < 0) & (hi > 0)
    up = torch.where(hi <= 0, 0.0, torch.where(lo >= 0, 1.0, hi / (hi - lo).clamp_min(1e-30)))
    low = torch.where(hi <= 0, 0.0, torch.where(lo >= 0, 1.0, (hi > -lo).to(lo.dtype)))
    return low, up - low, torch.where(unstable, -up * lo, 0.0)


def relax_back(op: Op, lam: torch.Tensor, bounds: Bounds | None, relu: tuple | None) -> tuple:
    """Carry lam (N, M, *out) back through one op for a lower bound: (new lam, constant term)."""
    if isinstance(op, LINEAR_OPS):
        return op.back(lam)
    assert bounds is not None
    if isinstance(op, ReLU):
        assert relu is not None
        low, gap, intercept = relu
        neg = lam.clamp_max(0)  # negative weights take the upper line, the rest the lower one
        const = torch.bmm(neg.flatten(2), intercept.flatten(1).unsqueeze(-1)).squeeze(-1)
        return (lam * low).addcmul_(neg, gap), const
    assert isinstance(op, MaxPool)
    pos, neg = lam.clamp_min(0), lam.clamp_max(0)
    n, m, c, h, w = lam.shape
    k = op.kernel
    lo0, hi0 = bounds
    _, idx = torch.nn.functional.max_pool2d(lo0, k, k, return_indices=True)
    lo_best = torch.nn.functional.max_pool2d(lo0, k, k)
    masked = hi0.flatten(2).scatter(2, idx.flatten(2), -math.inf).view_as(hi0)
    others = torch.nn.functional.max_pool2d(masked, k, k)
    top = torch.nn.functional.max_pool2d(hi0, k, k)
    decided = (lo_best >= others).unsqueeze(1)
    through = pos + torch.where(decided, neg, 0.0)
    const = (torch.where(decided, 0.0, neg) * top.unsqueeze(1)).flatten(2).sum(-1)
    spread = torch.zeros((n, m, c, lo0.shape[-2] * lo0.shape[-1]), dtype=lam.dtype, device=lam.device)
    spread.scatter_(3, idx.flatten(2).unsqueeze(1).expand(n, m, c, h * w), through.flatten(3))
    return spread.view(n, m, *lo0.shape[1:]), const


def backward_bound(
    ops: list[Op], upto: int, lam: torch.Tensor, pre: list[Bounds | None], inputs: InputSet
) -> torch.Tensor:
    """CROWN lower bound of lam·(output of ops[:upto]) over the input set, (N, M)."""
    const = lam.new_zeros(lam.shape[:2])
    for i in range(upto - 1, -1, -1):
        bounds = pre[i]
        relu = relu_relaxation(bounds) if isinstance(ops[i], ReLU) and bounds is not None else None
        lam, c = relax_back(ops[i], lam, bounds, relu)
        const = const + c
    return inputs.minimise(lam) + const


def sizes(ops: list[Op], x0: torch.Tensor) -> list[int]:
    """Elements per sample of the input of each op, and of the output last."""
    probe = x0[:1]
    out = [probe[0].numel()]
    for op in ops:
        probe = op.forward(probe)
        out.append(probe[0].numel())
    return out


def _unit_rows(op: Op, idx: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """``op.back`` of the unit vectors e_idx (idx (N, M) flat indices of the output of ``op``)."""
    if isinstance(op, (Linear, Conv)):
        return op.rows(idx)
    units = torch.zeros(*idx.shape, math.prod(shape), dtype=torch.float64).scatter_(2, idx.unsqueeze(2), 1.0)
    return op.back(units.view(*idx.shape, *shape))  # type: ignore[union-attr]


def _layer_bounds(
    ops: list[Op],
    upto: int,
    pre: list[Bounds | None],
    inputs: InputSet,
    ibp: Bounds,
    widest: int,
    budget: int,
) -> Bounds:
    """CROWN bounds on the output of ops[:upto] (ops[upto - 1] linear), intersected with ``ibp``.

    Only the elements that need it are bounded (``_to_tighten``), per sample. The samples go in groups
    of ``_GROUP`` with similar counts (sorted), each group's specs padded to its own largest count, so
    that a few samples with many unstable units do not widen every sample's pass.
    """
    lo, hi = ibp
    n = lo.shape[0]
    flat_lo, flat_hi = lo.reshape(n, -1).clone(), hi.reshape(n, -1).clone()
    need = _to_tighten(ops, upto, flat_lo, flat_hi)
    counts = need.sum(1)
    by_count = torch.argsort(counts, descending=True)
    for start in range(0, n, _GROUP):
        rows = by_count[start : start + _GROUP]
        if int(counts[rows[0]]) == 0:
            break
        part_pre = [None if b is None else (b[0][rows], b[1][rows]) for b in pre[:upto]]
        new_lo, new_hi = _group_bounds(
            ops,
            upto,
            part_pre,
            inputs.subset(rows),
            (flat_lo[rows], flat_hi[rows], need[rows], lo.shape[1:]),
            widest,
            budget,
        )
        flat_lo[rows], flat_hi[rows] = new_lo, new_hi
    return flat_lo.view_as(lo), flat_hi.view_as(hi)


def _group_bounds(
    ops: list[Op],
    upto: int,
    pre: list[Bounds | None],
    inputs: InputSet,
    flat: tuple,
    widest: int,
    budget: int,
) -> Bounds:
    """``_layer_bounds`` for one group: ``flat`` is (lo, hi, need), each (G, n), and the per-sample
    shape. Sample k's specs are its own elements that need a bound. The first (linear) op's transpose
    of a unit vector is read off its weights and shared by the lower and the upper bound (its
    negation); the specs go back in chunks of at most ``budget`` elements at the widest layer."""
    flat_lo, flat_hi, need, shape = flat
    n = flat_lo.shape[0]
    counts = need.sum(1)
    m = int(counts.max())
    order = torch.argsort(need.to(torch.int8), dim=1, descending=True, stable=True)[:, :m]
    valid = torch.arange(m) < counts.unsqueeze(1)
    chunk = max(1, budget // max(1, 2 * n * widest))
    for start in range(0, m, chunk):
        idx, ok = order[:, start : start + chunk], valid[:, start : start + chunk]
        lam, const = _unit_rows(ops[upto - 1], idx, shape)
        k = idx.shape[1]
        bound = backward_bound(ops, upto - 1, torch.cat([lam, -lam], 1), pre, inputs)
        low, high = bound[:, :k] + const, -bound[:, k:] + const
        old_lo, old_hi = flat_lo.gather(1, idx), flat_hi.gather(1, idx)
        flat_lo.scatter_(1, idx, torch.where(ok, torch.maximum(old_lo, low), old_lo))
        flat_hi.scatter_(1, idx, torch.where(ok, torch.minimum(old_hi, high), old_hi))
    return flat_lo, flat_hi


def _to_tighten(ops: list[Op], at: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Which elements (N, n) of the input of ``ops[at]`` are worth a CROWN bound.

    Before a ReLU, the unstable ones (lo < 0 < hi): a stable element's relaxation is exact whatever its
    bounds, so no later CROWN pass reads them; only the interval bounds of later layers do, which
    CROWN's are intersected with (on the sample models the margins came out equal to 1e-13 all the
    same; tests/test_certify_crown.py checks it on small nets). A max pool does read them (which input
    dominates, the window's top), so when one follows the ReLU before the next Linear or Conv, every
    element that can be positive is bounded; before a max pool itself, all.
    """
    if not isinstance(ops[at], ReLU):
        return torch.ones_like(lo, dtype=torch.bool)
    for op in ops[at + 1 :]:
        if isinstance(op, MaxPool):
            return hi > 0
        if isinstance(op, (Linear, Conv, ReLU)):
            break
    return (lo < 0) & (hi > 0)


def crown_pre_bounds(
    ops: list[Op],
    inputs: InputSet,
    method: str,
    budget: int = 2**25,
    crown_max: int = 4096,
    prefix_max: int | None = None,
) -> list[Bounds | None]:
    """Bounds on the input of each nonlinear op (None for linear ops).

    IBP throughout, tightened where it pays: under L2 the affine part before the first nonlinearity
    is bounded by the dual above (intervals would start from the loose cube), and with CROWN every
    later layer of at most ``crown_max`` elements gets CROWN's bounds (one backward pass per element
    that needs one, so wider layers keep IBP's). Tightened bounds are the intersection with IBP's: both
    are sound. Only a layer with a Linear or Conv since the last nonlinear op is tightened: through
    elementwise ops alone (a max pool right after a ReLU) CROWN gives exactly the interval.
    """
    pre: list[Bounds | None] = [None] * len(ops)
    lo, hi = inputs.box
    widest = math.prod(lo.shape[1:])
    prefix = True  # no nonlinearity yet
    mixing = False  # a Linear or Conv since the last nonlinear op
    for i, op in enumerate(ops):
        widest = max(widest, math.prod(lo.shape[1:]))
        if isinstance(op, LINEAR_OPS):
            mixing = mixing or isinstance(op, (Linear, Conv))
            lo, hi = op.ibp(lo, hi)
            continue
        size = math.prod(lo.shape[1:])
        small_prefix = prefix_max is None or size <= prefix_max
        tighten = mixing and (
            (prefix and inputs.norm == "l2" and small_prefix)
            or (not prefix and method != "ibp" and size <= crown_max)
        )
        if tighten:
            lo, hi = _layer_bounds(ops, i, pre, inputs, (lo, hi), widest, budget)
        prefix = mixing = False
        pre[i] = (lo, hi)
        lo, hi = op.ibp(lo, hi)
    return pre


def margin_specs(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, K-1, K): the rows e_y - e_j for every class j other than the label."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    rows = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (N, K, K)
    keep = ~torch.nn.functional.one_hot(y, num_classes).bool()
    return rows[keep].view(len(y), num_classes - 1, num_classes)


def margin_lower_bounds(
    ops: list[Op],
    inputs: InputSet,
    y: torch.Tensor,
    method: str,
    num_classes: int,
    crown_max: int = 4096,
    prefix_max: int | None = None,
) -> tuple[torch.Tensor, list[Bounds | None]]:
    """Lower bounds (N, K-1) on logit_y - logit_j over the input set, by ``method`` (ibp | crown), and
    the bounds on each nonlinear op's input they used.

    The margin is folded into the last linear layer (IBP bounds c·W, not c applied to intervals).
    CROWN's figure is the larger of CROWN's and IBP's per spec: both are sound, so CROWN is never
    looser than IBP. ``crown_max``: see ``crown_pre_bounds`` (0 keeps IBP's intermediate bounds).
    """
    pre = crown_pre_bounds(ops, inputs, method, crown_max=crown_max, prefix_max=prefix_max)
    specs = margin_specs(y, num_classes, inputs.x0.dtype)
    last = ops[-1]
    if isinstance(last, Linear):
        lo, hi = _interval_from(ops[:-1], pre, inputs)
        w = specs @ last.weight  # (N, K-1, in)
        c, r = ((hi + lo) / 2).unsqueeze(1), ((hi - lo) / 2).unsqueeze(1)
        ibp_bound = (w * c).sum(-1) - (w.abs() * r).sum(-1) + specs @ last.bias
    else:
        lo, hi = _interval_from(ops, pre, inputs)
        pos, neg = specs.clamp_min(0), specs.clamp_max(0)
        ibp_bound = (pos * lo.unsqueeze(1) + neg * hi.unsqueeze(1)).sum(-1)
    if method == "ibp":
        return ibp_bound, pre
    return torch.maximum(ibp_bound, backward_bound(ops, len(ops), specs, pre, inputs)), pre


def _interval_from(ops: list[Op], pre: list[Bounds | None], inputs: InputSet) -> Bounds:
    """Interval bounds on the output of ``ops``, restarting from the last nonlinear op's bounds."""
    last = max((i for i, b in enumerate(pre[: len(ops)]) if b is not None), default=None)
    start, (lo, hi) = (0, inputs.box) if last is None else (last, pre[last])  # type: ignore[misc]
    for op in ops[start:]:
        lo, hi = op.ibp(lo, hi)
    return lo, hi
