"""Build the small MLP sample model that exact (MILP) verification finishes on, deterministically.

    python sample_models/build_mlp.py

784-100-100-10 ReLU network, PGD adversarially trained (Madry et al. 2018) at L∞ eps 0.1 on MNIST test
images 0-7999, as the other sample models; images 8000-9999 (mnist_holdout.npz) are its evaluation set.
A small L1 penalty on the weights keeps the network sparse, which keeps more ReLUs stable under
perturbation and so keeps the exact verifier's mixed-integer programs small (Xiao et al. 2019).

Writes:
  mnist_mlp_adv.pt, mnist_mlp_adv.onnx   the model (TorchScript; torch.onnx dynamo exporter)
  BUILD_INFO_mlp.json                    recipe, versions, holdout accuracy, sha256 of both files
"""

from __future__ import annotations

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
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from robaudit.data.mnist import open_mnist  # noqa: E402

SEED = 0
N_TRAIN = 8000
EPOCHS = 30
BATCH = 64
EPS = 0.1
PGD_STEPS = 7
PGD_STEP = 0.025
L1 = 1e-5
WARMUP = 3  # epochs whose eps ramps linearly from 0 to EPS


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """L∞ PGD with a random start, inside the ball ∩ [0, 1]."""
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(PGD_STEPS):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = x_adv.detach() + PGD_STEP * g.sign()
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def train(x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    torch.manual_seed(SEED)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        eps = EPS * min(1.0, (epoch + 1) / WARMUP)
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), BATCH):
            ib = perm[start : start + BATCH]
            xb, yb = x[ib], y[ib]
            model.eval()
            x_adv = pgd(model, xb, yb, eps, gen)
            model.train()
            l1 = sum(m.weight.abs().sum() for m in model if isinstance(m, nn.Linear))
            loss = F.cross_entropy(model(x_adv), yb) + L1 * l1
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    mnist = open_mnist()
    images = mnist.read(np.arange(len(mnist)))
    x = torch.from_numpy(images[:N_TRAIN].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(mnist.labels[:N_TRAIN])
    x_hold = torch.from_numpy(images[N_TRAIN:].astype(np.float32) / 255.0).unsqueeze(1)
    y_hold = torch.from_numpy(mnist.labels[N_TRAIN:])
    model = train(x, y)
    example = x_hold[:2]
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    program.save(str(HERE / "mnist_mlp_adv.onnx"), external_data=False)
    torch.jit.save(torch.jit.trace(model, example), str(HERE / "mnist_mlp_adv.pt"))
    gen = torch.Generator().manual_seed(SEED + 1)
    robust = accuracy(model, pgd(model, x_hold, y_hold, EPS, gen), y_hold)
    info = {
        "seed": SEED,
        "architecture": "Flatten, Linear(784, 100), ReLU, Linear(100, 100), ReLU, Linear(100, 10)",
        "train_images": f"MNIST test 0-{N_TRAIN - 1}",
        "holdout_images": f"MNIST test {N_TRAIN}-9999",
        "epochs": EPOCHS,
        "optimizer": "Adam lr 1e-3, cosine schedule, batch 64",
        "adversarial_training": {
            "attack": "pgd",
            "norm": "linf",
            "eps": EPS,
            "steps": PGD_STEPS,
            "step_size": PGD_STEP,
            "random_start": True,
            "eps_warmup_epochs": WARMUP,
        },
        "l1_weight_penalty": L1,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "holdout_accuracy": round(accuracy(model, x_hold, y_hold), 4),
        "holdout_pgd7_accuracy_at_eps": round(robust, 4),
        "sha256": {
            name: hashlib.sha256((HERE / name).read_bytes()).hexdigest()
            for name in ("mnist_mlp_adv.onnx", "mnist_mlp_adv.pt")
        },
    }
    (HERE / "BUILD_INFO_mlp.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({"accuracy": info["holdout_accuracy"], "pgd7": info["holdout_pgd7_accuracy_at_eps"]}))


if __name__ == "__main__":
    main()
