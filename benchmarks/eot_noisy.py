"""EOT against a randomised model: the sample LeNet behind Gaussian input noise (sigma = 0.2).

    python benchmarks/eot_noisy.py [--n 200] [--steps 50] [--eps 0.1 --eps 0.2] [--json out.json]

Audits sample_models/mnist_cnn_noisy.pt (TorchScript) and mnist_cnn_noisy.onnx (a RandomNormalLike
graph: ONNX Runtime verifies, its onnx2pytorch conversion gives the gradients) with robaudit's own
run_audit, three ways, each evaluated alike (every prediction the majority of --eot-evals passes):

  pgd       PGD without EOT (one gradient sample per step, --eot 1)
  apgd      APGD without EOT (--eot 1), to separate the optimiser from EOT
  apgd-eot  APGD with EOT (--eot 10, the default on a model found random)

Prints a Markdown table of robust accuracy per (model, attack, eps) and the wall time of each audit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robaudit.api import run_audit  # noqa: E402
from robaudit.config import AuditConfig  # noqa: E402

MODELS = ("mnist_cnn_noisy.pt", "mnist_cnn_noisy.onnx")
RUNS = (("pgd", "pgd", 1), ("apgd", "apgd", 1), ("apgd-eot", "apgd", 10))


def audit(model: str, attack: str, eot: int, args: argparse.Namespace) -> dict[str, object]:
    config = AuditConfig(
        model=REPO / "sample_models" / model,
        data=str(REPO / "sample_models" / "mnist_holdout.npz"),
        limit=args.n,
        attacks=(attack,),
        eps=tuple(args.eps),
        steps=args.steps,
        eot=eot,
        eot_evals=args.evals,
        seed=args.seed,
        checks=False,
    )  # type: ignore[call-arg]
    start = time.perf_counter()
    result = run_audit(config)
    seconds = time.perf_counter() - start
    rows = {r.eps: r for r in result.rows if r.attack != "worst-case"}
    return {
        "clean_accuracy": result.clean_accuracy,
        "settings": {k: result.settings[k] for k in ("random_model", "eot", "eot_evals")},
        "robust_accuracy": {str(eps): rows[eps].robust_accuracy for eps in sorted(rows)},
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eps", type=float, action="append")
    parser.add_argument("--evals", type=int, default=11, help="--eot-evals for every audit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", default=",".join(r[0] for r in RUNS), help="which of pgd,apgd,apgd-eot")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.eps = args.eps or [0.1, 0.2]
    results = []
    for model in args.models.split(","):
        for label, attack, eot in (r for r in RUNS if r[0] in args.runs.split(",")):
            cell = {"model": model, "attack": label, "eot": eot, **audit(model, attack, eot, args)}
            results.append(cell)
            print(json.dumps(cell), file=sys.stderr, flush=True)
    print(
        f"torch threads: {torch.get_num_threads()}; n = {args.n}, steps = {args.steps}, eot_evals = {args.evals}\n"
    )
    eps_cols = " | ".join(f"robust acc eps={e}" for e in args.eps)
    print(f"| model | attack | eot | clean acc | {eps_cols} | time (s) |")
    print("|---|---|---|---|" + "---|" * len(args.eps) + "---|")
    for c in results:
        accs = " | ".join(f"{c['robust_accuracy'][str(e)]:.1%}" for e in args.eps)  # type: ignore[index]
        print(
            f"| {c['model']} | {c['attack']} | {c['eot']} | {c['clean_accuracy']:.1%} | {accs} | {c['seconds']} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "cells": results}, indent=2)
        )


if __name__ == "__main__":
    main()
