"""``--batch-size auto``: the largest batch whose forward + backward pass fits in memory.

The probe measures what one more sample costs: the bytes autograd saves for the backward pass (the
activations), found with saved-tensor hooks at two small batch sizes so that the weights, saved once
per pass, cancel out. The batch is then the largest power of two whose activations, with room for
the attack's own copies of the batch, fit in a share of the free memory. On a GPU the chosen batch is
also run once and halved until it fits. A model without gradients (ONNX Runtime only) keeps the
default batch. A host has no such safe trial: Linux overcommits, so a batch
too large for RAM is killed by the kernel instead of raising MemoryError. The out-of-memory halving in
the runner stays as the backstop either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robaudit.errors import is_out_of_memory
from robaudit.models import ModelAdapter

CAP = 4096  # beyond this no device gets faster, and a larger batch only delays progress reports
INPUT_COPIES = 6  # x, x_adv, its gradient, the kept best iterate and the step's temporaries
SHARE = {"cuda": 0.8, "cpu": 0.25}  # of the free memory; the host also holds the data and everything else
_SMALL, _LARGE = 2, 8  # the probe's two batch sizes


@dataclass(frozen=True)
class AutoBatch:
    batch_size: int
    bytes_per_sample: int
    budget: int

    def describe(self) -> str:
        return (
            f"--batch-size auto chose {self.batch_size}: an attack step costs about "
            f"{self.bytes_per_sample / 2**20:.2f} MiB per sample, and {self.budget / 2**30:.1f} GiB of free "
            f"memory were budgeted (at most {CAP}, or the data rounded up to a power of two)"
        )


def _saved_bytes(adapter: ModelAdapter, x: torch.Tensor) -> int:
    """Bytes autograd saves for the backward pass of the loss on ``x`` (the pass PGD repeats)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = adapter.logits(x)
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum")
        torch.autograd.grad(loss, x)
    return total


def free_memory(device: torch.device) -> int:
    """Free bytes on the device: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose(
    adapter: ModelAdapter, probe_x01: torch.Tensor, n_samples: int, budget: int | None = None
) -> AutoBatch:
    """The batch size for ``n_samples`` samples; ``probe_x01`` holds a few real samples in [0, 1]."""
    device = adapter.device
    if budget is None:
        budget = int(SHARE.get(device.type, SHARE["cpu"]) * free_memory(device))
    rows = probe_x01[torch.arange(_LARGE) % len(probe_x01)].to(device)
    activations = max(0, _saved_bytes(adapter, rows) - _saved_bytes(adapter, rows[:_SMALL])) // (
        _LARGE - _SMALL
    )
    # The backward pass holds a gradient beside each saved activation, hence twice the activations.
    per_sample = max(1, 2 * activations + INPUT_COPIES * rows[0].numel() * rows.element_size())
    limit = min(CAP, 1 << max(0, (n_samples - 1).bit_length()))  # no bigger than the data, rounded up
    batch = 1
    while batch * 2 <= limit and batch * 2 * per_sample <= budget:
        batch *= 2
    if device.type == "cuda":
        batch = _fit_on_gpu(adapter, rows, batch)
    return AutoBatch(batch, per_sample, budget)


def _fit_on_gpu(adapter: ModelAdapter, rows: torch.Tensor, batch: int) -> int:
    """Run the chosen batch once; halve it while the GPU runs out of memory."""
    while batch > 1:
        try:
            _saved_bytes(adapter, rows[torch.arange(batch, device=rows.device) % len(rows)])
            return batch
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            torch.cuda.empty_cache()
            batch //= 2
    return batch
