"""Square under L2 against PGD and APGD on the sample LeNet: the score-based attack's strength.

Run by hand from the repository root (never part of the test suite)::

    python benchmarks/square_l2.py --n 40 --eps 2 --queries 1000,5000 --torchattacks

Square queries the ONNX file through ONNX Runtime (no conversion, no gradients); PGD and APGD attack the
PyTorch copy of the same weights (``mnist_cnn.pt``). All run in this one process on one thread, on the
first ``--n`` holdout images both models classify correctly, and every success is recomputed on ONNX
Runtime. With ``--torchattacks``, torchattacks' Square (L2, p_init 0.1, its seed 0) runs at the smallest
budget on the PyTorch copy, as a check that robaudit's Square is as strong as the reference code.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.sparse_l0 import ROOT, Counted, load
from robaudit.attacks.apgd import APGD
from robaudit.attacks.norms import lp_norm
from robaudit.attacks.pgd import PGD
from robaudit.attacks.square import Square


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--eps", type=float, default=2.0)
    parser.add_argument("--queries", default="1000,5000")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--torchattacks", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    onnx = Counted(ROOT / "sample_models" / "mnist_cnn.onnx")
    torch_model = torch.jit.load(str(ROOT / "sample_models" / "mnist_cnn.pt")).eval()
    x, y, seeds = load(onnx, args.n)
    eps, rows = args.eps, []

    def record(name: str, x_adv: torch.Tensor, seconds: float, queries: float | None) -> None:
        inside = bool(
            (lp_norm(x_adv - x, "l2") <= eps + 1e-6).all() and (x_adv >= 0).all() and (x_adv <= 1).all()
        )
        fooled = int((onnx(x_adv).argmax(1) != y).sum())
        rows.append({"attack": name, "n": len(y), "fooled": fooled, "robust_accuracy": 1 - fooled / len(y),
                     "seconds": round(seconds, 1), "queries_per_sample": queries, "inside": inside})  # fmt: skip

    for name, attack in (
        (f"pgd-{args.steps}", PGD(steps=args.steps)),
        (f"apgd-ce-{args.steps}", APGD(steps=args.steps)),
        (f"apgd-dlr-{args.steps}", APGD(steps=args.steps, loss="dlr")),
    ):
        start = time.perf_counter()
        x_adv = attack(torch_model, x, y, eps=eps, norm="l2", seeds=seeds)
        record(name, x_adv, time.perf_counter() - start, None)
    budgets = [int(q) for q in args.queries.split(",")]
    for q in budgets:
        onnx.queries = 0
        start = time.perf_counter()
        x_adv = Square(queries=q)(onnx, x, y, eps=eps, norm="l2", seeds=seeds)
        record(f"square-{q}", x_adv, time.perf_counter() - start, onnx.queries / len(y))
    if args.torchattacks:
        import torchattacks

        start = time.perf_counter()
        ta = torchattacks.Square(torch_model, norm="L2", eps=eps, n_queries=budgets[0], p_init=0.1, seed=0)
        record(f"torchattacks-square-{budgets[0]}", ta(x, y), time.perf_counter() - start, None)
    print(f"L2 eps={eps:g}, {len(y)} LeNet holdout images, 1 thread")
    print("| attack | robust accuracy | fooled | queries per sample | seconds | inside |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        q = "" if r["queries_per_sample"] is None else f"{r['queries_per_sample']:.0f}"
        print(
            f"| {r['attack']} | {100 * r['robust_accuracy']:.1f}% | {r['fooled']}/{r['n']} | {q} | {r['seconds']} | {r['inside']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
