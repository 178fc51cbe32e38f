"""Fuzzing the data loaders: whatever the bytes or arrays, a loader returns a dataset or raises a one-line
InputError. Nothing else may escape (it would reach the user as an internal error)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robaudit.data import open_dataset
from robaudit.errors import InputError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_and_read(spec: Path, labels: Path | None = None) -> None:
    try:
        ds = open_dataset(str(spec), labels=labels)
        ds.validate((0.0, 1.0), num_classes=10)
        ds.to_unit(ds.read(np.arange(min(len(ds), 4))), (0.0, 1.0))
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc)


arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.int16, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=6),
    elements=None,
)


@FUZZ
@given(x=arrays, y=arrays, compress=st.booleans())
def test_any_pair_of_arrays_in_an_npz(x: np.ndarray, y: np.ndarray, compress: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        (np.savez_compressed if compress else np.savez)(path, x=x, y=y)
        load_and_read(path)


@FUZZ
@given(x=arrays, y=arrays)
def test_any_pair_of_npy_files(x: np.ndarray, y: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        xp, yp = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(xp, x)
        np.save(yp, y)
        load_and_read(xp, yp)


@FUZZ
@given(blob=st.binary(max_size=600), member=st.sampled_from(["x.npy", "y.npy", "z"]))
def test_arbitrary_bytes_as_npz_members(blob: bytes, member: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(member, blob)
            labels = io.BytesIO()
            np.save(labels, np.zeros(3, np.int64))
            zf.writestr("y.npy" if member != "y.npy" else "x.npy", labels.getvalue())
        load_and_read(path)


@FUZZ
@given(blob=st.binary(max_size=2000))
def test_arbitrary_bytes_as_files(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("d.npz", "d.npy"):
            path = Path(tmp) / name
            path.write_bytes(blob)
            load_and_read(path, Path(tmp) / "d.npy" if name == "d.npy" else None)
        folder = Path(tmp) / "imgs" / "0"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(blob)
        load_and_read(Path(tmp) / "imgs")


@FUZZ
@given(prefix=st.integers(1, 400))
def test_truncated_real_png(prefix: int) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(buffer, format="PNG")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs" / "1"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(buffer.getvalue()[:prefix])
        load_and_read(Path(tmp) / "imgs")
