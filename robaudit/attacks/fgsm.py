"""FGSM (Goodfellow et al. 2015, L∞) and FGM for L2 and L1: one steepest-ascent step of size eps.

Threat model: white box, untargeted or targeted (a step down the target's cross-entropy); x on [0, 1], shape (N, C, H, W). It is PGD with one step and no
random start, and the cheapest first stage of the cascade.

Under L1 the step is the exact steepest one inside the ball and the [0, 1] box together
(``l1box.steepest_step``): the coordinates that can still move, by decreasing |gradient|, each filled to
its bound until eps is spent. The plain L1 maximiser puts all of eps on one pixel, which the box then
clips, so that eps 1, 2 and 10 gave the same point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from robaudit.attacks import l1box
from robaudit.attacks.base import LogitsFn, input_gradient
from robaudit.attacks.norms import ascent_direction, clip_to_bounds, float32_safe_eps


@dataclass(frozen=True)
class FGSM:
    name: ClassVar[str] = "fgsm"
    needs_gradients: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")

    eot: int = 0  # gradient samples averaged (EOT, for random models); 0 and 1: one

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
        if eps == 0 or x.shape[0] == 0:
            return x.clone()
        grad = input_gradient(model, x, y, targets, samples=self.eot)
        step = float32_safe_eps(eps, norm, x[0].numel())  # eps itself for L∞
        if norm == "l1":
            return clip_to_bounds(x + l1box.steepest_step(grad, x, step)).detach()
        return clip_to_bounds(x + step * ascent_direction(grad, norm)).detach()
