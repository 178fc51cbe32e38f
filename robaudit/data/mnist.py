"""The MNIST test set shipped with robaudit, read from its gzipped idx files."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

from robaudit.data.dataset import MNIST_NAME, MNIST_SHAPE, Dataset
from robaudit.errors import InputError
from robaudit.hashing import sha256_of


def _read_idx(raw: bytes, magic: int) -> np.ndarray:
    header_magic = int.from_bytes(raw[0:4], "big")
    if header_magic != magic:
        raise InputError(f"bundled MNIST: bad idx magic {header_magic}; reinstall robaudit")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def open_mnist() -> Dataset:
    """The MNIST test set shipped with robaudit (10,000 images, CC BY-SA 3.0, LeCun, Cortes & Burges)."""
    folder = resources.files("robaudit.data") / "mnist"
    files = [folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"]
    packed = [f.read_bytes() for f in files]
    images = _read_idx(gzip.decompress(packed[0]), 2051)
    labels = _read_idx(gzip.decompress(packed[1]), 2049).astype(np.int64)
    digest = sha256_of(packed)
    return Dataset(
        description="bundled MNIST test set (10000 images, 1x28x28)",
        path=MNIST_NAME,
        labels=labels,
        sample_shape=MNIST_SHAPE,
        layout="nhw",
        dtype=np.dtype(np.uint8),
        read=lambda idx: images[idx],
        sha256=digest,
        class_names=[str(i) for i in range(10)],
    )
