"""Tests for robaudit.data.dataset: opening, layout inference, validation, batching and subsets."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from robaudit.data import Dataset, open_dataset, stratified_subset
from robaudit.data.arrays import _memmap_npz_member
from robaudit.errors import InputError

ASSETS = Path(__file__).parent / "assets"
MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _assets(prefix: str) -> list[tuple[int, int, Path]]:
    """(index, label, path) for every asset named ``<prefix>_NN_L.png``, in index order."""
    out = []
    for p in sorted(ASSETS.glob(f"{prefix}_*.png")):
        _, idx, label = p.stem.split("_")
        out.append((int(idx), int(label), p))
    assert len(out) == 20, f"expected 20 {prefix} assets, found {len(out)}"
    return out


def _pixels(p: Path) -> np.ndarray:
    with Image.open(p) as im:
        return np.asarray(im).copy()


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return open_dataset("mnist")


def _read_all(ds: Dataset) -> np.ndarray:
    return ds.read(np.arange(len(ds)))


# --------------------------------------------------------------------------- bundled MNIST


def test_mnist_size_shape_and_label_counts(mnist: Dataset) -> None:
    assert len(mnist) == 10000
    assert mnist.sample_shape == (1, 28, 28)
    assert mnist.layout == "nhw"
    assert mnist.dtype == np.uint8
    assert mnist.labels.dtype == np.int64
    assert np.bincount(mnist.labels, minlength=10).tolist() == MNIST_COUNTS
    assert mnist.class_names == [str(i) for i in range(10)]
    assert re.fullmatch(r"[0-9a-f]{64}", mnist.sha256)


def test_mnist_first_20_match_asset_pngs(mnist: Dataset) -> None:
    assets = _assets("mnist")
    idx = np.array([i for i, _, _ in assets])
    np.testing.assert_array_equal(idx, np.arange(20))
    raw = mnist.read(idx)
    assert raw.shape == (20, 28, 28) and raw.dtype == np.uint8
    for i, label, p in assets:
        np.testing.assert_array_equal(
            raw[i], _pixels(p), err_msg=f"MNIST test image {i} differs from {p.name}"
        )
        assert mnist.labels[i] == label
    unit = mnist.to_unit(raw, (0.0, 1.0))
    assert unit.shape == (20, 1, 28, 28) and unit.dtype == np.float32
    np.testing.assert_allclose(unit[:, 0] * 255.0, raw.astype(np.float32), atol=1e-3)


def test_mnist_rejects_other_expected_shape() -> None:
    assert open_dataset("mnist", expected_shape=(1, 28, 28)).sample_shape == (1, 28, 28)
    with pytest.raises(InputError, match="3x32x32"):
        open_dataset("mnist", expected_shape=(3, 32, 32))


# --------------------------------------------------------------------------- .npz


def _uint8_images(n: int = 12, c: int = 3, h: int = 8, w: int = 6, seed: int = 0) -> np.ndarray:
    """uint8 NCHW images with distinct values along every axis (so a wrong transpose shows)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


@pytest.mark.parametrize("c", [1, 3])
def test_npz_layouts_give_same_unit_output(tmp_path: Path, c: int) -> None:
    nchw = _uint8_images(c=c)
    y = np.arange(len(nchw)) % 4
    variants = {"nchw": nchw, "nhwc": nchw.transpose(0, 2, 3, 1)}
    if c == 1:
        variants["nhw"] = nchw[:, 0]
    expected_unit = nchw.astype(np.float32) / 255.0
    for layout, arr in variants.items():
        path = tmp_path / f"{layout}.npz"
        np.savez(path, x=np.ascontiguousarray(arr), y=y)
        ds = open_dataset(str(path))
        assert ds.layout == layout, layout
        assert ds.sample_shape == (c, 8, 6), layout
        assert len(ds) == len(nchw)
        np.testing.assert_array_equal(ds.labels, y)
        raw = _read_all(ds)
        np.testing.assert_array_equal(raw, arr)
        unit = ds.to_unit(raw, (0.0, 1.0))
        assert unit.dtype == np.float32 and unit.flags.c_contiguous
        np.testing.assert_array_equal(unit, expected_unit, err_msg=layout)
        # The model's shape resolves the same layout.
        ds2 = open_dataset(str(path), expected_shape=(c, 8, 6))
        assert (ds2.layout, ds2.sample_shape) == (layout, (c, 8, 6))


def test_npz_nhwc_resolved_by_expected_shape(tmp_path: Path) -> None:
    # (N, 3, 4, 3) is ambiguous on its own; the model's (C, H, W) decides.
    x = np.random.default_rng(1).integers(0, 256, size=(5, 3, 4, 3), dtype=np.uint8)
    path = tmp_path / "amb.npz"
    np.savez(path, x=x, y=np.zeros(5, dtype=np.int64))
    ds = open_dataset(str(path), expected_shape=(3, 3, 4))
    assert ds.layout == "nhwc" and ds.sample_shape == (3, 3, 4)
    np.testing.assert_array_equal(
        ds.to_unit(_read_all(ds), (0, 1)), x.transpose(0, 3, 1, 2) / np.float32(255)
    )


def test_npz_uncompressed_is_memory_mapped(tmp_path: Path) -> None:
    x = _uint8_images(n=30, c=1, h=28, w=28, seed=3)
    y = np.random.default_rng(3).integers(0, 10, size=30)
    path = tmp_path / "plain.npz"
    np.savez(path, x=x, y=y)
    ds = open_dataset(str(path))
    assert isinstance(_memmap_npz_member(path, "x.npy"), np.memmap)
    assert ds.notes == []  # memory-mapping is how it should be: no note for it
    np.testing.assert_array_equal(_read_all(ds), x)
    idx = np.array([29, 0, 7, 7, 13])
    np.testing.assert_array_equal(ds.read(idx), x[idx])
    np.testing.assert_array_equal(ds.labels, y)
    assert re.fullmatch(r"[0-9a-f]{64}", ds.sha256)


def test_npz_uncompressed_float_and_fortran_order(tmp_path: Path) -> None:
    x = np.asfortranarray(np.random.default_rng(4).random((9, 3, 5, 7), dtype=np.float32))
    assert x.flags.f_contiguous and not x.flags.c_contiguous
    path = tmp_path / "fortran.npz"
    np.savez(path, x=x, y=np.arange(9))
    ds = open_dataset(str(path))
    assert ds.dtype == np.float32 and ds.sample_shape == (3, 5, 7)
    np.testing.assert_array_equal(_read_all(ds), x)
    np.testing.assert_array_equal(ds.read(np.array([8, 2])), x[[8, 2]])


def test_npz_compressed_still_works(tmp_path: Path) -> None:
    x = _uint8_images(n=10, c=3, h=32, w=32, seed=5).transpose(0, 2, 3, 1)
    y = np.arange(10)
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, x=x, y=y)
    ds = open_dataset(str(path))
    assert any("x is compressed, so it was loaded into memory" in note for note in ds.notes), ds.notes
    assert ds.layout == "nhwc" and ds.sample_shape == (3, 32, 32)
    np.testing.assert_array_equal(_read_all(ds), x)
    np.testing.assert_array_equal(ds.labels, y)


def test_npz_custom_keys(tmp_path: Path) -> None:
    x = _uint8_images(n=6, c=1, h=4, w=4)
    y = np.array([1, 0, 1, 0, 1, 0])
    path = tmp_path / "keys.npz"
    np.savez(path, images=x, targets=y)
    ds = open_dataset(str(path), npz_keys=("images", "targets"))
    np.testing.assert_array_equal(_read_all(ds), x)
    np.testing.assert_array_equal(ds.labels, y)
    with pytest.raises(InputError) as info:
        open_dataset(str(path))  # default keys x,y are absent
    assert "'x'" in str(info.value) and "--npz-keys" in str(info.value)


def test_npz_with_one_keras_style_split_is_read_and_with_several_names_the_flag(tmp_path: Path) -> None:
    x = _uint8_images(n=6, c=3, h=4, w=4).transpose(0, 2, 3, 1)
    y = np.array([[1], [0], [1], [0], [1], [0]], dtype=np.uint8)  # keras.datasets' (N, 1) labels
    path = tmp_path / "test_split.npz"
    np.savez(path, x_test=x, y_test=y)
    ds = open_dataset(str(path))
    np.testing.assert_array_equal(_read_all(ds), x)
    np.testing.assert_array_equal(ds.labels, y[:, 0])
    assert any("read x_test and y_test" in n for n in ds.notes)
    both = tmp_path / "both_splits.npz"
    np.savez(both, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(InputError, match="--npz-keys x_test,y_test"):
        open_dataset(str(both))


def test_npz_missing_label_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nolabels.npz"
    np.savez(path, x=_uint8_images(n=3), labels=np.zeros(3))
    with pytest.raises(InputError) as info:
        open_dataset(str(path))
    msg = str(info.value)
    assert "'y'" in msg and "--npz-keys" in msg and "labels" in msg


@pytest.mark.parametrize(
    "content",
    [b"this is not a zip file at all", b"", b"PK\x03\x04 truncated zip header"],
    ids=["text", "empty", "trunc"],
)
def test_npz_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match="npz"):
        open_dataset(str(path))


def test_npz_expected_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    path = tmp_path / "cifar.npz"
    np.savez(path, x=_uint8_images(n=4, c=3, h=32, w=32), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(InputError) as info:
        open_dataset(str(path), expected_shape=(1, 28, 28))
    msg = str(info.value)
    assert "3x32x32" in msg and "1x28x28" in msg


def test_npz_bad_ndim_and_dtype(tmp_path: Path) -> None:
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.zeros((4, 784), dtype=np.uint8), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(InputError, match=r"\(N, H, W\)"):
        open_dataset(str(path))
    path = tmp_path / "int32.npz"
    np.savez(path, x=np.zeros((4, 1, 4, 4), dtype=np.int32), y=np.zeros(4, dtype=np.int64))
    with pytest.raises(InputError, match="int32"):
        open_dataset(str(path))


def test_one_hot_labels_become_indices(tmp_path: Path) -> None:
    y = np.array([3, 0, 2, 1, 3, 2])
    onehot = np.eye(4, dtype=np.float32)[y]
    path = tmp_path / "onehot.npz"
    np.savez(path, x=_uint8_images(n=6, c=1), y=onehot)
    ds = open_dataset(str(path))
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (6,)
    np.testing.assert_array_equal(ds.labels, y)


def test_a_one_hot_row_without_a_class_is_refused(tmp_path: Path) -> None:
    """argmax of an all-zero row is 0: the sample would silently become class 0."""
    onehot = np.eye(4, dtype=np.float32)[[3, 0, 2, 1, 3, 2]]
    onehot[4] = 0
    path = tmp_path / "onehot.npz"
    np.savez(path, x=_uint8_images(n=6, c=1), y=onehot)
    with pytest.raises(InputError, match="row 4 of its one-hot labels has no positive entry"):
        open_dataset(str(path))


@pytest.mark.parametrize(
    "labels", [np.array(["cat", "dog"] * 2), np.array([b"3", b"1"] * 2)], ids=["str", "bytes"]
)
def test_text_labels_are_refused_in_one_line(tmp_path: Path, labels: np.ndarray) -> None:
    path = tmp_path / "names.npz"
    np.savez(path, x=_uint8_images(n=4, c=1), y=labels)
    with pytest.raises(InputError, match=f"holds {labels.dtype} values, not numbers"):
        open_dataset(str(path))


def test_column_labels_and_integral_float_labels(tmp_path: Path) -> None:
    path = tmp_path / "col.npz"
    np.savez(path, x=_uint8_images(n=4, c=1), y=np.array([[2.0], [0.0], [1.0], [2.0]]))
    ds = open_dataset(str(path))
    np.testing.assert_array_equal(ds.labels, [2, 0, 1, 2])
    assert ds.labels.dtype == np.int64
    path = tmp_path / "frac.npz"
    np.savez(path, x=_uint8_images(n=4, c=1), y=np.array([0.0, 1.5, 1.0, 2.0]))
    with pytest.raises(InputError, match="non-integer"):
        open_dataset(str(path))


def test_label_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.npz"
    np.savez(path, x=_uint8_images(n=5, c=1), y=np.arange(4))
    with pytest.raises(InputError) as info:
        open_dataset(str(path))
    assert "4 labels" in str(info.value) and "5 images" in str(info.value)
    path = tmp_path / "mismatch_onehot.npz"
    np.savez(path, x=_uint8_images(n=5, c=1), y=np.eye(3)[[0, 1, 2]])
    with pytest.raises(InputError, match="3 labels"):
        open_dataset(str(path))


# --------------------------------------------------------------------------- .npy pair


def test_npy_pair_with_labels(tmp_path: Path) -> None:
    x = _uint8_images(n=8, c=1, h=28, w=28)[:, 0]
    y = np.array([7, 2, 1, 0, 4, 1, 4, 9])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = open_dataset(str(tmp_path / "x.npy"), labels=tmp_path / "y.npy", expected_shape=(1, 28, 28))
    assert ds.layout == "nhw" and ds.sample_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.labels, y)
    np.testing.assert_array_equal(_read_all(ds), x)
    assert ds.notes == []
    other = open_dataset(str(tmp_path / "x.npy"), labels=tmp_path / "y.npy")
    assert other.sha256 == ds.sha256


def test_npy_without_labels(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _uint8_images(n=3))
    with pytest.raises(InputError, match="--labels"):
        open_dataset(str(tmp_path / "x.npy"))


def test_npy_unreadable(tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(b"not an npy file")
    np.save(tmp_path / "y.npy", np.arange(3))
    with pytest.raises(InputError, match="x.npy"):
        open_dataset(str(tmp_path / "x.npy"), labels=tmp_path / "y.npy")


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_dataset(str(tmp_path / "absent.npz"))
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(InputError, match=r"\.csv"):
        open_dataset(str(tmp_path / "data.csv"))


# --------------------------------------------------------------------------- image folder


def _image_folder(root: Path, prefix: str) -> list[tuple[int, int, Path]]:
    assets = _assets(prefix)
    for _idx, label, p in assets:
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / str(label) / p.name)
    return assets


def test_image_folder_mnist(tmp_path: Path) -> None:
    root = tmp_path / "mnist"
    assets = _image_folder(root, "mnist")
    ds = open_dataset(str(root), expected_shape=(1, 28, 28))
    # Folders named by digit keep the digit as their label, though these 20 images hold no 8: by
    # sorted position the 9s would have been called 8s.
    assert 8 not in {label for _, label, _ in assets}
    assert ds.class_names == [str(c) for c in range(10)]
    assert any("each folder's number is its label" in note for note in ds.notes)
    assert len(ds) == 20
    assert ds.sample_shape == (1, 28, 28) and ds.layout == "nhw" and ds.dtype == np.uint8
    # Files are ordered by class folder, then by name: reconstruct that order.
    order = sorted(assets, key=lambda a: (str(a[1]), a[2].name))
    np.testing.assert_array_equal(ds.labels, [label for _, label, _ in order])
    raw = _read_all(ds)
    assert raw.shape == (20, 28, 28)
    for k, (_, _, p) in enumerate(order):
        np.testing.assert_array_equal(raw[k], _pixels(p), err_msg=p.name)
    # Lazy read of single, out-of-order indices.
    for k in (19, 0, 11):
        np.testing.assert_array_equal(ds.read(np.array([k]))[0], _pixels(order[k][2]))
    # Same answer without the model's shape.
    ds2 = open_dataset(str(root))
    assert ds2.sample_shape == (1, 28, 28) and ds2.layout == "nhw"
    np.testing.assert_array_equal(_read_all(ds2), raw)


def test_image_folder_cifar(tmp_path: Path) -> None:
    root = tmp_path / "cifar"
    assets = _image_folder(root, "cifar10")
    ds = open_dataset(str(root))
    assert ds.sample_shape == (3, 32, 32) and ds.layout == "nhwc"
    order = sorted(assets, key=lambda a: (str(a[1]), a[2].name))
    np.testing.assert_array_equal(ds.labels, [label for _, label, _ in order])
    idx = np.array([3, 17])
    raw = ds.read(idx)
    assert raw.shape == (2, 32, 32, 3)
    for j, k in enumerate(idx):
        np.testing.assert_array_equal(raw[j], _pixels(order[k][2]))
    unit = ds.to_unit(raw, (0, 1))
    assert unit.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(unit[0], _pixels(order[3][2]).transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_image_folder_reads_an_empty_selection_as_no_rows(tmp_path: Path) -> None:
    for prefix, shape in (("mnist", (0, 28, 28)), ("cifar10", (0, 32, 32, 3))):
        root = tmp_path / prefix
        _image_folder(root, prefix)
        raw = open_dataset(str(root)).read(np.array([], dtype=np.int64))
        assert raw.shape == shape and raw.dtype == np.uint8


def _two_tone(path: Path, width: int, height: int) -> None:
    """Black left half, white right half."""
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[:, width // 2 :] = 255
    Image.fromarray(pixels).save(path)


def test_resize_scales_the_shorter_side_to_cover_and_crops_the_centre(tmp_path: Path) -> None:
    """A 64x32 (width x height) two-tone image needs no scaling to cover 32x32: the crop keeps columns
    16-47, half black and half white; a 128x64 one is halved first, with the same result away from the
    edge (bilinear blends the columns next to it). A 20x30 one is scaled up to cover 32x32."""
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    _two_tone(root / "a" / "0_wide.png", 64, 32)
    _two_tone(root / "a" / "1_wider.png", 128, 64)
    _two_tone(root / "a" / "2_small.png", 20, 30)
    ds = open_dataset(str(root), resize=(32, 32))
    assert ds.sample_shape == (1, 32, 32)
    assert any("resized to 32x32" in n and "centre-cropped" in n for n in ds.notes)
    raw = ds.read(np.arange(3))
    assert raw.shape == (3, 32, 32)
    np.testing.assert_array_equal(raw[0][:, :16], 0)
    np.testing.assert_array_equal(raw[0][:, 16:], 255)
    np.testing.assert_array_equal(raw[1][:, :15], 0)
    np.testing.assert_array_equal(raw[1][:, 17:], 255)
    assert raw[2][:, :8].max() < 128 and raw[2][:, 24:].min() > 128  # still black left, white right
    tall = open_dataset(str(root), resize=(40, 20))  # height 40, width 20
    assert tall.sample_shape == (1, 40, 20) and tall.read(np.arange(3)).shape == (3, 40, 20)


def test_resize_is_for_image_folders_only(tmp_path: Path) -> None:
    from robaudit.errors import UsageError

    path = tmp_path / "d.npz"
    np.savez(path, x=_uint8_images(n=2), y=np.array([0, 1]))
    with pytest.raises(UsageError, match="--resize: applies to image folders"):
        open_dataset(str(path), resize=(28, 28))


def test_image_folder_expected_shape_mismatch_names_file(tmp_path: Path) -> None:
    root = tmp_path / "cifar"
    _image_folder(root, "cifar10")
    with pytest.raises(InputError) as info:
        open_dataset(str(root), expected_shape=(1, 28, 28))
    msg = str(info.value)
    assert ".png" in msg and "32x32" in msg and "28x28" in msg
    first = sorted((root / sorted(p.name for p in root.iterdir())[0]).iterdir())[0]
    assert str(first) in msg


def test_image_folder_unreadable_image_is_found_before_any_attack(tmp_path: Path) -> None:
    """A file that is not an image, wherever it sorts, stops the run when the folder is opened."""
    root = tmp_path / "mnist"
    _image_folder(root, "mnist")
    bad = root / "9" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage, not a real png")
    with pytest.raises(InputError, match="zz_broken.png.*not a readable image"):
        open_dataset(str(root), expected_shape=(1, 28, 28))


def test_image_folder_truncated_image_at_read(tmp_path: Path) -> None:
    """A PNG cut short keeps a valid header: it is found when its pixels are decoded, named."""
    root = tmp_path / "mnist"
    _image_folder(root, "mnist")
    whole = (root / "9").iterdir().__next__().read_bytes()
    (root / "9" / "zz_cut.png").write_bytes(whole[: len(whole) // 2])
    ds = open_dataset(str(root), expected_shape=(1, 28, 28))
    assert len(ds) == 21
    ds.read(np.array([0, 1]))  # readable ones still read
    with pytest.raises(InputError, match="zz_cut.png"):
        ds.read(np.array([len(ds) - 1]))


def test_image_folder_size_mismatch_is_found_when_opened(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(root / "a" / "0.png")
    Image.fromarray(np.zeros((20, 28), dtype=np.uint8)).save(root / "b" / "odd.png")
    with pytest.raises(InputError, match=r"odd.png: image is 28x20 pixels, unlike 0.png's 28x28.*--resize"):
        open_dataset(str(root))
    ds = open_dataset(str(root), resize=(28, 28))  # brought to one size, they read
    assert ds.class_names == ["a", "b"] and ds.read(np.array([0, 1])).shape == (2, 28, 28)
    np.testing.assert_array_equal(ds.labels, [0, 1])


def test_image_folder_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="class subfolders"):
        open_dataset(str(tmp_path))
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="no images in its class subfolders; robaudit reads .*png"):
        open_dataset(str(tmp_path))


# --------------------------------------------------------------------------- validate()


def _float_npz(tmp_path: Path, x: np.ndarray, y: np.ndarray | None = None, name: str = "f.npz") -> Dataset:
    path = tmp_path / name
    np.savez(path, x=x, y=np.zeros(len(x), dtype=np.int64) if y is None else y)
    return open_dataset(str(path))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_validate_non_finite_names_sample(tmp_path: Path, bad_value: float) -> None:
    x = np.random.default_rng(6).random((50, 1, 4, 4), dtype=np.float32)
    x[37, 0, 2, 1] = bad_value
    ds = _float_npz(tmp_path, x)
    with pytest.raises(InputError, match=r"sample 37\b.*NaN or Inf"):
        ds.validate((0.0, 1.0), num_classes=10)
    # Across batch boundaries the index is global, not per batch.
    with pytest.raises(InputError, match=r"sample 37\b"):
        ds.validate((0.0, 1.0), num_classes=10, batch_size=16)
    ds.validate((0.0, 1.0), num_classes=10, pixels=False)  # label-only check passes


def test_validate_range_with_0_255_hint(tmp_path: Path) -> None:
    x = np.random.default_rng(7).random((20, 3, 4, 4), dtype=np.float32) * 255.0
    x[0, 0, 0, 0] = 255.0
    ds = _float_npz(tmp_path, x)
    with pytest.raises(InputError) as info:
        ds.validate((0.0, 1.0), num_classes=10)
    msg = str(info.value)
    assert "--data-range 0,255" in msg  # the data's scale, not the model's --input-range
    ds.validate((0.0, 255.0), num_classes=10)  # the right range passes


def test_validate_range_above_without_hint(tmp_path: Path) -> None:
    # Declared range already wider than [0, 1]: no 0,255 hint, a generic one instead.
    x = np.full((5, 1, 4, 4), 0.5, dtype=np.float32)
    x[3, 0, 0, 0] = 2.5
    ds = _float_npz(tmp_path, x)
    ds.validate((0.0, 2.5), num_classes=None)
    with pytest.raises(InputError) as info:
        ds.validate((0.0, 2.0), num_classes=None)
    msg = str(info.value)
    assert "--data-range" in msg and "2.5" in msg and "0,2" in msg and "0,255" not in msg


def test_validate_range_below(tmp_path: Path) -> None:
    x = np.linspace(-1.0, 1.0, 5 * 16, dtype=np.float32).reshape(5, 1, 4, 4)
    ds = _float_npz(tmp_path, x)
    with pytest.raises(InputError, match="--data-range"):
        ds.validate((0.0, 1.0), num_classes=None)
    ds.validate((-1.0, 1.0), num_classes=None)
    unit = ds.to_unit(_read_all(ds), (-1.0, 1.0))
    assert unit.min() == pytest.approx(0.0) and unit.max() == pytest.approx(1.0)


def test_unit_pixels_declared_as_0_255_get_a_note(tmp_path: Path) -> None:
    """Float [0, 1] pixels read as 0..255 would all be near black: said, with the flag that fixes it."""
    ds = _float_npz(tmp_path, np.random.default_rng(1).random((8, 1, 4, 4), dtype=np.float32))
    ds.validate((0.0, 255.0), num_classes=None)
    assert any("--data-range 0,1" in note for note in ds.notes)
    bright = _float_npz(tmp_path, np.full((8, 1, 4, 4), 200.0, np.float32), name="bright.npz")
    bright.validate((0.0, 255.0), num_classes=None)
    assert not any("--data-range" in note for note in bright.notes)


def test_validate_labels(tmp_path: Path) -> None:
    x = np.zeros((6, 1, 4, 4), dtype=np.uint8)
    ds = _float_npz(tmp_path, x, y=np.array([0, 1, 2, 10, 3, 4]), name="big.npz")
    ds.validate((0.0, 1.0), num_classes=11)
    ds.validate((0.0, 1.0), num_classes=None)
    with pytest.raises(InputError) as info:
        ds.validate((0.0, 1.0), num_classes=10)
    assert "label 10" in str(info.value) and "sample 3" in str(info.value)

    neg = _float_npz(tmp_path, x, y=np.array([0, 1, -1, 2, 3, 4]), name="neg.npz")
    with pytest.raises(InputError, match=r"label -1 at sample 2"):
        neg.validate((0.0, 1.0), num_classes=10)
    with pytest.raises(InputError, match="negative"):
        neg.validate((0.0, 1.0), num_classes=None)


def test_validate_mnist_passes(mnist: Dataset) -> None:
    mnist.validate((0.0, 1.0), num_classes=10)
    with pytest.raises(InputError, match="9"):
        mnist.validate((0.0, 1.0), num_classes=9)


def test_float64_note_and_float32_output(tmp_path: Path) -> None:
    x = np.random.default_rng(8).random((7, 3, 5, 6))
    assert x.dtype == np.float64
    ds = _float_npz(tmp_path, x)
    assert any("float64" in n and "float32" in n for n in ds.notes), ds.notes
    ds.validate((0.0, 1.0), num_classes=None)
    unit = ds.to_unit(_read_all(ds), (0.0, 1.0))
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, x, rtol=1e-6)
    _, xb, _ = next(ds.batches(np.arange(3), 3, (0.0, 1.0)))
    assert xb.dtype == np.float32


# --------------------------------------------------------------------------- batches()


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batches_concatenate_to_full_read(mnist: Dataset, batch_size: int) -> None:
    indices = np.arange(0, 10000, 97)  # 104 samples, not a multiple of any batch size
    full = mnist.to_unit(mnist.read(indices), (0.0, 1.0))
    xs, ys, idxs = [], [], []
    for idx, xb, yb in mnist.batches(indices, batch_size, (0.0, 1.0)):
        assert xb.dtype == np.float32 and xb.ndim == 4 and xb.shape[1:] == (1, 28, 28)
        assert yb.dtype == np.int64
        assert 1 <= len(idx) <= batch_size and xb.shape[0] == yb.shape[0] == len(idx)
        assert xb.min() >= 0.0 and xb.max() <= 1.0
        xs.append(xb)
        ys.append(yb)
        idxs.append(idx)
    assert len(xs) == -(-len(indices) // batch_size)
    np.testing.assert_array_equal(np.concatenate(idxs), indices)
    np.testing.assert_array_equal(np.concatenate(xs), full)
    np.testing.assert_array_equal(np.concatenate(ys), mnist.labels[indices])


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batches_nhwc_npz(tmp_path: Path, batch_size: int) -> None:
    nchw = _uint8_images(n=23, c=3, h=5, w=4, seed=9)
    y = np.arange(23) % 5
    path = tmp_path / "b.npz"
    np.savez(path, x=nchw.transpose(0, 2, 3, 1), y=y.astype(np.int32))
    ds = open_dataset(str(path))
    out = list(ds.batches(np.arange(23), batch_size, (0.0, 1.0)))
    x = np.concatenate([b[1] for b in out])
    yb = np.concatenate([b[2] for b in out])
    assert x.dtype == np.float32 and yb.dtype == np.int64
    np.testing.assert_array_equal(x, nchw.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(yb, y)


# --------------------------------------------------------------------------- stratified_subset


def _check_subset(labels: np.ndarray, limit: int, sub: np.ndarray) -> None:
    n = len(labels)
    if limit >= n:
        np.testing.assert_array_equal(sub, np.arange(n))
        return
    assert sub.shape == (limit,)
    assert np.all(np.diff(sub) > 0), "indices must be sorted and unique"
    assert sub.min(initial=0) >= 0 and sub.max(initial=0) < n
    classes, counts = np.unique(labels, return_counts=True)
    for c, count in zip(classes, counts, strict=True):
        got = int(np.sum(labels[sub] == c))
        quota = count * limit / n
        assert abs(got - quota) < 1.0 + 1e-9, (c, got, quota)
        assert got <= count


def test_stratified_subset_mnist(mnist: Dataset) -> None:
    a = stratified_subset(mnist.labels, 1000, seed=0)
    b = stratified_subset(mnist.labels, 1000, seed=0)
    c = stratified_subset(mnist.labels, 1000, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    _check_subset(mnist.labels, 1000, a)
    _check_subset(mnist.labels, 1000, c)
    # 1000/10000 of each class: counts are exactly a tenth, rounded.
    got = np.bincount(mnist.labels[a], minlength=10)
    assert got.sum() == 1000
    assert np.all(np.abs(got - np.array(MNIST_COUNTS) / 10) < 1)


def test_stratified_subset_limit_at_least_n() -> None:
    labels = np.array([2, 2, 0, 1, 1, 1])
    np.testing.assert_array_equal(stratified_subset(labels, 6, seed=3), np.arange(6))
    np.testing.assert_array_equal(stratified_subset(labels, 100, seed=3), np.arange(6))


def test_stratified_subset_small_class_kept() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2])
    sub = stratified_subset(labels, 10, seed=0)
    assert np.bincount(labels[sub], minlength=3).tolist() == [9, 1, 0]
    sub = stratified_subset(labels, 50, seed=0)
    _check_subset(labels, 50, sub)


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=300),
    frac=st.floats(min_value=0.0, max_value=1.2),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_stratified_subset_properties(labels: list[int], frac: float, seed: int) -> None:
    arr = np.array(labels, dtype=np.int64)
    limit = int(frac * len(arr))
    sub = stratified_subset(arr, limit, seed)
    _check_subset(arr, limit, sub)
    np.testing.assert_array_equal(sub, stratified_subset(arr, limit, seed))


def test_image_folder_rejects_16_bit_images(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "0").mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(tmp_path / "0" / "deep.png")
    with pytest.raises(InputError, match="16-bit"):
        ds = open_dataset(str(tmp_path), expected_shape=(1, 8, 8))
        ds.read(np.array([0]))


def test_image_folder_palette_images_read_as_rgb(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "0").mkdir()
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[..., 2] = 200
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "0" / "pal.png")
    ds = open_dataset(str(tmp_path))
    assert ds.sample_shape == (3, 8, 8)
    x = ds.to_unit(ds.read(np.array([0])), (0.0, 1.0))
    assert x.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 0.0, 200 / 255], atol=1 / 255)


def _resident_kib_of(path: Path) -> int:
    """Resident KiB of this process's mappings of ``path``, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_streamed_batches_of_a_memory_mapped_npz_do_not_stay_resident(tmp_path: Path) -> None:
    """Every batch read from a memory-mapped file would otherwise stay in resident memory, which then
    grows with the number of samples scanned (measured: 1.09x peak RSS for 10x the samples)."""
    path = tmp_path / "big.npz"
    x = np.random.default_rng(0).integers(0, 256, size=(20_000, 28, 28), dtype=np.uint8)  # 15 MiB
    np.savez(path, x=x, y=np.zeros(20_000, np.int64))
    ds = open_dataset(str(path))
    for start in range(0, len(ds), 1000):
        assert np.array_equal(ds.read(np.arange(start, start + 1000)), x[start : start + 1000])
    assert _resident_kib_of(path) < 2048  # at most a batch's worth, not the 15 MiB read


def _grey(path: Path, value: int, mode: str = "L", size: tuple[int, int] = (28, 28)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).convert(mode).save(path)


def test_image_folder_reads_torchvisions_suffixes_and_says_what_it_skipped(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for k, suffix in enumerate((".png", ".tif", ".tiff", ".ppm", ".pgm", ".JPG")):
        _grey(root / "0" / f"{k}{suffix}", 10 * k)
    (root / "0" / "labels.txt").write_text("x")
    (root / "0" / "photo.heic").write_bytes(b"not read")
    (root / "0" / "Thumbs.db").write_bytes(b"litter")
    ds = open_dataset(str(root))
    assert len(ds) == 6
    raw = ds.read(np.arange(6))
    assert sorted(int(v) for v in raw[:, 0, 0] if v < 45) == [0, 10, 20, 30, 40]  # the JPEG is lossy
    skipped = [n for n in ds.notes if "skipped" in n]
    assert len(skipped) == 1 and "2 files that are not images (1 .heic, 1 .txt)" in skipped[0]


def test_image_folder_skips_hidden_files_and_archive_litter(tmp_path: Path) -> None:
    """macOS's ._ copies, .ipynb_checkpoints and __MACOSX are not images of the dataset."""
    root = tmp_path / "imgs"
    _grey(root / "0" / "a.png", 0)
    _grey(root / "1" / "b.png", 255)
    (root / "1" / "._b.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _grey(root / "1" / ".ipynb_checkpoints" / "b-checkpoint.png", 255)
    _grey(root / "__MACOSX" / "1" / "b.png", 255)
    ds = open_dataset(str(root))
    assert len(ds) == 2 and ds.class_names == ["0", "1"]
    np.testing.assert_array_equal(ds.labels, [0, 1])


@pytest.mark.parametrize(
    ("folders", "labels"),
    [(["3", "7"], [3, 7]), (["0", "1", "10", "2"], [0, 1, 10, 2]), (["cat", "dog"], [0, 1])],
    ids=["digits-subset", "ten-after-nine", "names"],
)
def test_image_folder_class_numbers(tmp_path: Path, folders: list[str], labels: list[int]) -> None:
    """Numbered folders keep their numbers; named ones are numbered in sorted order (torchvision's)."""
    root = tmp_path / "imgs"
    for name in folders:
        _grey(root / name / "a.png", 0)
    ds = open_dataset(str(root))
    order = sorted(folders)
    np.testing.assert_array_equal(ds.labels, [labels[folders.index(name)] for name in order])
    assert ds.class_names is not None
    for name, label in zip(folders, labels, strict=True):
        assert ds.class_names[label] == name
    assert len(ds.notes) == 1 and ("its label" in ds.notes[0] or "cat=0, dog=1" in ds.notes[0])


def test_a_numbered_folder_beyond_the_models_classes_is_named(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for name in ("0", "5", "12"):
        _grey(root / name / "a.png", 0)
    ds = open_dataset(str(root))
    with pytest.raises(InputError, match=r"label 12 \(class '12'\).*outside the model's 10 classes"):
        ds.validate((0.0, 1.0), num_classes=10)


def test_image_folder_channels_follow_most_images(tmp_path: Path) -> None:
    """Without a declared input shape, one colour image sorting first does not make a grey set RGB."""
    root = tmp_path / "imgs"
    _grey(root / "0" / "a_first.png", 100, mode="RGB")
    for k in range(3):
        _grey(root / "0" / f"b{k}.png", 50)
    ds = open_dataset(str(root))
    assert ds.sample_shape == (1, 28, 28)
    assert any("3 of 4 images are greyscale and the rest colour" in n for n in ds.notes)
    assert ds.read(np.array([0])).shape == (1, 28, 28)


def test_colour_images_fed_to_a_one_channel_model_are_noted(tmp_path: Path) -> None:
    """A 1-channel model reads colour images as grey: the run says how many were converted."""
    root = tmp_path / "imgs"
    for k in range(2):
        _grey(root / "0" / f"c{k}.png", 100, mode="RGB")
    _grey(root / "0" / "g.png", 50)
    ds = open_dataset(str(root), expected_shape=(1, 28, 28))
    assert ds.sample_shape == (1, 28, 28)
    assert any("2 of 3 images are colour; converted to greyscale" in n for n in ds.notes), ds.notes
    grey_only = tmp_path / "grey"
    _grey(grey_only / "0" / "g.png", 50)
    assert not any("converted" in n for n in open_dataset(str(grey_only), expected_shape=(1, 28, 28)).notes)
    rgb_model = open_dataset(str(root), expected_shape=(3, 28, 28))
    assert any("1 of 3 images are greyscale; converted to RGB" in n for n in rgb_model.notes), rgb_model.notes


def test_image_folder_digest_covers_which_class_an_image_is_in(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _grey(root / "0" / "a.png", 0)
    _grey(root / "1" / "b.png", 255)
    _grey(root / "1" / "c.png", 128)
    before = open_dataset(str(root)).sha256
    (root / "1" / "c.png").rename(root / "0" / "c.png")  # the same bytes, now labelled 0
    assert open_dataset(str(root)).sha256 != before
