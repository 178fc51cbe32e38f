"""Image folders as datasets: ``root/<class>/<image>``, labelled by class folder as torchvision's
ImageFolder labels them, decoded with Pillow on demand and optionally resized."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from robaudit.data.dataset import Dataset
from robaudit.errors import InputError
from robaudit.hashing import sha256_of

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


def _find_images(root: Path) -> tuple[list[str], list[str], list[Path], list[int], list[str]]:
    """The class folders under ``root``, the class names by label, every image file with its label, and
    notes on how labels were assigned and on files skipped as not images."""
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
    return classes, class_names, files, labels, notes


def _read_headers(files: list[Path]) -> tuple[list[str], dict[tuple[int, int], Path]]:
    """Every file's header, before any attack: a file that is not an image, or (without --resize) one
    whose size differs, stops the run now rather than partway through. Headers only: about 20 us a file.
    Returns each image's mode and the first image of each (width, height)."""
    modes: list[str] = []
    first_of_size: dict[tuple[int, int], Path] = {}
    for p in files:
        with _pillow_image(p) as im:
            modes.append(im.mode)
            first_of_size.setdefault(im.size, p)
    return modes, first_of_size


def _channels(root: Path, modes: list[str], expected: tuple[int, int, int] | None, notes: list[str]) -> int:
    """The channels to read: the model's when it declares them (noting the images converted to them);
    with no declared shape, grey when most images are grey, else RGB (palette images included)."""
    grey = sum(mode in _GREY_MODES for mode in modes)
    if expected is not None:
        converted = len(modes) - grey if expected[0] == 1 else grey
        if converted:
            kind, into = ("colour", "greyscale") if expected[0] == 1 else ("greyscale", "RGB")
            notes.append(
                f"{root}: {converted} of {len(modes)} images are {kind}; converted to {into}, as the model "
                f"takes {expected[0]} channel{'s' if expected[0] != 1 else ''}"
            )
        return expected[0]
    channels = 1 if grey * 2 > len(modes) else 3
    if 0 < grey < len(modes):
        notes.append(
            f"{root}: {grey} of {len(modes)} images are greyscale and the rest colour; all are read as "
            f"{'greyscale' if channels == 1 else 'RGB'}, as most are"
        )
    return channels


def _decode(p: Path, channels: int, resize: tuple[int, int] | None) -> np.ndarray:
    """One image's pixels, (H, W) for grey or (H, W, 3), brought to ``resize`` when given."""
    with _pillow_image(p) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise InputError(
                f"{p}: {im.mode} images (16-bit or float) are not supported; save 8-bit PNG or JPEG"
            )
        converted = im.convert("L" if channels == 1 else "RGB")
        return np.asarray(converted if resize is None else cover_and_crop(converted, resize))


def _check_sizes(
    files: list[Path],
    first: np.ndarray,
    sample: tuple[int, int, int],
    expected: tuple[int, int, int] | None,
    resize: tuple[int, int] | None,
    first_of_size: dict[tuple[int, int], Path],
) -> None:
    """Refuse a first image (of ``sample`` (C, H, W)) the model cannot take, and (without --resize)
    images of several sizes."""
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


def _reader(
    files: list[Path], first: np.ndarray, channels: int, resize: tuple[int, int] | None
) -> Callable[[np.ndarray], np.ndarray]:
    """``read(indices)`` for the folder: the images decoded and stacked, each checked to have the first
    image's shape."""

    def read(idx: np.ndarray) -> np.ndarray:
        out = [np.empty((0, *first.shape), dtype=first.dtype)]  # an empty selection reads as no rows
        for i in idx:
            img = _decode(files[int(i)], channels, resize)
            if img.shape != first.shape:
                raise InputError(
                    f"{files[int(i)]}: image has shape {img.shape}, unlike {files[0].name}'s {first.shape}; "
                    f"give all images the model's input size, or pass --resize HEIGHT,WIDTH"
                )
            out.append(img[None])
        return np.concatenate(out)

    return read


def _folder_digest_parts(root: Path, files: list[Path], labels: list[int]) -> Iterator[Path | bytes]:
    """What an image folder's digest covers: each image's path inside the folder and its label as well
    as its bytes, so that moving an image to another class folder changes the data."""
    for p, label in zip(files, labels, strict=True):
        yield f"{p.relative_to(root).as_posix()}\0{label}\0".encode()
        yield p


def open_image_folder(
    root: Path, expected: tuple[int, int, int] | None, resize: tuple[int, int] | None = None
) -> Dataset:
    """An ImageFolder-style dataset (``root/<class>/<image>``) of 8-bit images, read as uint8, brought to
    ``resize`` (height, width) when given."""
    classes, class_names, files, labels, notes = _find_images(root)
    modes, first_of_size = _read_headers(files)
    channels = _channels(root, modes, expected, notes)
    first = _decode(files[0], channels, resize)
    sample = (channels, first.shape[0], first.shape[1])
    _check_sizes(files, first, sample, expected, resize, first_of_size)
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
        layout="nhw" if first.ndim == 2 else "nhwc",
        dtype=np.dtype(np.uint8),
        read=_reader(files, first, channels, resize),
        sha256=sha256_of(_folder_digest_parts(root, files, labels)),
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
