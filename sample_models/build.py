"""Build robaudit's sample models from the bundled MNIST test set, deterministically.

    python sample_models/build.py                 # every file
    python sample_models/build.py --only mixed    # only mnist_cnn_mixed.{onnx,pt}; BUILD_INFO.json updated

A full rebuild reproduces the weights but not the bytes of the committed .pt/.onnx files (their
serialisation differs between runs), so adding a model uses ``--only`` and leaves the other files alone.

Trains on MNIST test images 0-7999 and writes images 8000-9999 to mnist_holdout.npz, the sample
models' evaluation set (evaluating them on all of `--data mnist` would include their training images).

Writes:
  mnist_cnn.onnx, mnist_cnn.pt            LeNet-like CNN (torch.onnx dynamo exporter; TorchScript)
  mnist_cnn_state.pt                      its state_dict (use with --arch sample_models.lenet:LeNet)
  mnist_cnn_adv.onnx, mnist_cnn_adv.pt    the same architecture, FGSM adversarially trained with
                                          Goodfellow et al.'s mixed objective (alpha = 0.5, eps = 0.25)
  mnist_cnn_mixed.onnx, mnist_cnn_mixed.pt  the same architecture, "mixed" training: each epoch's FGSM
                                          examples (eps = 0.25, made once from the model as it stands at
                                          the epoch's start) are extra training data beside the clean images
  mnist_nhwc_softmax.onnx                 NHWC input, softmax output, as Keras/tf2onnx exports look
  mnist_holdout.npz                       x: uint8 (2000, 28, 28), y: int64 (2000,)
  BUILD_INFO.json                         seeds, versions, accuracies, sha256 of every file
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from robaudit.data.mnist import open_mnist  # noqa: E402
from sample_models.lenet import LeNet, NHWCSoftmax  # noqa: E402

SEED = 0
N_TRAIN = 8000
EPOCHS = 12
BATCH = 64
ADV_EPS = 0.25
ADV_ALPHA = 0.5
FGSM_BATCH = 500  # batch for making an epoch's FGSM examples; each example depends on its own image only
MIXED_RECIPE = {
    "attack": "fgsm",
    "eps": ADV_EPS,
    "examples": "made once per epoch, from the model as it stands at the epoch's start",
    "training_set": "the clean images plus that epoch's FGSM examples as extra items (twice the images), "
    "shuffled together; plain cross-entropy on each item",
}


def fgsm_epoch(model: LeNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FGSM examples of every training image from the model as it stands now (no parameter update)."""
    model.eval()
    out = []
    for start in range(0, len(x), FGSM_BATCH):
        xb = x[start : start + FGSM_BATCH].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xb), y[start : start + FGSM_BATCH]), xb)
        out.append((xb + ADV_EPS * g.sign()).clamp(0, 1).detach())
    return torch.cat(out)


def train_mixed(x: torch.Tensor, y: torch.Tensor) -> LeNet:
    """ "Mixed" training: each epoch trains on the clean images plus FGSM examples made once, at the
    epoch's start, as separate items. Unlike the adversarial model's per-step objective, the examples
    come from a model that is up to one epoch old and are not paired with their clean image in a batch."""
    torch.manual_seed(SEED)
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        x_all = torch.cat([x, fgsm_epoch(model, x, y)])
        y_all = torch.cat([y, y])
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        for start in range(0, len(x_all), BATCH):
            idx = perm[start : start + BATCH]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def train(x: torch.Tensor, y: torch.Tensor, adversarial: bool) -> LeNet:
    torch.manual_seed(SEED)
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), BATCH):
            idx = perm[start : start + BATCH]
            xb, yb = x[idx], y[idx]
            if adversarial:
                xr = xb.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(model(xr), yb), xr)
                x_adv = (xb + ADV_EPS * g.sign()).clamp(0, 1).detach()
                loss = ADV_ALPHA * F.cross_entropy(model(xb), yb) + (1 - ADV_ALPHA) * F.cross_entropy(
                    model(x_adv), yb
                )
            else:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def export_onnx_dynamo(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
        )
    program.save(str(path), external_data=False)


def load_split() -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    mnist = open_mnist()
    images = mnist.read(np.arange(len(mnist)))
    x = torch.from_numpy(images[:N_TRAIN].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(mnist.labels[:N_TRAIN])
    x_hold = torch.from_numpy(images[N_TRAIN:].astype(np.float32) / 255.0).unsqueeze(1)
    y_hold = torch.from_numpy(mnist.labels[N_TRAIN:])
    return images, mnist.labels, x, y, x_hold, y_hold


def export(model: LeNet, example: torch.Tensor, name: str) -> None:
    export_onnx_dynamo(model, example, HERE / f"{name}.onnx")
    torch.jit.save(torch.jit.trace(model, example), str(HERE / f"{name}.pt"))


def build_mixed_only() -> None:
    """Adds mnist_cnn_mixed to the committed files: only its two files are written, and BUILD_INFO.json
    gains its accuracy, recipe and digests (the other entries are kept as they are)."""
    _, _, x, y, x_hold, y_hold = load_split()
    model = train_mixed(x, y)
    export(model, x_hold[:2], "mnist_cnn_mixed")
    info = json.loads((HERE / "BUILD_INFO.json").read_text())
    info["mixed_training"] = MIXED_RECIPE
    info["holdout_accuracy"]["mnist_cnn_mixed"] = round(accuracy(model, x_hold, y_hold), 4)
    for f in ("mnist_cnn_mixed.onnx", "mnist_cnn_mixed.pt"):
        info["sha256"][f] = hashlib.sha256((HERE / f).read_bytes()).hexdigest()
    info["sha256"] = dict(sorted(info["sha256"].items()))
    (HERE / "BUILD_INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info["holdout_accuracy"]))


def build_all() -> None:
    images, labels, x, y, x_hold, y_hold = load_split()
    np.savez(HERE / "mnist_holdout.npz", x=images[N_TRAIN:], y=labels[N_TRAIN:].astype(np.int64))
    info: dict[str, object] = {
        "seed": SEED,
        "train_images": f"MNIST test 0-{N_TRAIN - 1}",
        "holdout_images": f"MNIST test {N_TRAIN}-9999",
        "epochs": EPOCHS,
        "adversarial_training": {"attack": "fgsm", "eps": ADV_EPS, "alpha": ADV_ALPHA},
        "mixed_training": MIXED_RECIPE,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "holdout_accuracy": {},
    }
    example = x_hold[:2]
    for name, adversarial in (("mnist_cnn", False), ("mnist_cnn_adv", True)):
        model = train(x, y, adversarial)
        info["holdout_accuracy"][name] = round(accuracy(model, x_hold, y_hold), 4)  # type: ignore[index]
        export(model, example, name)
        if not adversarial:
            torch.save(model.state_dict(), HERE / "mnist_cnn_state.pt")
            export_nhwc(model, example)
    mixed = train_mixed(x, y)
    info["holdout_accuracy"]["mnist_cnn_mixed"] = round(accuracy(mixed, x_hold, y_hold), 4)  # type: ignore[index]
    export(mixed, example, "mnist_cnn_mixed")
    files = sorted(p for p in HERE.iterdir() if p.suffix in {".onnx", ".pt", ".npz"})
    info["sha256"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    (HERE / "BUILD_INFO.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info["holdout_accuracy"]))


def export_nhwc(model: LeNet, example: torch.Tensor) -> None:
    nhwc = NHWCSoftmax(model).eval()
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            nhwc,
            (example.permute(0, 2, 3, 1),),
            str(HERE / "mnist_nhwc_softmax.onnx"),
            dynamo=False,
            opset_version=13,
            input_names=["input_1"],
            output_names=["dense_1"],
            dynamic_axes={"input_1": {0: "N"}, "dense_1": {0: "N"}},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Build robaudit's sample models deterministically.")
    parser.add_argument(
        "--only",
        choices=["mixed"],
        help="build only this model and add it to BUILD_INFO.json, leaving the committed files as they are",
    )
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.only == "mixed":
        build_mixed_only()
    else:
        build_all()


if __name__ == "__main__":
    main()
