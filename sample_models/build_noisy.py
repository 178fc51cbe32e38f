"""Build the randomised sample model: the sample LeNet behind Gaussian input noise (sigma = 0.2).

    python sample_models/build_noisy.py

The noise is drawn at every forward pass, in eval mode too: a randomised defence in the style of
Cohen et al.'s smoothed classifiers (one draw per prediction), the kind of model that expectation over
transformation (Athalye et al. 2018) is for. No training: the weights are mnist_cnn_state.pt's.

Writes:
  mnist_cnn_noisy.pt      TorchScript (traced; torch.randn_like stays a random op in the graph)
  mnist_cnn_noisy.onnx    ONNX from the torch.onnx dynamo exporter: a RandomNormalLike node
  BUILD_INFO_noisy.json   sigma, versions, the mean holdout accuracy over draws, sha256 of both files
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sample_models.lenet import LeNet  # noqa: E402

SIGMA = 0.2
SEED = 0


class NoisyInput(nn.Module):
    """``inner(x + sigma * N(0, 1))``, a fresh draw at every pass (no clipping: the noise is the defence)."""

    def __init__(self, inner: nn.Module, sigma: float = SIGMA) -> None:
        super().__init__()
        self.inner = inner
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.sigma * torch.randn_like(x))


def noisy_lenet() -> NoisyInput:
    lenet = LeNet()
    lenet.load_state_dict(torch.load(HERE / "mnist_cnn_state.pt", weights_only=True))
    return NoisyInput(lenet.eval()).eval()


def main() -> None:
    torch.manual_seed(SEED)
    model = noisy_lenet()
    holdout = np.load(HERE / "mnist_holdout.npz")
    x = torch.from_numpy(holdout["x"].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(holdout["y"])
    example = x[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns that a random op is not reproducible
        traced = torch.jit.trace(model, example, check_trace=False)
    torch.jit.save(traced, str(HERE / "mnist_cnn_noisy.pt"))
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
        )
    program.save(str(HERE / "mnist_cnn_noisy.onnx"), external_data=False)
    ops = sorted({n.op_type for n in onnx.load(str(HERE / "mnist_cnn_noisy.onnx")).graph.node})
    assert "RandomNormalLike" in ops, ops
    with torch.no_grad():
        draws = [float((model(x).argmax(1) == y).float().mean()) for _ in range(5)]
    files = [HERE / "mnist_cnn_noisy.pt", HERE / "mnist_cnn_noisy.onnx"]
    info = {
        "base_weights": "mnist_cnn_state.pt (see BUILD_INFO.json)",
        "sigma": SIGMA,
        "seed": SEED,
        "onnx_random_ops": [op for op in ops if op.startswith("Random")],
        "holdout_accuracy_mean_of_5_draws": round(float(np.mean(draws)), 4),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        },
        "sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
    }
    (HERE / "BUILD_INFO_noisy.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({k: info[k] for k in ("sigma", "holdout_accuracy_mean_of_5_draws")}))


if __name__ == "__main__":
    main()
