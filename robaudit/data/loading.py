"""Open the dataset ``--data`` names: the bundled MNIST, an .npz, an .npy pair or an image folder."""

from __future__ import annotations

from pathlib import Path

from robaudit.data.arrays import open_npy_pair, open_npz
from robaudit.data.dataset import MNIST_NAME, MNIST_SHAPE, Dataset
from robaudit.data.folders import open_image_folder
from robaudit.data.mnist import open_mnist
from robaudit.errors import InputError, UsageError


def open_dataset(
    spec: str,
    *,
    labels: Path | None = None,
    npz_keys: tuple[str, str] = ("x", "y"),
    expected_shape: tuple[int, int, int] | None = None,
    resize: tuple[int, int] | None = None,
) -> Dataset:
    """Open ``spec``: ``mnist``, an .npz, an .npy (with ``labels``), or an image folder (whose images
    ``resize`` brings to (height, width))."""
    path = Path(spec)
    if resize is not None and not path.is_dir():
        raise UsageError(
            f"--resize: applies to image folders, and --data {spec} holds arrays; resize them before saving"
        )
    if spec == MNIST_NAME:
        ds = open_mnist()
        if expected_shape is not None and expected_shape != MNIST_SHAPE:
            raise InputError(
                f"--data mnist: MNIST images are 1x28x28 but the model takes "
                f"{'x'.join(map(str, expected_shape))}; pass --data with images of the model's input shape"
            )
        return ds
    if not path.exists():
        raise InputError(
            f"--data {spec}: no such file or folder; give an .npz, an .npy, an image folder or 'mnist'"
        )
    if path.is_dir():
        return open_image_folder(path, expected_shape, resize)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return open_npz(path, npz_keys, expected_shape)
    if suffix == ".npy":
        if labels is None:
            raise InputError(
                f"--data {spec}: an .npy file holds no labels; pass them with --labels labels.npy"
            )
        return open_npy_pair(path, labels, expected_shape)
    raise InputError(
        f"--data {spec}: unknown data format {suffix or '(no suffix)'}; give an .npz, an .npy, an image folder or 'mnist'"
    )
