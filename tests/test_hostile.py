"""A catalogue of hostile and broken inputs: each is refused with one line naming the file (or field)
and the problem, the exit code from the contract, no traceback, and no output file written."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from robaudit.cli import app
from tests.conftest import HOLDOUT, SAMPLES

runner = CliRunner()
CNN = SAMPLES / "mnist_cnn.onnx"


def linear_onnx(folder: Path, *, external: str | None = None, weight_bytes: bytes | None = None) -> Path:
    """A 1x4x4 -> 3 class linear ONNX model; its weight can live in an external file or be tampered with."""
    weight = numpy_helper.from_array(np.arange(48, dtype=np.float32).reshape(16, 3) / 48, "w")
    if weight_bytes is not None:
        weight.raw_data = weight_bytes
    if external is not None:
        weight.data_location = TensorProto.EXTERNAL
        weight.ClearField("raw_data")
        entry = weight.external_data.add()
        entry.key, entry.value = "location", external
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def small_data(folder: Path) -> Path:
    path = folder / "d.npz"
    np.savez(path, x=np.random.default_rng(0).random((20, 1, 4, 4), dtype=np.float32), y=np.arange(20) % 3)
    return path


WEIGHT = (np.arange(48, dtype=np.float32).reshape(16, 3) / 48).tobytes()


# Each case builds its input in tmp_path and returns the scan arguments (model first).
def onnx_external_absolute(tmp: Path) -> list[object]:
    (tmp / "w.bin").write_bytes(WEIGHT)
    return [linear_onnx(tmp, external=str(tmp / "w.bin")), "--data", small_data(tmp)]


def onnx_external_parent(tmp: Path) -> list[object]:
    inner = tmp / "model"
    inner.mkdir()
    (tmp / "w.bin").write_bytes(WEIGHT)
    return [linear_onnx(inner, external="../w.bin"), "--data", small_data(tmp)]


def onnx_external_symlink(tmp: Path) -> list[object]:
    inner, outside = tmp / "model", tmp / "secret"
    inner.mkdir()
    outside.mkdir()
    (outside / "w.bin").write_bytes(WEIGHT)
    (inner / "w.bin").symlink_to(outside / "w.bin")
    return [linear_onnx(inner, external="w.bin"), "--data", small_data(tmp)]


def onnx_external_missing(tmp: Path) -> list[object]:
    return [linear_onnx(tmp, external="nowhere.bin"), "--data", small_data(tmp)]


def onnx_external_short(tmp: Path) -> list[object]:
    (tmp / "w.bin").write_bytes(WEIGHT[:10])
    model = linear_onnx(tmp, external="w.bin")
    proto = onnx.load_model_from_string(model.read_bytes())
    entry = proto.graph.initializer[0].external_data.add()
    entry.key, entry.value = "length", str(len(WEIGHT))
    model.write_bytes(proto.SerializeToString())
    return [model, "--data", small_data(tmp)]


def onnx_initializer_short(tmp: Path) -> list[object]:
    return [linear_onnx(tmp, weight_bytes=WEIGHT[:-8]), "--data", small_data(tmp)]


def onnx_initializer_long(tmp: Path) -> list[object]:
    return [linear_onnx(tmp, weight_bytes=WEIGHT + b"\0" * 400), "--data", small_data(tmp)]


def onnx_truncated(tmp: Path) -> list[object]:
    path = tmp / "cut.onnx"
    path.write_bytes(CNN.read_bytes()[:5000])
    return [path, "--data", HOLDOUT]


def onnx_random_bytes(tmp: Path) -> list[object]:
    path = tmp / "noise.onnx"
    path.write_bytes(os.urandom(4096))
    return [path, "--data", HOLDOUT]


def onnx_empty_file(tmp: Path) -> list[object]:
    path = tmp / "empty.onnx"
    path.write_bytes(b"")
    return [path, "--data", HOLDOUT]


def torch_pickle(tmp: Path) -> list[object]:
    import pickle

    path = tmp / "model.pt"
    path.write_bytes(pickle.dumps({"not": "a model"}))
    return [path, "--data", HOLDOUT]


def torch_text_file(tmp: Path) -> list[object]:
    path = tmp / "model.pt"
    path.write_text("this is not a model", encoding="utf-8")
    return [path, "--data", HOLDOUT]


def torch_foreign_zip(tmp: Path) -> list[object]:
    path = tmp / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return [path, "--data", HOLDOUT]


def safetensors_header_too_large(tmp: Path) -> list[object]:
    """A header that claims 2**60 bytes: refused before anything is allocated."""
    path = tmp / "model.safetensors"
    path.write_bytes((2**60).to_bytes(8, "little") + b"{}")
    return [path, "--data", HOLDOUT, "--arch", "sample_models.lenet:LeNet"]


def safetensors_offsets_past_the_end(tmp: Path) -> list[object]:
    """A tensor of 4 MB whose bytes the file does not hold."""
    header = b'{"w":{"dtype":"F32","shape":[1000,1000],"data_offsets":[0,4000000]}}'
    path = tmp / "weights.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    return [path, "--data", HOLDOUT, "--arch", "sample_models.lenet:LeNet"]


def model_missing(tmp: Path) -> list[object]:
    return [tmp / "nope.onnx", "--data", HOLDOUT]


def model_is_folder(tmp: Path) -> list[object]:
    return [tmp, "--data", HOLDOUT]


def npz_object_array(tmp: Path) -> list[object]:
    path = tmp / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, np.int64))
    return [CNN, "--data", path]


def npy_object_array(tmp: Path) -> list[object]:
    x, y = tmp / "x.npy", tmp / "y.npy"
    np.save(x, np.array([object()] * 4, dtype=object), allow_pickle=True)
    np.save(y, np.zeros(4, np.int64))
    return [CNN, "--data", x, "--labels", y]


def npz_bomb(tmp: Path) -> list[object]:
    """A compressed member of 125 MiB of zeros in about 120 KiB: refused before it expands."""
    path = tmp / "bomb.npz"
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((20_000, 1, 28, 28), np.float64))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", buffer.getvalue())
        labels = io.BytesIO()
        np.lib.format.write_array(labels, np.zeros(20_000, np.int64))
        zf.writestr("y.npy", labels.getvalue())
    return [CNN, "--data", path]


def npz_header_lies(tmp: Path) -> list[object]:
    """A compressed member whose header claims far more data than it holds."""
    path = tmp / "liar.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1, 28, 28)}
    )
    labels = io.BytesIO()
    np.lib.format.write_array(labels, np.zeros(4, np.int64))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", np.lib.format.MAGIC_PREFIX + b"\x01\x00" + header.getvalue()[8:] + b"\0" * 64)
        zf.writestr("y.npy", labels.getvalue())
    return [CNN, "--data", path]


def npz_not_zip(tmp: Path) -> list[object]:
    path = tmp / "bad.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    return [CNN, "--data", path]


def npz_missing_key(tmp: Path) -> list[object]:
    path = tmp / "k.npz"
    np.savez(path, images=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4, np.int64))
    return [CNN, "--data", path]


def npz_length_mismatch(tmp: Path) -> list[object]:
    path = tmp / "len.npz"
    np.savez(path, x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(5, np.int64))
    return [CNN, "--data", path]


def npz_nan_pixels(tmp: Path) -> list[object]:
    path = tmp / "nan.npz"
    x = np.zeros((4, 28, 28), np.float32)
    x[1, 3, 3] = np.nan
    np.savez(path, x=x, y=np.zeros(4, np.int64))
    return [CNN, "--data", path]


def npz_labels_out_of_range(tmp: Path) -> list[object]:
    path = tmp / "lab.npz"
    np.savez(path, x=np.zeros((4, 28, 28), np.uint8), y=np.array([0, 1, 2, 10]))
    return [CNN, "--data", path]


def npz_empty(tmp: Path) -> list[object]:
    path = tmp / "empty.npz"
    np.savez(path, x=np.zeros((0, 28, 28), np.uint8), y=np.zeros(0, np.int64))
    return [CNN, "--data", path]


def image_truncated(tmp: Path) -> list[object]:
    folder = tmp / "imgs" / "3"
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(buffer, format="PNG")
    (folder / "a.png").write_bytes(buffer.getvalue()[:40])
    return [CNN, "--data", tmp / "imgs"]


def image_random_bytes(tmp: Path) -> list[object]:
    folder = tmp / "imgs" / "3"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(os.urandom(300))
    return [CNN, "--data", tmp / "imgs"]


def image_decompression_bomb(tmp: Path) -> list[object]:
    """A 1-bit 20000x20000 PNG: a few KiB on disk, 400 megapixels decoded (Pillow's bomb limit holds)."""
    folder = tmp / "imgs" / "3"
    folder.mkdir(parents=True)
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png", optimize=True)
    return [CNN, "--data", tmp / "imgs"]


def profile_malformed(tmp: Path) -> list[object]:
    path = tmp / "p.yaml"
    path.write_text("version: 1\nattacks: [unclosed\n", encoding="utf-8")
    return ["--profile", path]


def profile_wrong_type(tmp: Path) -> list[object]:
    path = tmp / "p.yaml"
    path.write_text(f"version: 1\nmodel: {{path: {CNN}}}\nbatch_size: big\n", encoding="utf-8")
    return ["--profile", path]


def profile_nan_eps(tmp: Path) -> list[object]:
    path = tmp / "p.yaml"
    path.write_text(f"version: 1\nmodel: {{path: {CNN}}}\nthreat: {{eps: [.nan]}}\n", encoding="utf-8")
    return ["--profile", path]


def profile_negative_eps(tmp: Path) -> list[object]:
    path = tmp / "p.yaml"
    path.write_text(f"version: 1\nmodel: {{path: {CNN}}}\nthreat: {{eps: [-0.1]}}\n", encoding="utf-8")
    return ["--profile", path]


def profile_python_tag(tmp: Path) -> list[object]:
    path = tmp / "p.yaml"
    path.write_text("version: 1\nseed: !!python/object/apply:os.getpid []\n", encoding="utf-8")
    return ["--profile", path]


def output_is_folder(tmp: Path) -> list[object]:
    return [CNN, "--data", HOLDOUT, "--html", tmp]


def output_under_a_file(tmp: Path) -> list[object]:
    (tmp / "file").write_text("x", encoding="utf-8")
    return [CNN, "--data", HOLDOUT, "--markdown", tmp / "file" / "summary.md"]


def output_two_folders_deep_into_nothing(tmp: Path) -> list[object]:
    return [CNN, "--data", HOLDOUT, "--html", tmp / "nonexistent" / "dir" / "report.html"]


def output_over_the_model(tmp: Path) -> list[object]:
    model = tmp / "model.onnx"
    model.write_bytes(CNN.read_bytes())
    return [model, "--data", HOLDOUT, "--html", model]


def output_over_the_data(tmp: Path) -> list[object]:
    data = tmp / "holdout.npz"
    data.write_bytes(HOLDOUT.read_bytes())
    return [CNN, "--data", data, "--markdown", tmp / "." / "holdout.npz"]


def two_outputs_one_file(tmp: Path) -> list[object]:
    return [CNN, "--data", HOLDOUT, "--html", tmp / "report", "--markdown", tmp / "report"]


def max_drop_without_baseline(tmp: Path) -> list[object]:
    return [CNN, "--data", HOLDOUT, "--max-drop", "0.01"]


def labels_beside_an_npz(tmp: Path) -> list[object]:
    labels = tmp / "y.npy"
    np.save(labels, np.zeros(2000, np.int64))
    return [CNN, "--data", HOLDOUT, "--labels", labels]


def baseline_not_results(tmp: Path) -> list[object]:
    path = tmp / "base.json"
    path.write_text("[1, 2, 3]", encoding="utf-8")
    return [CNN, "--data", HOLDOUT, "--baseline", path]


CATALOGUE: list[tuple[Callable[[Path], list[object]], int, list[str]]] = [
    (onnx_external_absolute, 3, ["initializer 'w'", "outside the model's folder", "refused"]),
    (onnx_external_parent, 3, ["'../w.bin'", "outside the model's folder"]),
    (onnx_external_symlink, 3, ["resolves outside the model's folder"]),
    (onnx_external_missing, 3, ["'nowhere.bin' is missing"]),
    (onnx_external_short, 3, ["past the end of 'w.bin'"]),
    (onnx_initializer_short, 3, ["initializer 'w' declares shape [16, 3]", "corrupt or tampered"]),
    (onnx_initializer_long, 3, ["initializer 'w' declares shape [16, 3]"]),
    (onnx_truncated, 3, ["cut.onnx", "not a readable ONNX file"]),
    (onnx_random_bytes, 3, ["noise.onnx"]),
    (onnx_empty_file, 3, ["empty.onnx"]),
    (torch_pickle, 3, ["model.pt", "pickle"]),
    (torch_text_file, 3, ["model.pt", "not a readable"]),
    (torch_foreign_zip, 3, ["model.pt"]),
    (safetensors_header_too_large, 3, ["model.safetensors", "not a readable safetensors file"]),
    (safetensors_offsets_past_the_end, 3, ["weights.safetensors", "not a readable safetensors file"]),
    (model_missing, 3, ["nope.onnx", "no such model file"]),
    (model_is_folder, 3, ["is a folder"]),
    (npz_object_array, 3, ["obj.npz"]),
    (npy_object_array, 3, ["x.npy"]),
    (npz_bomb, 3, ["bomb.npz", "decompression bomb"]),
    (npz_header_lies, 3, ["liar.npz", "more bytes than it stores"]),
    (npz_not_zip, 3, ["bad.npz", "not a readable .npz"]),
    (npz_missing_key, 3, ["no array named 'x'", "--npz-keys"]),
    (npz_length_mismatch, 3, ["len.npz"]),
    (npz_nan_pixels, 3, ["nan.npz"]),
    (npz_labels_out_of_range, 3, ["lab.npz", "10 classes"]),
    (npz_empty, 3, ["empty.npz"]),
    (image_truncated, 3, ["a.png"]),
    (image_random_bytes, 3, ["a.png"]),
    (image_decompression_bomb, 3, ["bomb.png"]),
    (profile_malformed, 2, ["p.yaml", "not valid YAML"]),
    (profile_wrong_type, 2, ["p.yaml", "batch_size"]),
    (profile_nan_eps, 2, ["p.yaml", "threat.eps"]),
    (profile_negative_eps, 2, ["p.yaml", "threat.eps", ">= 0"]),
    (profile_python_tag, 2, ["p.yaml", "not valid YAML"]),
    (output_is_folder, 2, ["--html", "is a folder"]),
    (output_under_a_file, 2, ["--markdown", "cannot write there"]),
    (output_two_folders_deep_into_nothing, 2, ["--html", "nonexistent does not exist", "create it first"]),
    (output_over_the_model, 2, ["--html", "model.onnx", "is also the model file"]),
    (output_over_the_data, 2, ["--markdown", "is also the data"]),
    (two_outputs_one_file, 2, ["--markdown", "is also the --html output"]),
    (max_drop_without_baseline, 2, ["--max-drop", "none was given", "--baseline"]),
    (labels_beside_an_npz, 2, ["--labels", "holds its own", "drop --labels"]),
    (baseline_not_results, 3, ["base.json", "not a robaudit results file"]),
]


@pytest.mark.parametrize(("build", "code", "words"), CATALOGUE, ids=[c[0].__name__ for c in CATALOGUE])
def test_hostile_input_is_refused_in_one_line(
    build: Callable[[Path], list[object]], code: int, words: list[str], tmp_path: Path
) -> None:
    case = tmp_path / "case"
    case.mkdir()
    out = tmp_path / "out"
    args = [str(a) for a in build(case)]
    result: Any = runner.invoke(app, ["scan", *args, "--json", str(out / "r.json")])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("robaudit: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()  # nothing written, not even the output folder


def test_an_output_named_like_an_input_leaves_the_input_intact(tmp_path: Path) -> None:
    args = output_over_the_model(tmp_path)
    before = Path(str(args[0])).read_bytes()
    result: Any = runner.invoke(app, ["scan", *map(str, args), "--limit", "8"])
    assert result.exit_code == 2
    assert Path(str(args[0])).read_bytes() == before


def test_the_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 30


def test_external_data_inside_the_folder_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(WEIGHT)
    model = linear_onnx(tmp_path, external="w.bin")
    result = runner.invoke(app, ["scan", str(model), "--data", str(small_data(tmp_path)), "--eps", "0.05"])
    assert result.exit_code == 0, result.output
    assert "external data" in " ".join(result.stdout.split())


# --- the C++ parsers run first in a child process ---------------------------------------------------


def test_a_model_that_hangs_the_parsers_is_refused_after_the_time_limit() -> None:
    from robaudit.errors import InputError
    from robaudit.models.isolated import preflight

    with pytest.raises(InputError, match=r"did not finish in 0 s in an isolated process; refused"):
        preflight(CNN.read_bytes(), CNN, timeout_s=0.001)


def test_a_model_that_crashes_the_parsers_is_refused() -> None:
    """An address-space limit too small for ONNX Runtime makes the real child die, as a crafted model
    that exhausts memory would; robaudit reports it and carries on running."""
    from robaudit.errors import InputError
    from robaudit.models.isolated import preflight

    with pytest.raises(InputError, match=r"crashed on this model \(.*\) in an isolated process; refused"):
        preflight(CNN.read_bytes(), CNN, address_space=64 << 20)
    preflight(CNN.read_bytes(), CNN)  # with the normal limits the sample model passes


def test_the_preflight_check_runs_beside_the_callers_other_work() -> None:
    """While the checking child works, the caller's ``meanwhile`` runs (robaudit imports the converters
    then); if that work fails, the error reaches the caller and the child does not outlive it."""
    from robaudit.models.isolated import preflight

    def children() -> list[str]:
        pids = Path(f"/proc/self/task/{os.getpid()}/children").read_text().split()
        return [Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") for pid in pids]

    seen: list[list[str]] = []
    preflight(CNN.read_bytes(), CNN, meanwhile=lambda: seen.append(children()))
    assert len(seen) == 1 and any("robaudit.models.isolated\x00check" in c for c in seen[0])

    def fail() -> None:
        seen.append(children())
        raise RuntimeError("the caller's own work failed")

    with pytest.raises(RuntimeError, match="the caller's own work failed"):
        preflight(CNN.read_bytes(), CNN, meanwhile=fail)
    assert any("robaudit.models.isolated\x00check" in c for c in seen[1])
    assert not any("robaudit.models.isolated" in c for c in children())  # killed and reaped


# --- the graph conversion is tried first in a forked child ------------------------------------------


def test_a_forked_trial_reports_a_crash_a_hang_and_exhausted_memory() -> None:
    import ctypes
    import time

    from robaudit.models.isolated import run_forked

    assert run_forked(lambda: sum(range(1000))) is None
    assert run_forked(lambda: ctypes.string_at(0)) == "crashed (signal SIGSEGV)"
    assert run_forked(lambda: time.sleep(30), timeout_s=0.2) == "did not finish in 0.2 s"
    assert (
        run_forked(lambda: bytearray(2 << 30), extra_memory=256 << 20) == "ran out of memory (limit 0.2 GiB)"
    )
    assert run_forked(lambda: 1 / 0) is None  # a Python error is for the caller to meet when it runs the work


def test_a_failed_forked_trial_is_confirmed_in_a_fresh_process() -> None:
    """A fork can inherit a lock held by another thread; a failure there is checked again in a fresh
    interpreter, whose verdict counts: here the sample model converts fine."""
    import ctypes

    from robaudit.models.isolated import trial_conversion

    size = CNN.stat().st_size
    assert (
        trial_conversion(lambda: ctypes.string_at(0), CNN.read_bytes, size, converter="onnx2pytorch") is None
    )
    trouble = trial_conversion(
        lambda: ctypes.string_at(0), CNN.read_bytes, size, converter="onnx2pytorch", address_space=64 << 20
    )
    assert trouble is not None and trouble.startswith(("ran out of memory", "failed", "crashed"))


def test_a_converter_that_crashes_leaves_the_gradient_free_attacks_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A conversion trial that crashed costs the gradient attacks, not the audit."""
    from robaudit.api import run_audit
    from robaudit.config import AuditConfig
    from robaudit.models import onnx_model

    monkeypatch.setattr(
        onnx_model, "trial_conversion", lambda work, serialise, size, converter: "crashed (signal SIGSEGV)"
    )
    config = AuditConfig(
        model=CNN, data=str(HOLDOUT), limit=20, attacks=("fgsm", "onepixel"), population=20, generations=2
    )
    result = run_audit(config)
    assert [r.attack for r in result.rows] == ["onepixel", "worst-case"]
    assert any("the conversion crashed (signal SIGSEGV) in an isolated process" in n for n in result.notes)


def test_the_converters_are_imported_before_the_trial_forks() -> None:
    """Importing the converters (torchvision, torch._dynamo) costs more than converting a small model;
    imported first in the parent, the forked trial inherits them instead of paying the import itself.
    Checked in a fresh interpreter, since this one has imported them for other tests."""
    import subprocess
    import sys

    script = f"""
import sys
from pathlib import Path
import torch
from robaudit.config import AuditConfig
from robaudit.models import onnx_model

seen = []
real = onnx_model.trial_conversion
def watched(*args, **kwargs):
    seen.append({{"onnx2pytorch", "onnx2torch"}} <= set(sys.modules))
    return real(*args, **kwargs)
onnx_model.trial_conversion = watched
path = Path({str(CNN)!r})
handle = onnx_model.OnnxModelHandle(path, AuditConfig(model=path), torch.device("cpu"))
adapter = handle.bind((1, 28, 28), torch.rand(4, 1, 28, 28))
print(seen, adapter.capabilities.converter)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[-2] == "[True] onnx2pytorch"
