"""Tiny deterministic models and data, exported inside fixtures by the real exporters."""

from __future__ import annotations

import contextlib
import io
import os
import random
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import settings
from onnx import TensorProto, helper, numpy_helper
from torch import nn

# CI runs the property tests on a fixed sequence of examples, so a landing never turns red by the luck of
# the draw; local runs explore new examples each time (and keep failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_models"
HOLDOUT = SAMPLES / "mnist_holdout.npz"
ASSETS = Path(__file__).resolve().parent / "assets"


class SmallCNN(nn.Module):
    """A small CNN with random (seeded) weights; parity tests need no training."""

    def __init__(self, channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 8, 5)
        self.fc = nn.Linear(8 * 5 * 5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.reshape(x.shape[0], -1))


class Linear(nn.Module):
    """logits = W x + b on flattened input: robustness to FGSM is known exactly."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def small_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN().eval()


def assert_same_points(a: torch.Tensor, b: torch.Tensor, model: nn.Module) -> None:
    """Two PGD runs whose working batches differed returned the same points, up to float rounding: a
    convolution's backward pass may round a sample's gradient differently with the batch's size, and an
    L2 step carries that into the point. 1e-6 lies far below any step these tests take, so a wrong
    iterate kept still fails; and the model must classify both sets of points alike."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(a).argmax(1), model(b).argmax(1))


def quiet_export(*args: object, **kwargs: object) -> object:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return torch.onnx.export(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def holdout_x() -> torch.Tensor:
    """32 real MNIST holdout images on [0, 1], (32, 1, 28, 28)."""
    with np.load(HOLDOUT) as npz:
        return torch.from_numpy(npz["x"][:32].astype(np.float32) / 255.0).unsqueeze(1)


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 real MNIST holdout images as uint8 NHW with labels."""
    path = tmp_path_factory.mktemp("data") / "small.npz"
    with np.load(HOLDOUT) as npz:
        np.savez(path, x=npz["x"][:64], y=npz["y"][:64])
    return path


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small CNN saved by every exporter and format robaudit loads."""
    out = tmp_path_factory.mktemp("models")
    model = small_cnn()
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    paths: dict[str, Path] = {}

    paths["legacy"] = out / "legacy.onnx"
    quiet_export(
        model,
        (x,),
        str(paths["legacy"]),
        dynamo=False,
        opset_version=13,
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )
    paths["dynamo"] = out / "dynamo.onnx"
    program = quiet_export(model, (x,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(paths["dynamo"]))  # type: ignore[attr-defined]
    paths["dynamo_fixed1"] = out / "dynamo_fixed1.onnx"
    program = quiet_export(model, (x[:1],), dynamo=True)
    program.save(str(paths["dynamo_fixed1"]))  # type: ignore[attr-defined]

    class NHWCSoftmax(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(t.permute(0, 3, 1, 2)), dim=-1)

    paths["nhwc_softmax"] = out / "nhwc_softmax.onnx"
    quiet_export(
        NHWCSoftmax().eval(),
        (x.permute(0, 2, 3, 1),),
        str(paths["nhwc_softmax"]),
        dynamo=False,
        opset_version=13,
        input_names=["input_1"],
        dynamic_axes={"input_1": {0: "N"}},
    )

    # Unsorted nodes, as real Keras exports ship them: reverse the legacy graph's node order.
    proto = onnx.load(str(paths["legacy"]))
    nodes = list(proto.graph.node)
    random.Random(0).shuffle(nodes)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    paths["unsorted"] = out / "unsorted.onnx"
    onnx.save(proto, str(paths["unsorted"]))

    paths["torchscript"] = out / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, x), str(paths["torchscript"]))
    paths["pt2"] = out / "model.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(paths["pt2"]))
    paths["state_dict"] = out / "state.pt"
    torch.save(model.state_dict(), paths["state_dict"])
    paths["pickled"] = out / "pickled.pt"
    torch.save(model, paths["pickled"])
    return paths


def save_handmade(graph: onnx.GraphProto, path: Path, opset: int = 13) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what ONNX Runtime reads; onnx's default IR can be newer
    onnx.save(model, str(path))
    return path


def same_upper_model(path: Path) -> Path:
    """A Model Zoo mnist-8-style graph: Conv with auto_pad=SAME_UPPER, ReLU, MaxPool, MatMul."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (4, 1, 5, 5)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.1, (4 * 14 * 14, 10)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([-1, 4 * 14 * 14], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[5, 5], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "same_upper",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w, fc, shape],
    )
    return save_handmade(graph, path)


def unconvertible_model(path: Path) -> Path:
    """A graph ONNX Runtime runs but no converter handles (the contrib op com.microsoft::QuickGelu, as
    ONNX Runtime's graph optimiser writes it): only gradient-free attacks could run."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("QuickGelu", ["f"], ["y"], domain="com.microsoft", alpha=1.702),
    ]
    graph = helper.make_graph(
        nodes,
        "quickgelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
