"""Every model format robaudit loads, checked against the PyTorch model it came from."""

from __future__ import annotations

import ast
import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from robaudit.config import AuditConfig
from robaudit.errors import InputError, UsageError
from robaudit.models import load_model
from robaudit.models.onnx_graph import strip_final_softmax, topological_sort
from robaudit.models.ort_install import installed_ort_distributions, mixed_install_message, repair_command
from tests.conftest import REPO, SAMPLES, same_upper_model, small_cnn, unconvertible_model

CPU = torch.device("cpu")


def bind(path: Path, probe: torch.Tensor, **kwargs: object):
    handle = load_model(AuditConfig(model=path, **kwargs), CPU)
    return handle, handle.bind(tuple(probe.shape[1:]), probe)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["legacy", "dynamo", "dynamo_fixed1", "unsorted", "torchscript", "pt2"])
def test_every_format_reproduces_the_source_model(
    exports: dict[str, Path], holdout_x: torch.Tensor, name: str
) -> None:
    reference = small_cnn()(holdout_x)
    _, adapter = bind(exports[name], holdout_x)
    assert adapter.num_classes == 10
    assert adapter.capabilities.gradients
    torch.testing.assert_close(adapter.predict_logits(holdout_x), reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), reference, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["legacy", "dynamo", "dynamo_fixed1", "unsorted"])
def test_onnx_conversion_parity_is_measured_and_small(
    exports: dict[str, Path], holdout_x: torch.Tensor, name: str
) -> None:
    _, adapter = bind(exports[name], holdout_x)
    caps = adapter.capabilities
    assert caps.backend == "onnx" and caps.converter in {"onnx2pytorch", "onnx2torch"}
    assert caps.parity_max_abs_diff is not None and 0 <= caps.parity_max_abs_diff < 1e-4
    assert caps.runtime_provider == "CPUExecutionProvider"


def test_dynamo_export_uses_reshape_with_allowzero(exports: dict[str, Path]) -> None:
    proto = onnx.load(str(exports["dynamo"]))
    assert proto.opset_import[0].version >= 18
    reshapes = [n for n in proto.graph.node if n.op_type == "Reshape"]
    assert reshapes and any(a.name == "allowzero" and a.i == 1 for n in reshapes for a in n.attribute)


def test_fixed_batch_one_model_runs_any_batch(exports: dict[str, Path], holdout_x: torch.Tensor) -> None:
    proto = onnx.load(str(exports["dynamo_fixed1"]))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    _, adapter = bind(exports["dynamo_fixed1"], holdout_x[:5])
    x = holdout_x[:7].clone().requires_grad_(True)
    logits = adapter.logits(x)
    assert logits.shape == (7, 10)
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(
        adapter.predict_logits(holdout_x[:7]), small_cnn()(holdout_x[:7]), atol=1e-4, rtol=1e-4
    )


def test_nhwc_softmax_model_is_inferred_and_attacked_through_logits(
    exports: dict[str, Path], holdout_x: torch.Tensor
) -> None:
    handle, adapter = bind(exports["nhwc_softmax"], holdout_x)
    assert handle.declared_shape == (1, 28, 28)
    assert adapter.preprocessing.layout == "nhwc"
    # The final Softmax was removed: logits equal the source model's logits, not probabilities.
    torch.testing.assert_close(
        adapter.logits(holdout_x).detach(), small_cnn()(holdout_x), atol=1e-4, rtol=1e-4
    )
    assert any("Softmax" in n for n in handle.notes)


def test_nhwc_layout_can_be_given(exports: dict[str, Path], holdout_x: torch.Tensor) -> None:
    handle, adapter = bind(exports["nhwc_softmax"], holdout_x, layout="nhwc")
    assert adapter.preprocessing.layout == "nhwc"


def test_strip_final_softmax_only_touches_a_final_softmax(exports: dict[str, Path]) -> None:
    proto = onnx.load(str(exports["nhwc_softmax"]))
    assert strip_final_softmax(proto)
    assert proto.graph.node[-1].op_type != "Softmax"
    assert not strip_final_softmax(onnx.load(str(exports["legacy"])))


def test_topological_sort_orders_unsorted_nodes(exports: dict[str, Path]) -> None:
    proto = onnx.load(str(exports["unsorted"]))
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(proto)
    assert topological_sort(proto.graph)
    onnx.checker.check_model(proto)
    assert not topological_sort(proto.graph)


def test_unsorted_model_gets_a_note_not_a_crash(exports: dict[str, Path], holdout_x: torch.Tensor) -> None:
    handle, adapter = bind(exports["unsorted"], holdout_x)
    assert any("topological" in n for n in handle.notes)
    assert any("fails onnx.checker" in n and "runs in ONNX Runtime" in n for n in handle.notes)
    assert adapter.capabilities.gradients


def test_same_upper_padding_converts(tmp_path: Path, holdout_x: torch.Tensor) -> None:
    path = same_upper_model(tmp_path / "same_upper.onnx")
    _, adapter = bind(path, holdout_x)
    assert adapter.capabilities.gradients
    assert (
        adapter.capabilities.parity_max_abs_diff is not None
        and adapter.capabilities.parity_max_abs_diff < 1e-4
    )


def test_unconvertible_graph_says_so_plainly(tmp_path: Path) -> None:
    path = unconvertible_model(tmp_path / "det.onnx")
    probe = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    _, adapter = bind(path, probe)
    assert not adapter.capabilities.gradients
    assert "could not be converted" in (adapter.capabilities.gradient_note or "")
    assert "QuickGelu" in (adapter.capabilities.gradient_note or "")
    flat = probe.flatten(1)
    torch.testing.assert_close(
        adapter.predict_logits(probe), flat * torch.sigmoid(1.702 * flat), atol=1e-5, rtol=1e-4
    )


def test_state_dict_needs_arch_and_loads_with_it(exports: dict[str, Path], holdout_x: torch.Tensor) -> None:
    with pytest.raises(UsageError, match="--arch"):
        load_model(AuditConfig(model=exports["state_dict"]), CPU)
    _, adapter = bind(exports["state_dict"], holdout_x, arch="tests.conftest:SmallCNN")
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), small_cnn()(holdout_x))


def test_state_dict_with_wrong_arch_is_an_input_error(exports: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="do not fit"):
        load_model(
            AuditConfig(
                model=exports["state_dict"], arch="tests.conftest:SmallCNN", arch_kwargs={"num_classes": 3}
            ),
            CPU,
        )


def test_state_dict_arch_may_be_a_builder_function(tmp_path: Path) -> None:
    """torchvision's and timm's models are built by functions, not named by their class."""
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "resnet18_state.pt"
    torch.save(source.state_dict(), path)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _, adapter = bind(path, x, arch="torchvision.models:resnet18", arch_kwargs={"num_classes": 10})
    torch.testing.assert_close(adapter.logits(x).detach(), source(x))
    with pytest.raises(UsageError, match="returned a Tensor, not an nn.Module"):
        load_model(AuditConfig(model=path, arch="torch:zeros", arch_kwargs={"size": [1]}), CPU)
    with pytest.raises(UsageError, match="no nn.Module subclass or model-building function named Nope"):
        load_model(AuditConfig(model=path, arch="torchvision.models:Nope"), CPU)


@pytest.mark.parametrize(
    ("prefix", "wrap"),
    [
        ("module.", lambda state: state),  # torch.nn.DataParallel
        ("model.", lambda state: {"epoch": 3, "state_dict": state, "optimizer_states": []}),  # Lightning
    ],
)
def test_a_state_dict_saved_through_a_wrapper_loads_without_its_prefix(
    tmp_path: Path, holdout_x: torch.Tensor, prefix: str, wrap: Any
) -> None:
    source = small_cnn()
    path = tmp_path / "wrapped.pt"
    torch.save(wrap({prefix + key: value for key, value in source.state_dict().items()}), path)
    handle, adapter = bind(path, holdout_x, arch="tests.conftest:SmallCNN")
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), source(holdout_x))
    assert any(f"began with {prefix!r}" in n for n in handle.notes)
    partial = {prefix + key: value for key, value in list(source.state_dict().items())[1:]}
    torch.save(partial, path)  # a weight missing: the prefix alone does not explain the mismatch
    with pytest.raises(InputError, match="do not fit"):
        load_model(AuditConfig(model=path, arch="tests.conftest:SmallCNN"), CPU)


def test_pickled_module_refused_without_trust(exports: dict[str, Path], holdout_x: torch.Tensor) -> None:
    with pytest.raises(InputError, match="arbitrary code") as info:
        load_model(AuditConfig(model=exports["pickled"]), CPU)
    assert "--trust-model" in str(info.value) and "torch.jit.save" in str(info.value)
    _, adapter = bind(exports["pickled"], holdout_x, trust_model=True)
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), small_cnn()(holdout_x))


MYNET = """
import torch


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


def test_arch_and_a_trusted_pickle_import_from_the_current_folder_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holdout_x: torch.Tensor
) -> None:
    """``--arch mynet:SmallCNN`` and a pickled ``mynet.SmallCNN`` both find mynet.py in the current folder."""
    import subprocess
    import sys

    (tmp_path / "mynet.py").write_text(MYNET, encoding="utf-8")
    saver = "import torch, mynet; m = mynet.SmallCNN(); torch.save(m, 'net.pt'); torch.save(m.state_dict(), 'sd.pt')"
    subprocess.run([sys.executable, "-c", saver], cwd=tmp_path, check=True)  # noqa: S603
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not beside mynet.py: neither way finds it
    with pytest.raises(InputError, match="No module named 'mynet'.*current folder"):
        load_model(AuditConfig(model=tmp_path / "net.pt", trust_model=True), CPU)
    with pytest.raises(UsageError, match="cannot import mynet"):
        load_model(AuditConfig(model=tmp_path / "sd.pt", arch="mynet:SmallCNN"), CPU)
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    _, pickled = bind(tmp_path / "net.pt", holdout_x, trust_model=True)
    sys.modules.pop("mynet", None)
    _, built = bind(tmp_path / "sd.pt", holdout_x, arch="mynet:SmallCNN")
    logits = pickled.logits(holdout_x).detach()
    assert logits.shape == (len(holdout_x), 10)
    torch.testing.assert_close(built.logits(holdout_x).detach(), logits)
    assert sys.path == path_before  # the current folder was importable for the imports only
    sys.modules.pop("mynet", None)


def test_every_torch_load_sets_weights_only() -> None:
    calls = []
    for path in (REPO / "robaudit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                calls.append((path.name, {k.arg for k in node.keywords}))
    assert calls, "expected torch.load calls in the loader"
    assert all("weights_only" in kws for _, kws in calls), calls


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x08\x01\x12\x00garbage\xff\xff"])
def test_corrupt_onnx_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError, match="broken.onnx"):
        load_model(AuditConfig(model=path), CPU)


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".pth"])
def test_corrupt_torch_file_is_an_input_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(InputError, match=f"broken{suffix}"):
        load_model(AuditConfig(model=path), CPU)


def test_probability_output_is_detected_and_logged(tmp_path: Path, holdout_x: torch.Tensor) -> None:
    class Probs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = small_cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x), 1)

    path = tmp_path / "probs.pt"
    torch.jit.save(torch.jit.trace(Probs().eval(), holdout_x[:2]), str(path))
    handle, adapter = bind(path, holdout_x)
    assert adapter.output_kind == "probabilities"
    # log-probabilities differ from the logits by a per-row constant, so their softmax is the model's.
    torch.testing.assert_close(
        torch.softmax(adapter.logits(holdout_x), 1),
        torch.softmax(small_cnn()(holdout_x), 1),
        atol=1e-5,
        rtol=1e-4,
    )
    assert any("probabilities" in n for n in handle.notes)


def test_input_range_and_normalisation_are_applied_before_the_model(
    tmp_path: Path, holdout_x: torch.Tensor
) -> None:
    mean, std = 0.1307 * 255, 0.3081 * 255

    class Expects255(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = small_cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x * std + mean)  # undo robaudit's normalisation to recover 0..255 pixels / 255

    path = tmp_path / "n.pt"
    torch.jit.save(torch.jit.trace(Expects255().eval(), holdout_x[:2]), str(path))
    _, adapter = bind(path, holdout_x, input_range=(0.0, 255.0), mean=(mean,), std=(std,))
    torch.testing.assert_close(
        adapter.logits(holdout_x).detach(), small_cnn()(holdout_x * 255), atol=1e-3, rtol=1e-4
    )


def test_mixed_onnxruntime_install_is_detected() -> None:
    found = ["onnxruntime==1.20.0", "onnxruntime-gpu==1.20.0"]
    message = mixed_install_message(found)
    assert message is not None and "pip uninstall -y onnxruntime onnxruntime-gpu" in message
    assert mixed_install_message(["onnxruntime-gpu==1.20.0"]) is None
    assert repair_command(["onnxruntime==1.2"]).endswith("pip install onnxruntime")


def test_onnxruntime_builds_clash_only_within_one_folder(tmp_path: Path) -> None:
    def install(folder: Path, name: str, version: str) -> str:
        info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        return str(folder)

    site = install(tmp_path / "site", "onnxruntime", "1.30.0")
    install(tmp_path / "site", "onnxruntime-gpu", "1.31.1")
    assert sorted(installed_ort_distributions([site])) == ["onnxruntime-gpu==1.31.1", "onnxruntime==1.30.0"]
    # A build on an earlier path entry shadows the other one cleanly: nothing to warn about.
    first = install(tmp_path / "first", "onnxruntime-gpu", "1.31.1")
    second = install(tmp_path / "second", "onnxruntime", "1.30.0")
    found = installed_ort_distributions([first, second])
    assert len(found) == 1 and mixed_install_message(found) is None


def test_torch_model_mode_and_weights_are_frozen(exports: dict[str, Path]) -> None:
    handle = load_model(AuditConfig(model=exports["pickled"], trust_model=True), CPU)
    model = handle.model  # type: ignore[attr-defined]
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert np.isfinite(float(next(model.parameters()).sum()))


def test_conversion_disagreeing_with_onnxruntime_stops_the_run(holdout_x: torch.Tensor) -> None:
    # The sample model's conversion differs from ONNX Runtime by float32 rounding (about 1e-6), which
    # no zero tolerance admits: the run must stop rather than trust the gradients.
    path = REPO / "sample_models" / "mnist_cnn.onnx"
    handle = load_model(AuditConfig(model=path, parity_atol=0.0, parity_rtol=0.0), CPU)
    with pytest.raises(InputError, match="disagrees with ONNX Runtime") as info:
        handle.bind((1, 28, 28), holdout_x)
    assert "mnist_cnn.onnx" in str(info.value) and "--parity-atol" in str(info.value)
    _, adapter = bind(path, holdout_x)
    assert 0 < (adapter.capabilities.parity_max_abs_diff or 0) < 1e-4


def test_channels_last_changes_the_layout_not_what_the_model_computes() -> None:
    """--channels-last relays the convolution weights; the logits stay the same up to float rounding,
    and a model without convolution weights is left alone."""
    from robaudit.models.layout import use_channels_last
    from sample_models.lenet import LeNet

    model = LeNet().eval().requires_grad_(False)
    model.load_state_dict(torch.load(SAMPLES / "mnist_cnn_state.pt", weights_only=True))
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    before = model(x)
    conv = model.features[3].weight  # 16 input channels: the two layouts differ
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    assert use_channels_last(model) is True
    assert conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert use_channels_last(mlp) is False


class _ResidualBN(torch.nn.Module):
    """A ResNet block with a 1x1 shortcut, freshly initialised: the TorchScript exporter folds each
    BatchNorm into its convolution, finds the folded biases equal (all zeros), stores them once and gives
    the other convolutions an Identity of it; and it lists the main path before the shortcut, a valid
    order that is not the order of Kahn's waves."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)
        )
        self.main = torch.nn.Sequential(
            torch.nn.Conv2d(4, 4, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(4),
        )
        self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.main(h) + self.shortcut(h))
        return self.fc(h.mean((2, 3)))


@pytest.fixture(scope="module")
def residual_legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import quiet_export

    path = tmp_path_factory.mktemp("residual") / "residual.onnx"
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    quiet_export(
        _ResidualBN().eval(), (x,), str(path), dynamo=False, opset_version=13, input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )  # fmt: skip
    return path


def test_identity_over_shared_weights_is_bypassed_and_the_model_converts(
    residual_legacy: Path, holdout_x: torch.Tensor
) -> None:
    proto = onnx.load(str(residual_legacy))
    weights = {t.name for t in proto.graph.initializer}
    shared = [n for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in weights]
    assert shared, "the exporter no longer shares the folded biases: this test needs another model"
    handle, adapter = bind(residual_legacy, holdout_x)
    assert adapter.capabilities.gradients, adapter.capabilities.gradient_note
    assert any(f"{len(shared)} Identity node(s) over shared weights" in n for n in handle.notes)
    torch.testing.assert_close(
        adapter.logits(holdout_x).detach(), _ResidualBN().eval()(holdout_x), atol=1e-5, rtol=1e-4
    )


def test_a_graph_already_in_topological_order_is_left_alone(
    residual_legacy: Path, holdout_x: torch.Tensor
) -> None:
    """The skip connection's branches may be listed in any valid order; only an invalid one is sorted."""
    proto = onnx.load(str(residual_legacy))
    order = [n.name for n in proto.graph.node]
    assert not topological_sort(proto.graph)
    assert [n.name for n in proto.graph.node] == order
    handle, _ = bind(residual_legacy, holdout_x)
    assert not any("topological" in n for n in handle.notes)


class _Shifted(torch.nn.Module):
    """A conversion that computes something else: the real one's logits plus one."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 1.0


class _Unrunnable(torch.nn.Module):
    """A conversion that builds but fails when run, as onnx2pytorch's did on a shared Conv bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("Conv2d.forward() takes 2 positional arguments but 3 were given")


@pytest.mark.parametrize(
    ("broken", "why"),
    [(_Shifted, "disagrees with ONNX Runtime by up to 1"), (lambda inner: _Unrunnable(), "Conv2d.forward()")],
)
def test_a_conversion_that_fails_its_check_gives_way_to_the_next_converter(
    monkeypatch: pytest.MonkeyPatch,
    exports: dict[str, Path],
    holdout_x: torch.Tensor,
    broken: object,
    why: str,
) -> None:
    from robaudit.models import conversion

    real = conversion.import_converters

    def first_one_broken() -> tuple[list[tuple[str, object]], list[str]]:
        attempts, failures = real()
        convert = dict(attempts)["onnx2pytorch"]
        return [("onnx2pytorch", lambda m: broken(convert(m))), *attempts[1:]], failures  # type: ignore[operator]

    monkeypatch.setattr(conversion, "import_converters", first_one_broken)
    handle, adapter = bind(exports["legacy"], holdout_x)  # opset 13: onnx2torch converts it too
    assert adapter.capabilities.converter == "onnx2torch"
    assert (adapter.capabilities.parity_max_abs_diff or 1.0) < 1e-4
    assert any("converted with onnx2torch after onnx2pytorch" in n and why in n for n in handle.notes)


def test_every_conversion_disagreeing_names_each_converter(
    exports: dict[str, Path], holdout_x: torch.Tensor
) -> None:
    handle = load_model(AuditConfig(model=exports["legacy"], parity_atol=0.0, parity_rtol=0.0), CPU)
    with pytest.raises(InputError, match=r"onnx2pytorch by up to .*, onnx2torch by up to"):
        handle.bind((1, 28, 28), holdout_x)


def test_a_real_keras_export_is_read_as_it_ships(holdout_x: torch.Tensor) -> None:
    """sample_models/mnist_keras.onnx comes from Keras 3's own ONNX export (tf2onnx) of a Keras CNN:
    channels-last input and a final softmax. robaudit must infer the layout, attack the logits, and
    reproduce the accuracy that Keras and ONNX Runtime measured when it was built."""
    import hashlib
    import json

    from robaudit.api import run_audit

    path = SAMPLES / "mnist_keras.onnx"
    info = json.loads((SAMPLES / "BUILD_INFO_keras.json").read_text())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"][path.name]
    assert info["exporter"].startswith("keras ") and "tf2onnx" in info["exporter"]
    handle, adapter = bind(path, holdout_x)
    assert adapter.preprocessing.layout == "nhwc"
    assert any("graph ends in Softmax" in n for n in handle.notes)
    assert adapter.capabilities.gradients and (adapter.capabilities.parity_max_abs_diff or 1.0) < 1e-4
    result = run_audit(
        AuditConfig(model=path, data=str(SAMPLES / "mnist_holdout.npz"), attacks=("fgsm",), checks=False)
    )
    assert result.clean_accuracy == info["holdout_accuracy"]["onnxruntime"]
    assert result.rows[0].n_robust < result.n_clean_correct  # the attack works through the conversion


class _Scaled255(torch.nn.Module):
    """A model that takes pixels on 0..255 and scales them itself, as Keras' Rescaling(1/255) does."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = small_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x / 255.0)


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_graph_that_scales_its_input_by_1_255_suggests_the_input_range(
    tmp_path: Path, holdout_x: torch.Tensor, dynamo: bool
) -> None:
    from tests.conftest import quiet_export

    path = tmp_path / "scaled.onnx"
    x = torch.rand(2, 1, 28, 28)
    if dynamo:
        quiet_export(
            _Scaled255().eval(), (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},)
        ).save(str(path))  # type: ignore[attr-defined]
    else:
        quiet_export(_Scaled255().eval(), (x,), str(path), dynamo=False, opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "N"}})  # fmt: skip
    hint = "--input-range 0,255"
    handle = load_model(AuditConfig(model=path), CPU)
    assert any("scales its input by 1/255" in n and hint in n for n in handle.notes)
    told = load_model(AuditConfig(model=path, input_range=(0.0, 255.0)), CPU)
    assert not any(hint in n for n in told.notes)
    _, adapter = bind(path, holdout_x, input_range=(0.0, 255.0))  # then it reproduces the source model
    torch.testing.assert_close(
        adapter.logits(holdout_x).detach(), small_cnn()(holdout_x), atol=1e-4, rtol=1e-4
    )
    plain = load_model(AuditConfig(model=SAMPLES / "mnist_cnn.onnx"), CPU)
    assert not any(hint in n for n in plain.notes)


def test_rescales_from_255_reads_the_graphs_first_operation() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from robaudit.models.onnx_graph import rescales_from_255

    def graph(
        op: str, value: float, *, swap: bool = False, as_constant: bool = False, users: int = 1
    ) -> onnx.GraphProto:
        scale = numpy_helper.from_array(np.array(value, dtype=np.float32), "scale")
        nodes = [helper.make_node("Constant", [], ["scale"], value=scale)] if as_constant else []
        operands = ["scale", "image"] if swap else ["image", "scale"]
        nodes.append(helper.make_node(op, operands, ["scaled"]))
        nodes += [helper.make_node("Relu", ["image"], [f"extra{i}"]) for i in range(users - 1)]
        io = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 28, 28, 1])
        out = helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [1, 28, 28, 1])
        return helper.make_graph(nodes, "g", [io], [out], initializer=[] if as_constant else [scale])

    assert rescales_from_255(graph("Mul", 1 / 255), "image")  # Keras' Rescaling, as tf2onnx writes it
    assert rescales_from_255(graph("Mul", 1 / 255, swap=True, as_constant=True), "image")
    assert rescales_from_255(graph("Div", 255.0), "image")
    assert not rescales_from_255(graph("Div", 255.0, swap=True), "image")  # 255 / x
    assert not rescales_from_255(graph("Mul", 0.5), "image")
    assert not rescales_from_255(
        graph("Mul", 1 / 255, users=2), "image"
    )  # the raw input is used elsewhere too


def test_bypassing_identities_keeps_names_that_outputs_and_subgraphs_use() -> None:
    from onnx import TensorProto, helper, numpy_helper

    from robaudit.models.onnx_graph import bypass_initializer_identities

    weight = numpy_helper.from_array(np.ones((2,), dtype=np.float32), "w")
    value = helper.make_tensor_value_info
    branch = helper.make_graph(
        [helper.make_node("Add", ["x", "w_in_branch"], ["b_out"])],
        "branch",
        [],
        [value("b_out", TensorProto.FLOAT, [2])],
    )
    nodes = [
        helper.make_node("Identity", ["w"], ["w_shared"]),  # read by a plain node: bypassed
        helper.make_node("Identity", ["w"], ["w_out"]),  # a graph output: kept
        helper.make_node("Identity", ["w"], ["w_in_branch"]),  # read inside a subgraph: kept
        helper.make_node("Mul", ["x", "w_shared"], ["y"]),
        helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [value("x", TensorProto.FLOAT, [2]), value("cond", TensorProto.BOOL, [])],
        [
            value("y", TensorProto.FLOAT, [2]),
            value("w_out", TensorProto.FLOAT, [2]),
            value("z", TensorProto.FLOAT, [2]),
        ],
        initializer=[weight],
    )
    assert bypass_initializer_identities(graph) == 1
    assert [n.output[0] for n in graph.node if n.op_type == "Identity"] == ["w_out", "w_in_branch"]
    assert next(n for n in graph.node if n.op_type == "Mul").input[1] == "w"
    assert bypass_initializer_identities(graph) == 0


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_float16_graph_is_fed_float16_and_attacked_through_casts(
    tmp_path: Path, holdout_x: torch.Tensor, dynamo: bool
) -> None:
    """Deployment exports are often float16 end to end; robaudit works in float32 around them."""
    from tests.conftest import quiet_export

    half = small_cnn().half().eval()
    path = tmp_path / "half.onnx"
    x = torch.rand(2, 1, 28, 28).half()
    if dynamo:
        quiet_export(half, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},)).save(
            str(path)
        )  # type: ignore[attr-defined]
    else:
        quiet_export(half, (x,), str(path), dynamo=False, opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "N"}})  # fmt: skip
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    handle, adapter = bind(path, holdout_x)
    assert any("takes float16 input" in n for n in handle.notes)
    assert adapter.capabilities.gradients, adapter.capabilities.gradient_note
    expected = half(holdout_x.half()).float()
    torch.testing.assert_close(adapter.predict_logits(holdout_x), expected, atol=2e-2, rtol=1e-2)
    z = holdout_x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(adapter.logits(z)[:, 0].sum(), z)
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0


def test_an_integer_input_graph_is_refused_in_one_line(tmp_path: Path) -> None:
    from tests.conftest import quiet_export

    class TakesBytes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = small_cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.float() / 255.0)

    path = tmp_path / "uint8.onnx"
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    quiet_export(TakesBytes().eval(), (x,), str(path), dynamo=False, opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "N"}})  # fmt: skip
    with pytest.raises(InputError, match=r"input 'x' is of type UINT8; attacks need a float input") as info:
        load_model(AuditConfig(model=path), CPU)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample LeNet quantized to int8 by ONNX Runtime's own static quantization, calibrated on 64
    holdout images, in both of its formats: QDQ (the default) and QOperator."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = tmp_path_factory.mktemp("int8")
    source = SAMPLES / "mnist_cnn.onnx"
    prepared = folder / "prepared.onnx"
    quant_pre_process(str(source), str(prepared))
    with np.load(SAMPLES / "mnist_holdout.npz") as npz:
        x = (npz["x"][:64].astype(np.float32) / 255.0)[:, None]
    name = onnx.load(str(source)).graph.input[0].name

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: x[i : i + 8]} for i in range(0, 64, 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    paths = {}
    for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
        paths[fmt.name] = folder / f"int8_{fmt.name}.onnx"
        quantize_static(str(prepared), str(paths[fmt.name]), Calibration(), quant_format=fmt)
    return paths


def test_a_quantized_qdq_graph_is_attacked_through_its_float_surrogate(
    quantized: dict[str, Path], holdout_x: torch.Tensor
) -> None:
    from robaudit.api import run_audit

    path = quantized["QDQ"]
    handle, adapter = bind(path, holdout_x)
    assert adapter.capabilities.gradients and "float surrogate" in (adapter.capabilities.converter or "")
    note = next(n for n in handle.notes if "quantized graph" in n)
    agreement = float(note.split("predicts as ONNX Runtime on ")[1].split("%")[0])
    assert agreement >= 95.0
    assert adapter.capabilities.surrogate_gap == adapter.capabilities.parity_max_abs_diff > 0
    assert f"wrong class leads by more than {2 * adapter.capabilities.surrogate_gap:.3g}" in note
    result = run_audit(
        AuditConfig(
            model=path,
            data=str(SAMPLES / "mnist_holdout.npz"),
            limit=300,
            attacks=("pgd",),
            steps=10,
            checks=False,
        )
    )
    pgd = result.rows[0]
    assert pgd.n_robust < result.n_clean_correct  # examples confirmed on the int8 graph itself
    # With the margin, nearly every sample fooled on the surrogate is fooled on the int8 graph too: 68 of
    # 70 with ONNX Runtime 1.31's quantizer, every one with the build it was first written on. Without the
    # margin, only 101 of 123 were (82%), so 95% tells the margin's effect apart from the quantizer's.
    assert pgd.n_fooled_converted is not None and pgd.n_fooled_converted > 0
    assert result.n_clean_correct - pgd.n_robust >= 0.95 * pgd.n_fooled_converted


def test_the_float_surrogate_dequantizes_weights_exactly_and_keeps_saturation(
    quantized: dict[str, Path],
) -> None:
    """Each dequantized weight equals what ONNX Runtime's own DequantizeLinear computes from the int8
    weight; no quantized operator is left; each activation rounding became a Clip at the int8 range."""
    import onnxruntime as ort
    from onnx import helper

    from robaudit.models.quantized import float_surrogate

    model = onnx.load(str(quantized["QDQ"]))
    surrogate, how = float_surrogate(model)
    assert surrogate is not None, how
    assert not {n.op_type for n in surrogate.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    floats = {t.name: onnx.numpy_helper.to_array(t) for t in surrogate.graph.initializer}
    inits = {t.name: t for t in model.graph.initializer}
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights
    for node in weights:
        graph = helper.make_graph(
            [
                helper.make_node(
                    "DequantizeLinear",
                    list(node.input),
                    ["w"],
                    name="dq",
                    **{a.name: helper.get_attribute_value(a) for a in node.attribute},
                )
            ],
            "dq",
            [],
            [helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, None)],
            initializer=[inits[i] for i in node.input if i],
        )
        single = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        expected = ort.InferenceSession(single.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {}
        )[0]
        np.testing.assert_array_equal(floats[node.output[0]], expected)
    pairs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits]
    assert sum(n.op_type == "Clip" for n in surrogate.graph.node) == len(pairs) > 0


def test_a_qoperator_graph_says_why_it_has_no_surrogate(
    quantized: dict[str, Path], holdout_x: torch.Tensor
) -> None:
    _, adapter = bind(quantized["QOperator"], holdout_x)
    assert not adapter.capabilities.gradients
    assert "float surrogate: quantized operators remain (" in (adapter.capabilities.gradient_note or "")


class _ReturnsMore(torch.nn.Module):
    """The small CNN behind the output structures real models return."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.inner = small_cnn()
        self.how = how

    def forward(self, x: torch.Tensor) -> Any:
        z = self.inner(x)
        if self.how == "tuple":  # (logits, features), as many research models return
            return z, x.flatten(1)
        if self.how == "dict":
            return {"logits": z, "probabilities": z.softmax(1)}
        return _Output(logits=z)  # Hugging Face's ImageClassifierOutput keeps them in .logits


@dataclasses.dataclass
class _Output:
    logits: torch.Tensor


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("tuple", "a tuple of 2; attacking its first element"),
        ("dict", "a dict; attacking its 'logits'"),
        ("object", "a _Output; attacking its .logits"),
    ],
)
def test_a_model_returning_more_than_scores_is_attacked_on_its_scores(
    tmp_path: Path, holdout_x: torch.Tensor, how: str, said: str
) -> None:
    from robaudit.models.torch_model import module_handle

    model = _ReturnsMore(how).eval()
    if how == "tuple":  # through a real TorchScript file too
        path = tmp_path / "tuple.pt"
        torch.jit.save(torch.jit.trace(model, holdout_x[:2]), str(path))
        handle, adapter = bind(path, holdout_x)
    else:
        handle = module_handle(model, AuditConfig(model=Path("in-memory")), CPU)
        adapter = handle.bind((1, 28, 28), holdout_x)
    assert any(said in n for n in handle.notes)
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), small_cnn()(holdout_x))


def test_a_model_returning_no_scores_says_what_it_returned(holdout_x: torch.Tensor) -> None:
    from robaudit.models.torch_model import module_handle

    class Words(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return {"caption": "a digit"}

    handle = module_handle(Words(), AuditConfig(model=Path("in-memory")), CPU)
    with pytest.raises(InputError, match="it returned dict"):
        handle.bind((1, 28, 28), holdout_x)


def test_a_safetensors_state_dict_loads_with_arch(tmp_path: Path, holdout_x: torch.Tensor) -> None:
    """Hugging Face and timm save weights as safetensors: tensors and a JSON header, no pickle."""
    from safetensors.torch import save_file

    source = small_cnn()
    path = tmp_path / "model.safetensors"
    save_file(source.state_dict(), str(path), metadata={"format": "pt"})
    with pytest.raises(UsageError, match="holds a safetensors state_dict .*--arch"):
        load_model(AuditConfig(model=path), CPU)
    handle, adapter = bind(path, holdout_x, arch="tests.conftest:SmallCNN")
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), source(holdout_x))
    assert adapter.capabilities.gradients
    # Recognised by content too: the same bytes under a name that says nothing.
    renamed = path.rename(tmp_path / "pytorch_model.bin")
    _, adapter = bind(renamed, holdout_x, arch="tests.conftest:SmallCNN")
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), source(holdout_x))


def test_a_half_precision_safetensors_file_loads_into_a_float_model(
    tmp_path: Path, holdout_x: torch.Tensor
) -> None:
    """Weights published in bfloat16 are widened into the float32 model --arch builds."""
    from safetensors.torch import save_file

    source = small_cnn()
    path = tmp_path / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in source.state_dict().items()}, str(path))
    _, adapter = bind(path, holdout_x, arch="tests.conftest:SmallCNN")
    widened = small_cnn()
    widened.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in source.state_dict().items()})
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), widened(holdout_x))
    assert adapter.logits(holdout_x).dtype == torch.float32


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "not a readable safetensors file"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "holds no tensors"),
    ],
)
def test_a_broken_safetensors_file_is_one_input_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_model(AuditConfig(model=path, arch="tests.conftest:SmallCNN"), CPU)


def test_a_torchscript_model_failing_on_the_data_says_why(tmp_path: Path, holdout_x: torch.Tensor) -> None:
    """TorchScript puts its interpreter's traceback before the error; the one line keeps the error."""
    rgb = holdout_x.expand(-1, 3, -1, -1).contiguous()
    handle = load_model(AuditConfig(model=SAMPLES / "mnist_cnn.pt"), CPU)
    with pytest.raises(InputError) as info:
        handle.bind((3, 28, 28), rgb)
    message = str(info.value)
    assert "fails on data of shape 3x28x28" in message
    assert "expected input" in message and "to have 1 channels, but got 3 channels" in message
    assert "\n" not in message


class _TiedWeights(torch.nn.Module):
    """Two layers that share one weight tensor, as tied embeddings or timm's CoaT share theirs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Linear(784, 784, bias=False)
        self.again = torch.nn.Linear(784, 784, bias=True)
        self.again.weight = self.features.weight
        self.head = torch.nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.features(x.flatten(1)))
        return self.head(torch.relu(self.again(h)))


def test_a_safetensors_file_of_a_model_with_shared_weights_loads(
    tmp_path: Path, holdout_x: torch.Tensor
) -> None:
    """safetensors' save_file refuses shared tensors; save_model, its documented way, stores each once."""
    from safetensors.torch import save_file, save_model

    torch.manual_seed(0)
    source = _TiedWeights().eval()
    with pytest.raises(RuntimeError):
        save_file(source.state_dict(), str(tmp_path / "refused.safetensors"))
    path = tmp_path / "tied.safetensors"
    save_model(source, str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as stored:
        assert len(list(stored.keys())) == len(source.state_dict()) - 1  # one name of the pair dropped
    _, adapter = bind(path, holdout_x, arch="tests.test_models:_TiedWeights")
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), source(holdout_x))


class _BlurPool(torch.nn.Module):
    """timm's BlurPool: a fixed filter kept as a non-persistent buffer and used as a depthwise Conv
    weight, which the TorchScript exporter writes as a Constant node."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = k[:, None] * k[None, :]
        self.register_buffer("filt", (k / k.sum()).expand(channels, 1, 3, 3).clone(), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return torch.nn.functional.conv2d(padded, self.filt, stride=2, groups=self.channels)


def test_a_constant_used_as_a_conv_weight_converts(tmp_path: Path, holdout_x: torch.Tensor) -> None:
    torch.manual_seed(0)
    source = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), _BlurPool(8), torch.nn.Flatten(),
        torch.nn.Linear(8 * 14 * 14, 10),
    ).eval()  # fmt: skip
    path = tmp_path / "blur.onnx"
    with warnings.catch_warnings():  # the exporter's own notices about constant folding
        warnings.simplefilter("ignore")
        torch.onnx.export(
            source, (holdout_x[:2],), str(path), dynamo=False, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        )  # fmt: skip
    conv_inputs = {name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv" for name in n.input}
    constants = {n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Constant"}
    assert conv_inputs & constants  # the exporter wrote the filter as a Constant node
    handle, adapter = bind(path, holdout_x)
    assert adapter.capabilities.gradients, adapter.capabilities.gradient_note
    assert any("1 Constant node(s) used as layer weights" in note for note in handle.notes)
    torch.testing.assert_close(adapter.logits(holdout_x).detach(), source(holdout_x), atol=1e-5, rtol=1e-4)
