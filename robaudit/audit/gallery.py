"""Adversarial examples as small PNG data URIs, so a report (and its JSON) carries its own pictures."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_data_uri(image: np.ndarray) -> str:
    """(C, H, W) on [0, 1], C in {1, 3} -> ``data:image/png;base64,...`` (greyscale or RGB)."""
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    if pixels.shape[0] == 1:
        picture = Image.fromarray(pixels[0], mode="L")
    else:
        picture = Image.fromarray(np.ascontiguousarray(pixels[:3].transpose(1, 2, 0)), mode="RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def magnified_perturbation(x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
    """|x_adv - x| scaled so the largest change is white: the perturbation made visible."""
    delta = np.abs(x_adv.astype(np.float64) - x.astype(np.float64))
    peak = float(delta.max())
    return delta / peak if peak > 0 else delta
