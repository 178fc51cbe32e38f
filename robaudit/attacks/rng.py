"""Counter-based random numbers: a pure function of (sample seed, stream, position).

A per-sample ``torch.Generator`` needs a Python loop over the batch at every draw. Hashing
(seed, stream, position) with SplitMix64 gives the same independence from batch size, order and
device split, fully vectorised and on the device. Streams separate uses (one per generation of an
evolutionary attack, say) so that no two draws share a counter.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit constant as torch's signed int64 (multiplication wraps modulo 2**64)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift on int64 (torch's >> is arithmetic for negative values)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser (Steele et al. 2014): a bijection on 64-bit integers."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def sample_seeds(run_seed: int, indices: np.ndarray) -> np.ndarray:
    """One seed per sample from (run seed, sample index) by SplitMix64, independent of batching: the
    finaliser of ``run_seed * golden + index + 1``, shifted right once so every seed is a non-negative
    int64. Same shape as ``indices``."""
    start = _signed(int(run_seed & _MASK64) * (_GOLDEN & _MASK64))
    # The index's 64-bit pattern, as numpy's cast to uint64 gives it (negative indices wrap).
    index = torch.from_numpy(indices.astype(np.uint64).view(np.int64))
    return _shr(_mix(index + start + 1), 1).numpy()


def uniform(seeds: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Float32 uniforms in [0, 1), shape (len(seeds), n): row i depends only on seeds[i], stream and n."""
    counters = (stream << 32) + torch.arange(n, device=seeds.device, dtype=torch.int64)
    z = _mix(seeds.to(torch.int64)[:, None] + (counters[None, :] + 1) * _GOLDEN)
    u = _shr(z, 11).to(torch.float64) * (1.0 / (1 << 53))
    return u.to(torch.float32).clamp_max(1.0 - 2.0**-24)


def normal(seeds: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Standard normal draws (Box-Muller over two uniform streams), shape (len(seeds), n)."""
    u1 = uniform(seeds, 2 * stream, n).clamp_min(2.0**-24)
    u2 = uniform(seeds, 2 * stream + 1, n)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
