"""``scan --surrogate MODEL``: a transfer attack, for a target whose gradients are missing or distrusted.

Each gradient attack of the run also runs as ``transfer:ATTACK``: the attack searches on the surrogate
(its gradients, its preprocessing), and the candidates it returns are then treated like any attack's by
the runner: verified against the threat model on the target's inputs and re-predicted on the target's
reference runtime (ONNX Runtime for an ONNX file). So a transfer row counts in the worst case like any
other row. The target itself is never queried by the transfer attack.

Its place in the cascade (``TRANSFER_RANK``) is after every white-box gradient attack of the registry
and before the query-based ones (square, onepixel, art): the samples a transfer row newly fools are then
exactly those every white-box attack of its stage missed, which is what the ``transfer-beats-white-box``
flag counts (``checks.flags.transfer_beats_white_box``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from robaudit.errors import InputError, UsageError

if TYPE_CHECKING:  # torch and the models load with the audit; the gate's plan only needs the names
    import torch

    from robaudit.attacks.base import Attack, LogitsFn
    from robaudit.config import AuditConfig
    from robaudit.models import ModelAdapter, ModelHandle

TRANSFER_PREFIX = "transfer:"
# fgsm 0, pgd 10, apgd 20, apgd-t 30 (white-box) < transfer < square 50, onepixel 70, art 90 (queries)
TRANSFER_RANK = 40


@dataclass(frozen=True)
class TransferAttack:
    """``inner`` run on the surrogate; the target's logits the runner passes in are ignored."""

    inner: Attack
    surrogate: ModelAdapter
    cost_rank: int = TRANSFER_RANK

    @property
    def name(self) -> str:
        return TRANSFER_PREFIX + self.inner.name

    @property
    def needs_gradients(self) -> bool:
        return False  # of the target: the runner hands it the reference runtime, which it does not use

    @property
    def norms(self) -> tuple[str, ...]:
        return tuple(self.inner.norms)

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
        device = self.surrogate.device
        x_adv = self.inner(
            self.surrogate.logits,
            x.to(device),
            y.to(device),
            eps=eps,
            norm=norm,
            seeds=seeds.to(device),
            targets=None if targets is None else targets.to(device),
        )
        return x_adv.detach().to(x.device, x.dtype)


def is_transfer(name: str) -> bool:
    return name.startswith(TRANSFER_PREFIX)


def load_surrogate(
    config: AuditConfig, sample_shape: tuple[int, ...], probe: torch.Tensor, num_classes: int
) -> tuple[ModelAdapter, ModelHandle]:
    """The surrogate bound to the target's samples, with the target's preprocessing options; a one-line
    error when it cannot serve (missing, no gradients, another number of classes)."""
    from robaudit.models import load_model, resolve_device

    path = config.model.surrogate
    assert path is not None
    if not path.exists():
        raise InputError(f"--surrogate {path}: no such model file; give an existing .onnx or .pt file")
    own = config.model_copy(
        update={"model": config.model.model_copy(update={"path": path, "surrogate": None})}
    )
    handle = load_model(own, resolve_device(config.run.device))
    try:
        adapter = handle.bind(sample_shape, probe)  # type: ignore[arg-type]
        if not adapter.capabilities.gradients:
            raise UsageError(
                f"--surrogate {path}: {adapter.capabilities.gradient_note}; a surrogate must be differentiable, "
                "give a PyTorch file or an ONNX file that converts"
            )
        if adapter.num_classes != num_classes:
            raise UsageError(
                f"--surrogate {path}: has {adapter.num_classes} classes and the model {num_classes}; give a "
                "surrogate with the same classes"
            )
    except BaseException:
        handle.restore()
        raise
    return adapter, handle


def transfer_attacks(attacks: list[Attack], surrogate: ModelAdapter) -> list[TransferAttack]:
    """One transfer attack per gradient attack of the run (a gradient-free attack gains nothing from a
    surrogate: it could query the target directly)."""
    return [TransferAttack(a, surrogate) for a in attacks if a.needs_gradients]
