"""Exact verification of the margin by mixed-integer linear programming (Tjeng, Xiao & Tedrake 2019).

The network is encoded over the L∞ ball ∩ [0, 1] box with one continuous variable per input pixel,
the layers' affine maps substituted in (so a layer's pre-activations are affine expressions, not
variables), and:

- a ReLU whose pre-activation bounds [l, u] are both ≥ 0 (or ≤ 0) is the identity (or zero): no
  variable, no binary;
- an unstable ReLU gets a ≥ 0 and a binary d with a ≥ z, a ≤ z - l(1 - d), a ≤ u d (big-M from the
  bounds, so tight bounds make a small, tight program);
- a max-pool window whose largest lower bound beats every other input's upper bound is that input;
  otherwise its output m gets m ≥ z_i and, with one binary per candidate input (sum = 1),
  m ≤ z_i + (U - l_i)(1 - d_i), where U is the window's largest upper bound.

The bounds come from CROWN (``bounds.crown_pre_bounds``), which are sound, so the program's feasible
set contains the network's graph over the input set and the minimum margin it finds is the exact one.
HiGHS, through ``scipy.optimize.milp``, solves one program per class not already certified by CROWN,
in order of CROWN's bound (weakest first), and the sample stops at the first class whose minimum is
below zero.

Only L∞ is offered. The L2 ball is a quadratic constraint, and HiGHS solves mixed-integer *linear*
programs (its quadratic solver is continuous only), so an exact L2 verdict is not available here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds as VarBounds
from scipy.optimize import LinearConstraint, milp

from robaudit.certify.bounds import Bounds, InputSet, crown_pre_bounds, margin_lower_bounds
from robaudit.certify.ops import LINEAR_OPS, MaxPool, Op, ReLU

# A layer run's dense matrix above this many entries is refused: the expansion would not fit.
MAX_MATRIX_ENTRIES = 60_000_000
# The solver's feasibility tolerance is about 1e-6 (HiGHS default 1e-7 primal, scaled): a proven
# minimum must clear this to certify, and a counterexample is trusted only once the forward pass
# confirms it.
CERTIFY_TOL = 1e-6


@dataclass
class Encoding:
    """A network as a MILP over the variables [x (input pixels), then each added variable]."""

    lb: list[np.ndarray] = field(default_factory=list)
    ub: list[np.ndarray] = field(default_factory=list)
    integer: list[np.ndarray] = field(default_factory=list)
    rows: list[sp.csr_matrix] = field(default_factory=list)  # A_ub rows: rows @ v <= rhs
    rhs: list[np.ndarray] = field(default_factory=list)
    eq_rows: list[sp.csr_matrix] = field(default_factory=list)  # rows @ v == eq_rhs
    eq_rhs: list[np.ndarray] = field(default_factory=list)
    n_vars: int = 0
    n_binaries: int = 0

    def add_vars(self, lb: np.ndarray, ub: np.ndarray, integer: bool) -> np.ndarray:
        """Append variables; their column indices."""
        idx = np.arange(self.n_vars, self.n_vars + len(lb))
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(np.full(len(lb), int(integer)))
        self.n_vars += len(lb)
        self.n_binaries += len(lb) if integer else 0
        return idx

    def var_matrix(self, cols: np.ndarray, coeffs: np.ndarray) -> sp.csr_matrix:
        """One row per entry: coefficient ``coeffs[r]`` on variable ``cols[r]``."""
        n = len(cols)
        return sp.csr_matrix((coeffs, (np.arange(n), cols)), shape=(n, self.n_vars))

    def constrain(self, rows: sp.spmatrix, rhs: np.ndarray, *, equality: bool = False) -> None:
        (self.eq_rows if equality else self.rows).append(sp.csr_matrix(rows))
        (self.eq_rhs if equality else self.rhs).append(np.asarray(rhs, dtype=np.float64))

    def finish(self) -> tuple[VarBounds, np.ndarray, list[LinearConstraint]]:
        lb, ub = np.concatenate(self.lb), np.concatenate(self.ub)
        cons = []
        for rows, rhs, lower in ((self.rows, self.rhs, False), (self.eq_rows, self.eq_rhs, True)):
            if rows:
                mat = sp.vstack([_widen(r, self.n_vars) for r in rows]).tocsr()
                b = np.concatenate(rhs)
                cons.append(LinearConstraint(mat, b if lower else -np.inf, b))
        return VarBounds(lb, ub), np.concatenate(self.integer), cons


def _widen(m: sp.csr_matrix, n_cols: int) -> sp.csr_matrix:
    m = m.copy()
    m.resize((m.shape[0], n_cols))
    return m


def _affine_matrix(ops: list[Op], in_shape: tuple[int, ...]) -> tuple[sp.csr_matrix, np.ndarray]:
    """A run of linear ops as y = A x + b on flat per-sample vectors, by pushing the identity through."""
    n_in = math.prod(in_shape)
    zero = torch.zeros(1, *in_shape, dtype=torch.float64)
    for op in ops:
        zero = op.forward(zero)
    n_out = zero[0].numel()
    if n_in * n_out > MAX_MATRIX_ENTRIES:
        raise ValueError(f"a layer of {n_in} -> {n_out} elements is too large for exact verification")
    cols = []
    for start in range(0, n_in, 1024):  # chunks keep the dense intermediate small
        basis = torch.eye(n_in, dtype=torch.float64)[start : start + 1024].reshape(-1, *in_shape)
        out = basis
        for op in ops:
            out = op.forward(out)
        cols.append(sp.csr_matrix((out.reshape(len(basis), -1) - zero.reshape(1, -1)).numpy()))
    return sp.vstack(cols).T.tocsr(), zero.reshape(-1).numpy()


def _relu(enc: Encoding, e: sp.csr_matrix, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple:
    """Encode a = relu(E v + c) given bounds [lo, hi] on it; the output's (E, c)."""
    active, unstable = lo >= 0, (lo < 0) & (hi > 0)
    keep = sp.diags(active.astype(np.float64))
    e_out, c_out = keep @ e, np.where(active, c, 0.0)
    idx = np.flatnonzero(unstable)
    if len(idx) == 0:
        return sp.csr_matrix(e_out), c_out
    low, u = lo[idx], hi[idx]
    a = enc.add_vars(np.zeros(len(idx)), u, integer=False)
    d = enc.add_vars(np.zeros(len(idx)), np.ones(len(idx)), integer=True)
    z = _widen(sp.csr_matrix(e[idx]), enc.n_vars)
    ones = np.ones(len(idx))
    enc.constrain(z - enc.var_matrix(a, ones), -c[idx])  # a >= z
    # a <= z - l (1 - d)
    enc.constrain(enc.var_matrix(a, ones) - z - enc.var_matrix(d, low), c[idx] - low)
    enc.constrain(enc.var_matrix(a, ones) - enc.var_matrix(d, u), np.zeros(len(idx)))  # a <= u d
    e_out = _widen(sp.csr_matrix(e_out), enc.n_vars).tolil()
    e_out[idx] = enc.var_matrix(a, ones)
    return sp.csr_matrix(e_out), c_out


def _maxpool(
    enc: Encoding, e: sp.csr_matrix, c: np.ndarray, lo: np.ndarray, hi: np.ndarray, op: MaxPool, shape: tuple
) -> tuple:
    """Encode non-overlapping max pooling of an input shaped (C, H, W); the output's (E, c)."""
    ch, h, w = shape
    kh, kw = op.kernel
    oh, ow = h // kh, w // kw
    grid = np.arange(ch * h * w).reshape(ch, h, w)[:, : oh * kh, : ow * kw]
    windows = grid.reshape(ch, oh, kh, ow, kw).transpose(0, 1, 3, 2, 4).reshape(-1, kh * kw)
    e = sp.csr_matrix(e)
    out_rows: list[sp.csr_matrix] = []
    out_c = np.zeros(len(windows))
    pending = []  # (output index, window, candidate mask)
    for o, win in enumerate(windows):
        best = int(np.argmax(lo[win]))
        others = np.delete(hi[win], best)
        if len(others) == 0 or lo[win][best] >= others.max():
            out_rows.append(e[win[best]])
            out_c[o] = c[win[best]]
        else:
            out_rows.append(sp.csr_matrix((1, e.shape[1])))
            pending.append((o, win, hi[win] >= lo[win][best]))
    if not pending:
        return sp.vstack(out_rows).tocsr(), out_c
    top = np.array([hi[win].max() for _, win, _ in pending])
    floor = np.array([lo[win].max() for _, win, _ in pending])
    m = enc.add_vars(floor, top, integer=False)
    for k, (o, win, cand) in enumerate(pending):
        ids = win[cand]
        d = enc.add_vars(np.zeros(len(ids)), np.ones(len(ids)), integer=True)
        z = _widen(sp.csr_matrix(e[ids]), enc.n_vars)
        mk = enc.var_matrix(np.full(len(ids), m[k]), np.ones(len(ids)))
        big = top[k] - lo[ids]
        enc.constrain(z - mk, -c[ids])  # m >= z_i
        enc.constrain(mk - z + enc.var_matrix(d, big), c[ids] + big)  # m <= z_i + big (1 - d_i)
        enc.constrain(enc.var_matrix(d, np.ones(len(ids))).sum(0), np.ones(1), equality=True)
        out_rows[o] = enc.var_matrix(np.array([m[k]]), np.ones(1))
    return sp.vstack([_widen(sp.csr_matrix(r), enc.n_vars) for r in out_rows]).tocsr(), out_c


def encode(ops: list[Op], lo_x: np.ndarray, hi_x: np.ndarray, pre: list, shape: tuple) -> tuple:
    """The MILP encoding of ``ops`` over the input box [lo_x, hi_x] (flat), with pre-activation bounds
    ``pre`` (one sample's, as numpy pairs); returns (encoding, logits as (E, c))."""
    enc = Encoding()
    x = enc.add_vars(lo_x, hi_x, integer=False)
    e, c = sp.identity(len(x), format="csr"), np.zeros(len(x))
    i = 0
    while i < len(ops):
        j = i
        while j < len(ops) and isinstance(ops[j], LINEAR_OPS):
            j += 1
        if j > i:
            a, b = _affine_matrix(ops[i:j], shape)
            e, c = (a @ e).tocsr(), a @ c + b
            probe = torch.zeros(1, *shape, dtype=torch.float64)
            for op in ops[i:j]:
                probe = op.forward(probe)
            shape = tuple(probe.shape[1:])
            i = j
            continue
        lo, hi = pre[i]
        op = ops[i]
        if isinstance(op, ReLU):
            e, c = _relu(enc, e, c, lo, hi)
        elif isinstance(op, MaxPool):
            e, c = _maxpool(enc, e, c, lo, hi, op, shape)
            shape = (shape[0], shape[1] // op.kernel[0], shape[2] // op.kernel[1])
        else:
            raise ValueError(f"exact verification does not support {type(op).__name__}")
        i += 1
    return enc, (_widen(sp.csr_matrix(e), enc.n_vars), c)


@dataclass
class ClassResult:
    """One program's answer for ``min (logit_y - logit_j)``: a proven lower bound, the best value found
    (inf when none), and the input that reached it."""

    lower: float
    upper: float
    x: np.ndarray | None
    finished: bool


def _solve_class(
    enc_parts: tuple, logits: tuple, y: int, j: int, n_in: int, seconds: float, decide: bool
) -> ClassResult:
    """Minimise logit_y - logit_j over the encoding, or with ``decide`` only settle its sign: the margin
    is constrained to at most CERTIFY_TOL and the solver stops at the first point it finds (a
    counterexample candidate), while infeasibility proves the margin above CERTIFY_TOL everywhere. That
    skips closing the optimality gap, which is most of the time on samples that are certified."""
    bounds, integrality, cons = enc_parts
    e, c = logits
    row = e[y] - e[j]
    const = float(c[y] - c[j])
    if seconds <= 0:
        return ClassResult(-math.inf, math.inf, None, False)
    options = {"time_limit": max(seconds, 0.01), "disp": False, "mip_rel_gap": 1e9 if decide else 1e-9}
    if decide:
        cons = [*cons, LinearConstraint(row, -np.inf, CERTIFY_TOL - const)]
    res = milp(
        np.asarray(row.todense()).ravel(),
        integrality=integrality,
        bounds=bounds,
        constraints=cons,
        options=options,
    )
    if res.status == 2:
        if not decide:  # the graph of the network always lies in its encoding
            raise RuntimeError("the exact encoding is infeasible; its bounds are not sound")
        return ClassResult(CERTIFY_TOL, math.inf, None, True)  # no point reaches CERTIFY_TOL
    dual = getattr(res, "mip_dual_bound", None)
    finished = res.status == 0 and not decide
    upper = float(res.fun) + const if res.x is not None else math.inf
    if finished:
        lower = upper if dual is None or not math.isfinite(dual) else min(upper, float(dual) + const)
    else:
        lower = float(dual) + const if dual is not None and math.isfinite(dual) else -math.inf
        lower = min(lower, CERTIFY_TOL) if decide else lower  # a decided run proves no more than that
    x = None if res.x is None else np.asarray(res.x[:n_in])
    return ClassResult(lower, upper, x, finished)


def forward(ops: list[Op], x: torch.Tensor) -> torch.Tensor:
    """The ops' concrete forward pass (float64), (N, *shape) -> (N, K)."""
    for op in ops:
        x = op.forward(x)
    return x


@dataclass
class SampleResult:
    verdict: bool | None  # True: certified; False: a counterexample is known; None: unknown
    counterexample: torch.Tensor | None
    lower: float  # a proven lower bound on min over classes and the set of the margin
    upper: float  # the smallest margin reached by a point of the set (inf: none found)


def _sample_setup(ops: list[Op], x0: torch.Tensor, eps: float, pre: list[Bounds | None], i: int) -> tuple:
    lo_x = (x0 - eps).clamp(0, 1).reshape(-1).numpy()
    hi_x = (x0 + eps).clamp(0, 1).reshape(-1).numpy()
    pre_i = [None if b is None else (b[0][i].reshape(-1).numpy(), b[1][i].reshape(-1).numpy()) for b in pre]
    enc, logits = encode(ops, lo_x, hi_x, pre_i, tuple(x0.shape))
    return enc.finish(), logits, lo_x, hi_x


def verify_sample(
    ops: list[Op],
    x0: torch.Tensor,
    y: int,
    eps: float,
    pre: tuple[list[Bounds | None], int],
    order: list[int],
    seconds: float,
    *,
    early_exit: bool = True,
) -> SampleResult:
    """Solve the programs of classes ``order`` (in that order) for one sample within ``seconds``.

    With ``early_exit`` the first confirmed counterexample ends the sample; without it every class is
    solved, so ``lower``/``upper`` bracket the minimum margin over all of ``order``.
    """
    deadline = time.monotonic() + seconds
    enc_parts, logits, lo_x, hi_x = _sample_setup(ops, x0, eps, pre[0], pre[1])
    lower, upper, found, unknown = math.inf, math.inf, None, False
    for j in order:
        r = _solve_class(enc_parts, logits, y, j, len(lo_x), deadline - time.monotonic(), early_exit)
        lower = min(lower, r.lower)
        if r.x is not None and r.upper < upper:
            point = torch.from_numpy(np.clip(r.x, lo_x, hi_x)).reshape(x0.shape)
            out = forward(ops, point.unsqueeze(0))[0]
            upper = min(upper, float(out[y] - out[j]))  # the margin the point really has
            if int(out.argmax()) != y and bool((out > out[y]).any()):
                found = point
                if early_exit:
                    break
        if r.lower < CERTIFY_TOL:
            unknown = True
    if found is not None:
        return SampleResult(False, found, lower, upper)
    return SampleResult(None if unknown else True, None, lower, upper)


def exact_verdicts(
    ops: list[Op],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    time_limit_s: float = 10.0,
) -> tuple[list[bool | None], list[torch.Tensor | None]]:
    """Exact robustness verdicts of the margin ``logit_y - logit_j > 0`` over the L∞ ball ∩ [0, 1].

    ``ops``: the network as certify ops (float64); ``x``: (N, *shape) inputs on [0, 1]; ``y``: (N,)
    labels. Per sample, the verdict is True (certified: no point of the set is misclassified, proven),
    False (a counterexample was found and confirmed by the ops' forward pass; it is returned, inside
    the ball ∩ box), or None (neither within ``time_limit_s`` seconds). A sample the model already
    misclassifies is False with the clean input as its counterexample; one CROWN certifies is True
    without a program. Ties (a margin of exactly 0) are not certified.

    Complexity: verification of ReLU networks is NP-complete (Katz et al. 2017). The program has one
    binary per unstable ReLU and per candidate input of an undecided max-pool window, and branch and
    bound may explore exponentially many of their assignments; in practice the time is driven by the
    number of unstable ReLUs at ``eps``, which CROWN's bounds keep small on adversarially trained
    networks. Building it costs one dense expansion per run of linear layers (in × out entries; over
    ``MAX_MATRIX_ENTRIES`` raises ValueError). At most K-1 programs are solved per sample, sharing its
    time limit.

    Raises ValueError for ``norm`` other than ``linf`` (see the module docstring).
    """
    if norm != "linf":
        raise ValueError(f"exact verification supports norm linf only, not {norm!r} (HiGHS has no MIQP)")
    x64, y = x.detach().to(torch.float64).cpu(), y.detach().cpu()
    with torch.no_grad():
        clean = forward(ops, x64)
        k = clean.shape[1]
        lbs, pre = margin_lower_bounds(ops, InputSet(x64, eps, "linf"), y, "crown", k)
    verdicts: list[bool | None] = []
    examples: list[torch.Tensor | None] = []
    for i in range(len(x64)):
        yi = int(y[i])
        if int(clean[i].argmax()) != yi or bool((clean[i] >= clean[i, yi]).sum() > 1):
            verdicts.append(False if int(clean[i].argmax()) != yi else None)
            examples.append(x64[i].clone() if verdicts[-1] is False else None)
            continue
        others = [j for j in range(k) if j != yi]
        open_classes = [others[c] for c in lbs[i].argsort().tolist() if float(lbs[i, c]) <= CERTIFY_TOL]
        if not open_classes:
            verdicts.append(True)
            examples.append(None)
            continue
        r = verify_sample(ops, x64[i], yi, eps, (pre, i), open_classes, time_limit_s)
        verdicts.append(r.verdict)
        examples.append(r.counterexample)
    return verdicts, examples


def exact_min_margin(
    ops: list[Op], x: torch.Tensor, y: torch.Tensor, eps: float, time_limit_s: float = 10.0
) -> list[SampleResult]:
    """Per sample, the exact minimum over the L∞ ball ∩ box of min_j (logit_y - logit_j), as a bracket
    [lower, upper] that is closed (lower == upper to solver tolerance) when every program finished."""
    x64, y = x.detach().to(torch.float64).cpu(), y.detach().cpu()
    with torch.no_grad():
        k = forward(ops, x64[:1]).shape[1]
        pre = crown_pre_bounds(ops, InputSet(x64, eps, "linf"), "crown")
    out = []
    for i in range(len(x64)):
        yi = int(y[i])
        order = [j for j in range(k) if j != yi]
        out.append(verify_sample(ops, x64[i], yi, eps, (pre, i), order, time_limit_s, early_exit=False))
    return out
