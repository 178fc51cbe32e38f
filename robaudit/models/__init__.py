"""Load a classifier file into a ModelHandle, then bind it to data to get a ModelAdapter."""

from robaudit.models.base import Capabilities, ModelAdapter, Preprocessing
from robaudit.models.loading import ModelHandle, load_model, resolve_device

__all__ = ["Capabilities", "ModelAdapter", "ModelHandle", "Preprocessing", "load_model", "resolve_device"]
