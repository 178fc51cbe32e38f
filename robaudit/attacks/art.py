"""Pass-through to any evasion attack of the Adversarial Robustness Toolbox (ART), as ``art:ClassName``.

ART is optional (``pip install 'robaudit[art]'``) and imported only when such an attack runs. The
native attacks stay the fast path; this gives users ART's breadth on the same model, data and
verification. ART works on numpy arrays and draws from numpy's global random state, so its results
are seeded from the batch's first sample seed and, unlike the native attacks, may depend on batching.

Threat model: whatever the ART class implements. When the class takes ``eps`` and ``norm`` they are
set from the run's threat model unless the user's keyword arguments give them; the candidate is
then projected onto the eps-ball and the bounds, so an ART attack with a looser notion of the budget
cannot report a success outside it. The runner verifies the result like any other attack's.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from robaudit.attacks.base import LogitsFn
from robaudit.attacks.norms import clip_to_bounds, project
from robaudit.errors import UsageError

_ART_NORMS: dict[str, float] = {"linf": float(np.inf), "l2": 2.0, "l1": 1.0}
INSTALL_HINT = "install it with: pip install 'robaudit[art]'"


class _LogitsModule(torch.nn.Module):
    """Presents robaudit's logits function as the nn.Module ART's PyTorchClassifier expects."""

    def __init__(self, fn: LogitsFn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def evasion_class(class_name: str) -> type:
    """The ART evasion attack class called ``class_name``, or a one-line UsageError."""
    try:
        from art.attacks import evasion
    except ImportError:
        raise UsageError(
            f"--attack art:{class_name}: the Adversarial Robustness Toolbox is not installed; {INSTALL_HINT}"
        ) from None
    cls = getattr(evasion, class_name, None)
    if not isinstance(cls, type):
        raise UsageError(
            f"--attack art:{class_name}: ART has no evasion attack of that name; see "
            "art.attacks.evasion for the list (e.g. art:CarliniLInfMethod, art:DeepFool)"
        )
    return cls


@dataclass(frozen=True)
class ArtAttack:
    needs_gradients: ClassVar[bool] = True  # ART's PyTorchClassifier wraps a differentiable module
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")

    class_name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the class and the keyword names now, so a typo fails before any model is loaded."""
        accepted = inspect.signature(evasion_class(self.class_name)).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
            unknown = sorted(set(self.kwargs) - set(accepted))
            if unknown:
                raise UsageError(
                    f"--attack-kwargs {self.name}: ART's {self.class_name} takes no {', '.join(unknown)}; "
                    f"it takes {', '.join(k for k in accepted if k not in ('self', 'estimator', 'classifier'))}"
                )

    @property
    def name(self) -> str:
        return f"art:{self.class_name}"

    def _build(self, classifier: Any, eps: float, norm: str, targeted: bool) -> Any:
        cls = evasion_class(self.class_name)
        accepted = inspect.signature(cls).parameters
        params = dict(self.kwargs)
        if "eps" in accepted:
            params.setdefault("eps", eps)
        if "norm" in accepted and norm in _ART_NORMS:
            params.setdefault("norm", _ART_NORMS[norm])
        if targeted:
            if "targeted" not in accepted:
                raise UsageError(f"--attack {self.name}: this ART attack has no targeted mode; drop --target")
            params["targeted"] = True
        try:
            return cls(classifier, **params)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--attack-kwargs {self.name}: ART rejects the settings ({exc})") from None

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
        if x.shape[0] == 0:
            return x.clone()
        from art.estimators.classification import PyTorchClassifier

        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        classifier = PyTorchClassifier(
            model=_LogitsModule(model),
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=tuple(x.shape[1:]),
            nb_classes=num_classes,
            clip_values=(0.0, 1.0),
            device_type="gpu" if x.is_cuda else "cpu",
        )
        attack = self._build(classifier, eps, norm, targets is not None)
        labels = (targets if targets is not None else y).cpu().numpy()
        # ART draws from numpy's global generator: seed it for a reproducible run, and give the caller's
        # state back afterwards.
        caller_state = np.random.get_state()
        np.random.seed(int(seeds[0]) & 0xFFFFFFFF)
        try:
            x_np = x.detach().cpu().numpy().astype(np.float32)
            x_adv = torch.from_numpy(
                np.asarray(attack.generate(x_np, y=np.eye(num_classes, dtype=np.float32)[labels]))
            )
        finally:
            np.random.set_state(caller_state)
        x_adv = x_adv.to(device=x.device, dtype=x.dtype)
        if norm in _ART_NORMS:
            x_adv = clip_to_bounds(x + project(x_adv - x, eps, norm))
        return x_adv.detach()
