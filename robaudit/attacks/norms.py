"""Norm maths as plain functions: norms, steepest-ascent directions, projections, random starts.

Shapes: batches of images (N, ...). Each function treats each sample independently.
"""

from __future__ import annotations

import torch

NORMS = ("linf", "l2", "l1")


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (N,) shaped to broadcast against a batch ``like`` (N, ...)."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a perturbation, shape (N,).

    ``l0`` counts changed pixel locations (any channel) for image batches (N, C, H, W), the unit of
    the one-pixel attack's budget, and changed coordinates otherwise.
    """
    if norm == "l0" and delta.ndim == 4:
        return (delta != 0).any(1).flatten(1).sum(1).to(delta.dtype)
    d = flat(delta)
    if norm == "linf":
        return d.abs().amax(1)
    if norm == "l2":
        return d.norm(p=2, dim=1)
    if norm == "l1":
        return d.abs().sum(1)
    if norm == "l0":
        return (d != 0).sum(1).to(delta.dtype)
    raise ValueError(f"unknown norm {norm!r}")


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm direction maximising <grad, d> over the norm's unit ball (the dual-norm maximiser).

    L∞: sign(grad) (Goodfellow et al. 2015). L2: grad / ||grad||₂. L1: all mass on the coordinate
    with the largest |grad|, the exact maximiser for one step (FGM-L1).
    """
    if norm == "linf":
        return grad.sign()
    g = flat(grad)
    if norm == "l2":
        n = g.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
        return (g / n).view_as(grad)
    if norm == "l1":
        idx = g.abs().argmax(1, keepdim=True)
        out = torch.zeros_like(g)
        out.scatter_(1, idx, g.gather(1, idx).sign())
        return out.view_as(grad)
    raise ValueError(f"unknown norm {norm!r}")


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Euclidean projection of each perturbation onto the eps-ball of the norm."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    d = flat(delta)
    if norm == "l2":
        n = d.norm(p=2, dim=1, keepdim=True)
        factor = torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))
        return (d * factor).view_as(delta)
    if norm == "l1":
        # In float64: float32 cumulative sums over thousands of coordinates overshoot eps by ~1e-6.
        return project_l1(d.double(), eps).to(delta.dtype).view_as(delta)
    raise ValueError(f"unknown norm {norm!r}")


def project_l1(d: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact projection onto the L1 ball (Duchi et al. 2008), sorting per row: O(n log n)."""
    a = d.abs()
    inside = a.sum(1) <= eps
    # The shortcut asks the device a question; a GPU would idle while the host waits for the answer.
    if d.device.type != "cuda" and bool(inside.all()):
        return d
    mu, _ = a.sort(1, descending=True)
    cumsum = mu.cumsum(1)
    ks = torch.arange(1, d.shape[1] + 1, device=d.device, dtype=d.dtype)
    cond = mu - (cumsum - eps) / ks > 0
    rho = cond.to(d.dtype).cumsum(1).argmax(1, keepdim=True)  # last index where cond holds
    theta = (cumsum.gather(1, rho) - eps) / (rho + 1).to(d.dtype)
    projected = d.sign() * (a - theta).clamp_min(0)
    return torch.where(inside.unsqueeze(1), d, projected)


def float32_safe_eps(eps: float, norm: str, numel: int) -> float:
    """The radius to aim for so that x + delta, rounded to float32, still lies within eps.

    Rounding each coordinate of x + delta (values in [0, 1]) moves it by at most 2^-25, so the stored
    perturbation can exceed the intended one by up to 2^-25 per coordinate: numel * 2^-25 in L1 and
    sqrt(numel) * 2^-25 in L2. That is more than the runner's 1e-6 tolerance for L1 on any real image,
    so L1 and L2 attacks aim that much inside the ball. L∞ (2^-25 < 1e-6) needs no margin.
    """
    unit = 2.0**-24  # twice the worst rounding, for the rounding of delta itself
    if norm == "l1":
        return max(0.0, eps - numel * unit)
    if norm == "l2":
        return max(0.0, eps - numel**0.5 * unit)
    return eps


def clip_to_bounds(x_adv: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Clipping moves each coordinate towards x (which lies inside the bounds), so it never leaves the ball."""
    return x_adv.clamp(lo, hi)


def random_start(
    shape: tuple[int, ...], eps: float, norm: str, seeds: list[int], device: torch.device
) -> torch.Tensor:
    """A random starting perturbation inside each sample's eps-ball, from that sample's own seed.

    One generator per sample keeps the draw independent of batch size, order and device split.
    L∞: uniform in the cube. L1: uniform in the ball (d + 1 exponentials normalised, a uniform point
    of the simplex, with random signs). L2: a uniform direction at a radius uniform in [0, eps]
    (as torchattacks), not uniform in the ball: in high dimension that puts nearly every start on the
    sphere, and PGD's small fixed L2 steps (2.5 eps / steps) shed so little of that noise that on the
    sample LeNet (1000 images, eps 1.5, PGD-40) it fooled 294 to 300 images over five seeds, against
    304 to 310 with the uniform radius (313 with no random start). In L1 the two fooled the same
    number (218 to 223), and L1 keeps the uniform ball.
    """
    per_sample = shape[1:]
    d = 1
    for s in per_sample:
        d *= s
    out = torch.empty((len(seeds), d), dtype=torch.float32)
    for i, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(int(seed))
        if norm == "linf":
            out[i] = (torch.rand(d, generator=g) * 2 - 1) * eps
        elif norm == "l2":
            v = torch.randn(d, generator=g)
            radius = eps * float(torch.rand(1, generator=g))
            out[i] = v / v.norm().clamp_min(1e-12) * radius
        elif norm == "l1":
            e = -torch.log(torch.rand(d + 1, generator=g).clamp_min(1e-12))
            signs = torch.randint(0, 2, (d,), generator=g) * 2 - 1
            out[i] = signs * e[:d] / e.sum() * eps
        else:
            raise ValueError(f"unknown norm {norm!r}")
    return out.view(len(seeds), *per_sample).to(device)


def sparse_l1_direction(grad: torch.Tensor, x_adv: torch.Tensor, fraction: float) -> torch.Tensor:
    """L1 steepest ascent for PGD: the top ``fraction`` of coordinates by |grad|, with sign, L1 norm 1.

    The plain sign step is an L∞ direction and wastes an L1 budget; one coordinate per step (exact for
    one step) stalls at the bounds. Coordinates that already sit on the bound they would push past are
    skipped (SLIDE, Tramèr & Boneh 2019; APGD-L1's masking, Croce & Hein 2021).
    """
    g = flat(grad)
    xa = flat(x_adv)
    blocked = ((xa <= 0) & (g < 0)) | ((xa >= 1) & (g > 0))
    score = g.abs().masked_fill(blocked, -1.0)
    k = max(1, int(round(fraction * g.shape[1])))
    top = score.topk(k, dim=1).indices
    out = torch.zeros_like(g)
    out.scatter_(1, top, g.gather(1, top).sign() / k)
    return out.view_as(grad)
