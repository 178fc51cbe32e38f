"""Sparse-RS against differential evolution (one-pixel) under the L0 threat model, on the sample LeNet
or a CIFAR-shaped CNN.

Run by hand from the repository root (never part of the test suite)::

    python benchmarks/sparse_l0.py --n 200 --n-onepixel 40 --json l0.json

Both attacks query the ONNX file through ONNX Runtime on the CPU (the reference runtime, as ``robaudit
scan`` gives it to score-based attacks; no conversion), in this one process, one thread each, on the
first ``--n`` holdout images (``sample_models/mnist_holdout.npz``) that the model classifies correctly.
Queries are counted here, by the model function the attacks call (one per image evaluated), and every
candidate is checked: at most k changed pixel locations, values in [0, 1]. A sample counts as fooled
when ONNX Runtime's prediction on the returned image differs from its label.

``--model cifar-shaped`` attacks instead the 3 x 32 x 32 CNN of ``autoattack_compare.py`` (trained
there in seconds, seeded, on tinted holdout images 1000-1999) through PyTorch on tinted holdout images
0.., where one pixel (all three channels) fools far more samples than on the greyscale LeNet.

Part 1: at 1 pixel, one-pixel at its defaults (population 400, 100 generations: at most 40,400 queries per
sample) against Sparse-RS with ``--queries-k1`` (a quarter of that by default), on the first
``--n-onepixel`` images. Part 2: Sparse-RS's robust accuracy over k = ``--pixels`` at ``--queries``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from robaudit.attacks.norms import lp_norm
from robaudit.attacks.onepixel import OnePixel
from robaudit.attacks.rng import sample_seeds
from robaudit.attacks.sparse_rs import SparseRS

ROOT = Path(__file__).resolve().parents[1]


class Counted:
    """The ONNX model (or a torch module) as a logits function that counts the images it is asked about."""

    def __init__(self, path: Path | None = None, module: torch.nn.Module | None = None) -> None:
        self.module = module
        self.queries = 0
        if path is None:
            return
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.queries = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        if self.module is not None:
            with torch.no_grad():
                return self.module(x)
        out = self.session.run(None, {self.input: np.ascontiguousarray(x.numpy(), np.float32)})[0]
        return torch.from_numpy(out)


def cifar_shaped() -> Counted:
    """``autoattack_compare.py``'s CIFAR-shaped CNN, trained here (seeded)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from autoattack_compare import tinted, train_cifar_shaped

    with np.load(ROOT / "sample_models" / "mnist_holdout.npz") as data:
        module = train_cifar_shaped(tinted(data["x"][1000:2000], 1), data["y"][1000:2000].astype(np.int64))
    return Counted(module=module)


def load(model: Counted, n: int, colour: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first n correctly classified holdout images, their labels and their per-sample seeds (tinted
    3 x 32 x 32 as ``autoattack_compare.py`` makes them when ``colour``)."""
    with np.load(ROOT / "sample_models" / "mnist_holdout.npz") as data:
        raw = data["x"][: min(2 * n + 50, 1000)]
        y = torch.from_numpy(data["y"][: len(raw)].astype(np.int64))
    if colour:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from autoattack_compare import tinted

        x = torch.from_numpy(tinted(raw, 0).astype(np.float32) / 255)
    else:
        x = torch.from_numpy(raw[:, None].astype(np.float32) / 255)
    keep = torch.nonzero(model(x).argmax(1) == y).flatten()[:n]
    return x[keep], y[keep], torch.from_numpy(sample_seeds(0, keep.numpy()))


def run(
    name: str, attack: object, model: Counted, x: torch.Tensor, y: torch.Tensor, seeds: torch.Tensor, k: int
) -> dict:
    model.queries = 0
    start = time.perf_counter()
    x_adv = attack(model, x, y, eps=float(k), norm="l0", seeds=seeds)  # type: ignore[operator]
    seconds = time.perf_counter() - start
    queries = model.queries
    inside = bool((lp_norm(x_adv - x, "l0") <= k).all() and (x_adv >= 0).all() and (x_adv <= 1).all())
    fooled_mask = model(x_adv).argmax(1) != y
    fooled = int(fooled_mask.sum())
    return {
        "attack": name,
        "pixels": k,
        "n": len(y),
        "fooled": fooled,
        "robust_accuracy": 1 - fooled / len(y),
        "queries": queries,
        "queries_per_sample": queries / len(y),
        "seconds": round(seconds, 2),
        "inside_threat_model": inside,
        "fooled_rows": torch.nonzero(fooled_mask).flatten().tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--n-onepixel", type=int, default=40)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--queries-k1", type=int, default=10100)
    parser.add_argument("--population", type=int, default=400)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--pixels", default="1,2,5,10,20")
    parser.add_argument("--model", choices=("lenet", "cifar-shaped"), default="lenet")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    colour = args.model == "cifar-shaped"
    model = cifar_shaped() if colour else Counted(ROOT / "sample_models" / "mnist_cnn.onnx")
    x, y, seeds = load(model, max(args.n, args.n_onepixel), colour)
    m = args.n_onepixel
    rows = [
        run("onepixel", OnePixel(population=args.population, generations=args.generations), model, x[:m], y[:m], seeds[:m], 1),
        run("sparse-rs", SparseRS(pixels=1, queries=args.queries_k1), model, x[:m], y[:m], seeds[:m], 1),
    ]  # fmt: skip
    curve = [
        run("sparse-rs", SparseRS(pixels=k, queries=args.queries), model, x[: args.n], y[: args.n], seeds[: args.n], k)
        for k in (int(p) for p in args.pixels.split(",") if p)
    ]  # fmt: skip
    runtime = "PyTorch" if colour else "ONNX Runtime"
    print(f"Part 1: 1 pixel, {m} images, {args.model}, {runtime} on the CPU, 1 thread")
    print("| attack | budget per sample | fooled | queries per sample | seconds | inside |")
    print("|---|---|---|---|---|---|")
    budgets = [f"{args.population} x {args.generations}", f"{args.queries_k1} queries"]
    for row, budget in zip(rows, budgets, strict=True):
        print(
            f"| {row['attack']} | {budget} | {row['fooled']}/{row['n']} | {row['queries_per_sample']:.0f} | "
            f"{row['seconds']:.1f} | {row['inside_threat_model']} |"
        )
    only_de = sorted(set(rows[0]["fooled_rows"]) - set(rows[1]["fooled_rows"]))
    only_rs = sorted(set(rows[1]["fooled_rows"]) - set(rows[0]["fooled_rows"]))
    print(f"fooled by DE only: {only_de}; by Sparse-RS only: {only_rs} (rows of the {m} images)")
    print(f"\nPart 2: Sparse-RS at {args.queries} queries, {args.n} images")
    print("| pixels | robust accuracy | fooled | queries per sample | seconds | inside |")
    print("|---|---|---|---|---|---|")
    for row in curve:
        print(
            f"| {row['pixels']} | {100 * row['robust_accuracy']:.1f}% | {row['fooled']}/{row['n']} | "
            f"{row['queries_per_sample']:.0f} | {row['seconds']:.1f} | {row['inside_threat_model']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"k1": rows, "curve": curve}, indent=2))


if __name__ == "__main__":
    main()
