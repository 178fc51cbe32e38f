"""Arrays as datasets: an .npz with images and labels, or a pair of .npy files, memory-mapped where the
file allows it, with the checks that refuse decompression bombs and crafted headers."""

from __future__ import annotations

import contextlib
import math
import mmap
import zipfile
from pathlib import Path

import numpy as np

from robaudit.data.dataset import Dataset
from robaudit.errors import InputError
from robaudit.hashing import sha256_of


def _infer_layout(
    path: str, field_name: str, shape: tuple[int, ...], expected: tuple[int, int, int] | None
) -> tuple[str, tuple[int, int, int]]:
    """Decide the stored layout from the array shape and, when known, the model's (C, H, W)."""
    per = tuple(int(d) for d in shape[1:])
    sample: tuple[int, int, int]
    if len(per) == 2:
        layout, sample = "nhw", (1, per[0], per[1])
    elif len(per) == 3:
        if expected is not None and tuple(per) == expected:
            layout, sample = "nchw", (per[0], per[1], per[2])
        elif expected is not None and (per[2], per[0], per[1]) == expected:
            layout, sample = "nhwc", (per[2], per[0], per[1])
        elif per[-1] in (1, 3, 4) and per[0] not in (1, 3, 4):
            layout, sample = "nhwc", (per[2], per[0], per[1])
        else:
            layout, sample = "nchw", (per[0], per[1], per[2])
    else:
        raise InputError(
            f"{path}: {field_name} has shape {shape}; expected images as (N, H, W), (N, C, H, W) or (N, H, W, C)"
        )
    if expected is not None and sample != expected:
        raise InputError(
            f"{path}: {field_name} holds images of shape {'x'.join(map(str, sample))} (C x H x W) but the model "
            f"takes {'x'.join(map(str, expected))}; pass data that match the model's input"
        )
    return layout, sample


def _check_dtype(path: str, field_name: str, dtype: np.dtype, notes: list[str]) -> None:
    if dtype == np.float64:
        notes.append(f"{path}: {field_name} is float64; cast to float32 for the model")
    elif not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise InputError(
            f"{path}: {field_name} has dtype {dtype}; store pixels as uint8 (0..255) or float (in --input-range)"
        )


def _labels(path: str, field_name: str, y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == np.bool_):
        raise InputError(
            f"{path}: {field_name} holds {y.dtype} values, not numbers; store class indices 0..K-1 "
            f"(map class names to indices in the model's order)"
        )
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot, or per-class scores
        blank = np.flatnonzero(y.max(1) <= 0) if y.shape[0] else np.empty(0, np.int64)
        if blank.size:
            raise InputError(
                f"{path}: {field_name} row {int(blank[0])} of its one-hot labels has no positive entry; "
                f"give every sample a class"
            )
        y = y.argmax(1)
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise InputError(
            f"{path}: {field_name} has {y.shape[0]} labels for {n} images; give one label per image"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError(f"{path}: {field_name} holds non-integer labels; store class indices 0..K-1")
    return y.astype(np.int64)


# A compressed .npz member may expand at most this much (image data compress 2-10x; zeros up to ~1000x),
# and to at most this many bytes, before robaudit refuses it as a likely decompression bomb.
MAX_COMPRESSION_RATIO = 200
MAX_DECOMPRESSED_BYTES = 16 << 30
_RATIO_EXEMPT_BYTES = 64 << 20  # small members may compress as well as they like


def _check_decompression(path: Path, info: zipfile.ZipInfo) -> None:
    if info.file_size > MAX_DECOMPRESSED_BYTES:
        raise InputError(
            f"{path}: {info.filename} expands to {info.file_size / 2**30:.1f} GiB, over robaudit's "
            f"{MAX_DECOMPRESSED_BYTES >> 30} GiB limit; pass a smaller file or use --limit on an uncompressed .npz"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_EXEMPT_BYTES and ratio > MAX_COMPRESSION_RATIO:
        raise InputError(
            f"{path}: {info.filename} would expand {ratio:.0f}x ({info.file_size / 2**20:.0f} MiB), which looks like "
            "a decompression bomb; save real data with numpy.savez"
        )


def _memmap_npz_member(path: Path, member: str) -> np.ndarray:
    """Memory-map an uncompressed .npy member of an .npz; load it when compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type == zipfile.ZIP_STORED:
            with path.open("rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                fh.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                if not dtype.hasobject:
                    return np.memmap(
                        path,
                        dtype=dtype,
                        mode="r",
                        offset=fh.tell(),
                        shape=shape,
                        order="F" if fortran else "C",
                    )
        _check_decompression(path, info)
        with zf.open(member) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            if dtype.hasobject:
                raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise InputError(
                    f"{path}: {member} declares a {'x'.join(map(str, shape))} {dtype} array, more bytes than it "
                    "stores; the file is corrupt or crafted; save it again with numpy.savez"
                )
        with zf.open(member) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)


DEFAULT_NPZ_KEYS = ("x", "y")


def _xy_names(members: set[str]) -> tuple[list[str], list[str]]:
    """An .npz's arrays named x... and y... (``x_test`` and ``y_test``, as Keras' datasets name them)."""
    return (
        sorted(m for m in members if m.lower().startswith("x")),
        sorted(m for m in members if m.lower().startswith("y")),
    )


def open_npz(path: Path, keys: tuple[str, str], expected: tuple[int, int, int] | None) -> Dataset:
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc}); save it with numpy.savez") from None
    notes: list[str] = []
    xs, ys = _xy_names(members)
    if keys == DEFAULT_NPZ_KEYS and not set(keys) <= members and len(xs) == len(ys) == 1:
        # One array of each (Keras-style x_test, y_test): read them. With more, the split is the user's choice.
        keys = (xs[0], ys[0])
        notes.append(f"{path}: no arrays named x and y; read {xs[0]} and {ys[0]}")
    xkey, ykey = keys
    for key in keys:
        if key not in members:
            raise InputError(
                f"{path}: no array named {key!r} (found {sorted(members)}); name the keys with "
                f"--npz-keys {(xs or ['IMAGES'])[0]},{(ys or ['LABELS'])[0]}"
            )
    try:
        x = _memmap_npz_member(path, xkey + ".npy")
        y = _memmap_npz_member(path, ykey + ".npy")
    except ValueError as exc:
        raise InputError(
            f"{path}: cannot read arrays ({exc}); save plain numeric arrays with numpy.savez"
        ) from None
    if not isinstance(x, np.memmap):
        notes.append(
            f"{path}: {xkey} is compressed, so it was loaded into memory; save with numpy.savez to memory-map it"
        )
    return _from_arrays(str(path), xkey, ykey, x, y, expected, sha256_of([path]), notes)


def _read_and_release(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Copy rows out of ``x``; for a memory-mapped file, then let the kernel drop the pages just read,
    so that resident memory stays flat however many samples stream through (they stay in the page
    cache, cheap to read again)."""
    rows = np.asarray(x[idx])
    mapping = getattr(x, "_mmap", None)  # numpy.memmap's mmap.mmap object
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapping.madvise(mmap.MADV_DONTNEED)
    return rows


def _from_arrays(
    path: str,
    xkey: str,
    ykey: str,
    x: np.ndarray,
    y: np.ndarray,
    expected: tuple[int, int, int] | None,
    sha: str,
    notes: list[str],
) -> Dataset:
    _check_dtype(path, xkey, x.dtype, notes)
    layout, sample = _infer_layout(path, xkey, x.shape, expected)
    labels = _labels(path, ykey, np.asarray(y), x.shape[0])
    return Dataset(
        description=f"{Path(path).name} ({len(labels)} images, {'x'.join(map(str, sample))})",
        path=path,
        labels=labels,
        sample_shape=sample,
        layout=layout,
        dtype=x.dtype,
        read=lambda idx: _read_and_release(x, idx),
        sha256=sha,
        notes=notes,
    )


def open_npy_pair(path: Path, labels_path: Path, expected: tuple[int, int, int] | None) -> Dataset:
    arrays = []
    for p in (path, labels_path):
        try:
            arrays.append(np.load(p, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{p}: not a readable .npy file ({exc}); save it with numpy.save") from None
    return _from_arrays(
        str(path),
        "images",
        f"labels ({labels_path})",
        arrays[0],
        arrays[1],
        expected,
        sha256_of([path, labels_path]),
        [],
    )
