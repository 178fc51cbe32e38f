"""Open a dataset without loading it whole, validate it against the model, stream it in batches.

Pixels are returned on the [0, 1] scale, NCHW, float32: uint8 data are read as 0..255, float data
in the declared data range (``--data-range``, by default the model's ``--input-range``). eps is
measured on that [0, 1] scale.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import mmap
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from robaudit.errors import InputError, UsageError

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


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _sha256_folder(root: Path, files: list[Path], labels: list[int]) -> str:
    """An image folder's digest covers each image's path inside the folder and its label as well as its
    bytes: moving an image to another class folder changes the data."""
    digest = hashlib.sha256()
    for p, label in zip(files, labels, strict=True):
        digest.update(f"{p.relative_to(root).as_posix()}\0{label}\0".encode())
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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


def _open_npz(path: Path, keys: tuple[str, str], expected: tuple[int, int, int] | None) -> Dataset:
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
    if isinstance(x, np.memmap):
        notes.append(f"{path}: {xkey} is memory-mapped")
    else:
        notes.append(
            f"{path}: {xkey} is compressed, so it was loaded into memory; save with numpy.savez to memory-map it"
        )
    return _from_arrays(str(path), xkey, ykey, x, y, expected, _sha256_files([path]), notes)


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


def _open_npy_pair(path: Path, labels_path: Path, expected: tuple[int, int, int] | None) -> Dataset:
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
        _sha256_files([path, labels_path]),
        [f"{path}: memory-mapped"],
    )


# torchvision's ImageFolder reads these suffixes (its IMG_EXTENSIONS), and GIF besides.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
# Files operating systems and tools leave beside images; skipped without a note.
_LITTER = {"thumbs.db", "desktop.ini"}
_GREY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")


def _skipped(rel: Path) -> bool:
    """Hidden files and folders (``.DS_Store``, macOS's ``._name`` copies, ``.ipynb_checkpoints``) and
    archive litter (``__MACOSX``) are not part of a dataset."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _class_labels(root: Path, classes: list[str]) -> tuple[list[int], list[str], str]:
    """Each class folder's label, the class names by label, and a note saying how they were assigned.

    Folders named by number (``0``..``9``, or only ``3`` and ``7``) keep their numbers as labels: a model
    trained on all ten digits calls the ``7`` folder class 7, whichever other folders are present, and
    ``10`` comes after ``9``. Other names are numbered in sorted order, as torchvision's ImageFolder does.
    """
    if all(name.isascii() and name.isdigit() for name in classes):
        labels = [int(name) for name in classes]
        if len(set(labels)) == len(labels):
            names = [str(i) for i in range(max(labels) + 1)]
            if labels == list(range(len(classes))):  # ``classes`` is sorted: numbers and positions agree
                return labels, names, ""
            return (
                labels,
                names,
                (
                    f"{root}: class folders are named by number, so each folder's number is its label "
                    f"({', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''})"
                ),
            )
    shown = ", ".join(f"{name}={k}" for k, name in enumerate(classes[:12]))
    return (
        list(range(len(classes))),
        list(classes),
        (
            f"{root}: labels follow the sorted class folder names, as in torchvision's ImageFolder: "
            f"{shown}{', ...' if len(classes) > 12 else ''}"
        ),
    )


@contextlib.contextmanager
def _pillow_image(path: Path) -> Iterator[Any]:
    """``PIL.Image.open(path)``, with Pillow's refusals turned into one line naming the file (reading
    the pixels inside the block is covered too: a truncated file fails only then)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            yield image
    except Image.DecompressionBombError:
        raise InputError(
            f"{path}: decodes to more pixels than Pillow's decompression-bomb limit allows; remove it, or "
            "resize it to the model's input size"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}); remove or replace it") from None


def _open_image_folder(
    root: Path, expected: tuple[int, int, int] | None, resize: tuple[int, int] | None = None
) -> Dataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _skipped(Path(p.name)))
    if not classes:
        raise InputError(f"{root}: no class subfolders; lay images out as {root}/<class>/<image>.png")
    class_labels, class_names, mapping_note = _class_labels(root, classes)
    files: list[Path] = []
    labels: list[int] = []
    other_suffixes: dict[str, int] = {}
    for label, name in zip(class_labels, classes, strict=True):
        found = []
        for p in (root / name).rglob("*"):
            if _skipped(p.relative_to(root)) or not p.is_file() or p.name.lower() in _LITTER:
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:
                found.append(p)
            else:
                other_suffixes[p.suffix.lower() or "(none)"] = (
                    other_suffixes.get(p.suffix.lower() or "(none)", 0) + 1
                )
        found.sort()
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        raise InputError(
            f"{root}: no images in its class subfolders; robaudit reads {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    notes = [mapping_note] if mapping_note else []
    if other_suffixes:
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in sorted(other_suffixes.items()))
        notes.append(
            f"{root}: skipped {sum(other_suffixes.values())} files that are not images ({kinds}); robaudit "
            f"reads {', '.join(sorted(IMAGE_SUFFIXES))}"
        )

    # Every file's header, before any attack: a file that is not an image, or (without --resize) one
    # whose size differs, stops the run now rather than partway through. Headers only: about 20 us a file.
    modes: list[str] = []
    first_of_size: dict[tuple[int, int], Path] = {}
    for p in files:
        with _pillow_image(p) as im:
            modes.append(im.mode)
            first_of_size.setdefault(im.size, p)

    if expected is not None:
        channels = expected[0]
    else:  # no declared shape: grey when most images are grey, else RGB (palette images included)
        grey = sum(mode in _GREY_MODES for mode in modes)
        channels = 1 if grey * 2 > len(modes) else 3
        if 0 < grey < len(modes):
            notes.append(
                f"{root}: {grey} of {len(modes)} images are greyscale and the rest colour; all are read as "
                f"{'greyscale' if channels == 1 else 'RGB'}, as most are"
            )

    def open_image(p: Path) -> np.ndarray:
        with _pillow_image(p) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise InputError(
                    f"{p}: {im.mode} images (16-bit or float) are not supported; save 8-bit PNG or JPEG"
                )
            converted = im.convert("L" if channels == 1 else "RGB")
            return np.asarray(converted if resize is None else cover_and_crop(converted, resize))

    first = open_image(files[0])
    layout = "nhw" if first.ndim == 2 else "nhwc"
    sample = (channels, first.shape[0], first.shape[1])
    if expected is not None and sample != expected:
        how = (
            f"pass --resize {expected[1]},{expected[2]}"
            if resize is None
            else f"pass --resize {expected[1]},{expected[2]}, the model's input size"
        )
        raise InputError(
            f"{files[0]}: image is {first.shape[1]}x{first.shape[0]} pixels{' after --resize' if resize else ''} "
            f"but the model takes {expected[2]}x{expected[1]}; {how}"
        )
    if resize is None and len(first_of_size) > 1:
        base = (first.shape[1], first.shape[0])
        (width, height), odd = next((size, p) for size, p in first_of_size.items() if size != base)
        raise InputError(
            f"{odd}: image is {width}x{height} pixels, unlike {files[0].name}'s {base[0]}x{base[1]} "
            f"({len(first_of_size)} sizes in the folder); give all images the model's input size, or pass --resize "
            f"HEIGHT,WIDTH"
        )

    def read(idx: np.ndarray) -> np.ndarray:
        out = [np.empty((0, *first.shape), dtype=first.dtype)]  # an empty selection reads as no rows
        for i in idx:
            img = open_image(files[int(i)])
            if img.shape != first.shape:
                raise InputError(
                    f"{files[int(i)]}: image has shape {img.shape}, unlike {files[0].name}'s {first.shape}; "
                    f"give all images the model's input size, or pass --resize HEIGHT,WIDTH"
                )
            out.append(img[None])
        return np.concatenate(out)

    if resize:
        notes.append(
            f"{root}: images resized to {resize[0]}x{resize[1]} (height x width): shorter side scaled to "
            f"cover it, then centre-cropped, bilinear; eps applies to the resized images"
        )
    return Dataset(
        description=f"{root} ({len(files)} images in {len(classes)} classes)",
        path=str(root),
        labels=np.asarray(labels, dtype=np.int64),
        sample_shape=sample,
        layout=layout,
        dtype=np.dtype(np.uint8),
        read=read,
        sha256=_sha256_folder(root, files, labels),
        class_names=class_names,
        notes=notes,
    )


def cover_and_crop(image: Any, size: tuple[int, int]) -> Any:
    """``image`` (a PIL image) scaled so that it covers ``size`` (height, width), keeping its aspect
    ratio, then centre-cropped to it: torchvision's Resize + CenterCrop when the target is square.
    Bilinear with Pillow's antialiasing, so a large image is not aliased on its way down."""
    from PIL import Image

    height, width = size
    scale = max(height / image.height, width / image.width)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BILINEAR)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


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
    images = _read_idx(gzip.decompress(files[0].read_bytes()), 2051)
    labels = _read_idx(gzip.decompress(files[1].read_bytes()), 2049).astype(np.int64)
    digest = hashlib.sha256(files[0].read_bytes() + files[1].read_bytes()).hexdigest()
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
        return _open_image_folder(path, expected_shape, resize)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _open_npz(path, npz_keys, expected_shape)
    if suffix == ".npy":
        if labels is None:
            raise InputError(
                f"--data {spec}: an .npy file holds no labels; pass them with --labels labels.npy"
            )
        return _open_npy_pair(path, labels, expected_shape)
    raise InputError(
        f"--data {spec}: unknown data format {suffix or '(no suffix)'}; give an .npz, an .npy, an image folder or 'mnist'"
    )
