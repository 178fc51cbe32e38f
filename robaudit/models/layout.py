"""``--channels-last``: lay a model's convolution weights out channels-last for the audit.

oneDNN runs some models much faster that way on the CPU and some slower. Measured on a 2-core Xeon:
the sample LeNet's forward+backward pass took 0.029 s channels-last against 0.042 s (batch 250), and a
PGD-40 scan of its ONNX export 3.0 to 3.4 s against 4.3 to 4.6 s; a CIFAR-10 ResNet-18's pass took
0.039 s against 0.035 s (batch 32). So it is the user's choice, not a default. Choosing it by timing
each run would make two runs of the same audit differ in the last bits of their confidences, since the
two layouts round differently; an audit must be reproducible. The layout changes how fast the model
runs, not what it computes beyond float rounding.
"""

from __future__ import annotations

import torch
from torch import nn


def use_channels_last(module: object) -> bool:
    """Switch ``module``'s 4-D weights to channels-last; return whether it did. The caller restores the
    layout of a user's module afterwards (see ``torch_model._Frozen``)."""
    if not isinstance(module, nn.Module) or not any(p.ndim == 4 for p in module.parameters()):
        return False
    try:
        module.to(memory_format=torch.channels_last)
    except Exception:  # noqa: BLE001 - a module that refuses keeps its layout; only speed is lost
        return False
    return True
