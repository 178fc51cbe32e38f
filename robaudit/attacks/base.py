"""The attack interface (Foolbox 3 / torchattacks style, without holding the model).

An attack proposes; the runner verifies. Attacks take images on the [0, 1] scale, NCHW, already on
the device, and return candidates of the same shape. They never call numpy inside their loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol

import torch

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


class Attack(Protocol):
    name: ClassVar[str]
    needs_gradients: ClassVar[bool]

    def __call__(
        self,
        model: LogitsFn,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float,
        norm: str,
        seeds: torch.Tensor,
    ) -> torch.Tensor:
        """Return x_adv with ``||x_adv - x||_norm <= eps`` and ``0 <= x_adv <= 1``.

        ``seeds`` holds one int64 seed per sample (from the run seed and the sample's index), so
        random choices do not depend on batch size, order or sharding.
        """
        ...


def input_gradient(model: LogitsFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d(sum of per-sample cross-entropy)/dx with torch.autograd.grad, leaving weights untouched.

    Summing (not averaging) keeps each sample's gradient independent of the batch it sits in.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad
