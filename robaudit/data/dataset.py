"""The Dataset type: a labelled image set read lazily, validated against the model, streamed in batches.

Pixels are returned on the [0, 1] scale, NCHW, float32: uint8 data are read as 0..255, float data
in the declared data range (``--data-range``, by default the model's ``--input-range``). eps is
measured on that [0, 1] scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from robaudit.errors import InputError

# What ``--data`` calls the bundled MNIST test set (see ``mnist``), and the shape of its images.
MNIST_NAME = "mnist"
MNIST_SHAPE = (1, 28, 28)


@dataclass
class Dataset:
    """A labelled image set read lazily. ``read(indices)`` returns stored pixels in ``layout``."""

    description: str
    path: str
    labels: np.ndarray
    sample_shape: tuple[int, int, int]
    layout: str  # "nchw", "nhwc" or "nhw" (greyscale without a channel axis)
    dtype: np.dtype
    read: Callable[[np.ndarray], np.ndarray]
    sha256: str
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to_unit(self, raw: np.ndarray, data_range: tuple[float, float]) -> np.ndarray:
        """Stored pixels -> float32 NCHW on [0, 1]."""
        if raw.dtype == np.uint8:
            x = raw.astype(np.float32) / 255.0
        else:
            lo, hi = data_range
            x = (raw.astype(np.float32) - lo) / (hi - lo)
        if self.layout == "nhw":
            x = x[:, None, :, :]
        elif self.layout == "nhwc":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def batches(
        self, indices: np.ndarray, batch_size: int, data_range: tuple[float, float]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (indices, x on [0, 1] NCHW float32, y int64), reading only one batch at a time."""
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            yield idx, self.to_unit(self.read(idx), data_range), self.labels[idx].astype(np.int64)

    def validate(
        self,
        data_range: tuple[float, float],
        num_classes: int | None,
        pixels: bool = True,
        batch_size: int = 4096,
    ) -> None:
        """Labels in the model's classes (when known); with ``pixels``, one streaming pass checking that
        float pixels are finite and inside ``data_range``, with a note when a wide range (0..255) holds
        only pixels in [0, 1]."""
        bad = np.flatnonzero((self.labels < 0) | (num_classes is not None and self.labels >= num_classes))
        if bad.size and num_classes is None:
            raise InputError(
                f"{self.path}: label {int(self.labels[bad[0]])} at sample {int(bad[0])} is negative; "
                f"labels must be class indices 0..K-1"
            )
        if bad.size:
            label = int(self.labels[bad[0]])
            named = (
                f" (class {self.class_names[label]!r})"
                if self.class_names and label < len(self.class_names)
                else ""
            )
            raise InputError(
                f"{self.path}: label {label}{named} at sample {int(bad[0])} is outside the "
                f"model's {num_classes} classes (0..{(num_classes or 0) - 1}); fix the labels or use the matching model"
            )
        if not pixels or self.dtype == np.uint8:
            return  # uint8 is 0..255 by construction, always finite
        lo, hi = data_range
        tol = 1e-6 * (hi - lo)
        low, high = math.inf, -math.inf
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            raw = np.asarray(self.read(idx))
            finite = np.isfinite(raw)
            if not finite.all():
                where = int(idx[np.flatnonzero(~finite.reshape(len(idx), -1).all(1))[0]])
                raise InputError(
                    f"{self.path}: sample {where} has NaN or Inf pixels; remove or repair those samples"
                )
            low, high = min(low, float(raw.min())), max(high, float(raw.max()))
            if low < lo - tol or high > hi + tol:
                # The data's scale is declared with --data-range; --input-range is the model's (and the
                # data's too when --data-range is not given), so advise the flag that changes only the data.
                fix = "0,255" if high > 2.0 and hi <= 1.0 else "LOW,HIGH with the range the pixels really use"
                raise InputError(
                    f"{self.path}: float pixel values span [{low:g}, {high:g}], outside the data range "
                    f"{lo:g},{hi:g}; pass --data-range {fix} (the model's own input scale stays --input-range)"
                )
        if len(self) and hi - lo > 2.0 and high <= lo + 1.0:
            self.notes.append(
                f"{self.path}: every float pixel lies in [{low:g}, {high:g}], though the data range is "
                f"{lo:g},{hi:g}; if the pixels are on [0, 1], pass --data-range 0,1 (the model's input "
                f"scale stays --input-range)"
            )


def stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """A seeded subset of ``limit`` indices with each class in proportion, returned sorted."""
    n = labels.shape[0]
    if limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * limit / n
    take = np.floor(quota).astype(int)
    # Largest remainders get the leftover places; ties broken by class order for determinism.
    leftover = limit - int(take.sum())
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:leftover]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))
