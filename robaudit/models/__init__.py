"""Load a classifier file into a ModelHandle, then bind it to data to get a ModelAdapter.

The names below are imported on first use, not with the package: the child that checks an ONNX file
(``python -m robaudit.models.isolated``) imports this package first, and must not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robaudit.lazy import lazy_names

if TYPE_CHECKING:
    from robaudit.models.base import Capabilities, ModelAdapter, Preprocessing
    from robaudit.models.loading import ModelHandle, load_model, resolve_device

_HOMES = {
    "Capabilities": "robaudit.models.base",
    "ModelAdapter": "robaudit.models.base",
    "Preprocessing": "robaudit.models.base",
    "ModelHandle": "robaudit.models.loading",
    "load_model": "robaudit.models.loading",
    "resolve_device": "robaudit.models.loading",
}

__all__ = ["Capabilities", "ModelAdapter", "ModelHandle", "Preprocessing", "load_model", "resolve_device"]


__getattr__ = lazy_names(__name__, _HOMES)
