"""Exact verification's counterexamples as adversarial examples, on the sample MLP through ONNX Runtime.

Run by hand from the repository root (never part of the test suite)::

    python benchmarks/exact_counterexamples.py --n 50 --eps 0.05 0.1 --weak fgsm --json exact_cex.json

Per L∞ ε, on the first ``--n`` holdout images, ``sample_models/mnist_mlp_adv.onnx`` is scanned twice:

* a deliberately weak attack, with ``--certify exact``: FGSM, or with ``--weak pgd1`` one PGD step of
  a hundredth of ε from a random start (nearly no attack at all, so that exact verification has the
  non-robust samples to find): the samples the attack fooled, those exact
  verification proved not robust whose counterexample ONNX Runtime confirmed (the ``exact`` row), those
  it did not confirm, the certified and the unknown, and the worst case;
* PGD-40 alone, no certificate: its robust accuracy, and how many of the samples exact counted it also
  fooled (a check that the counterexamples are the attacks' kind of adversarial example).

Torch runs ``--threads`` threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robaudit.api import run_audit  # noqa: E402
from robaudit.config import AuditConfig  # noqa: E402

MODEL = REPO / "sample_models" / "mnist_mlp_adv.onnx"
DATA = REPO / "sample_models" / "mnist_holdout.npz"


WEAK = {"fgsm": {"name": "fgsm"}, "pgd1": {"name": "pgd", "steps": 1, "rel_step_size": 0.01}}
STRONG = {"name": "pgd", "steps": 40}


def _scan(n: int, eps: float, attack: dict, certify: str, time_limit: float, out: Path) -> tuple[dict, float]:
    config = AuditConfig(
        model=MODEL, data=str(DATA), limit=n, attacks=[attack], eps=(eps,), certify=certify,
        certify_time_limit=time_limit, checks=False, per_sample_path=out,
    )  # fmt: skip
    start = time.perf_counter()
    result = run_audit(config)
    return result.to_dict(), time.perf_counter() - start


def _fooled(path: Path, attack: str) -> set[int]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {ln["index"] for ln in lines for e in ln["attacks"] if e["attack"] == attack and e["fooled"]}


def measure(n: int, eps: float, weak_attack: str, time_limit: float, folder: Path) -> dict:
    weak, weak_s = _scan(n, eps, WEAK[weak_attack], "exact", time_limit, folder / "weak.jsonl")
    strong, strong_s = _scan(n, eps, STRONG, "none", time_limit, folder / "strong.jsonl")
    rows = {r["attack"]: r for r in weak["rows"]}
    first = weak["rows"][0]
    by_exact = _fooled(folder / "weak.jsonl", "exact") - _fooled(folder / "weak.jsonl", first["attack"])
    worst = rows["worst-case"]
    return {
        "eps": eps,
        "n": n,
        "weak_attack": weak_attack,
        "clean_correct": worst["n_clean_correct"],
        "weak_fooled": worst["n_clean_correct"] - first["n_robust"],
        "exact_confirmed": rows["exact"]["n_fooled_by_attack"] if "exact" in rows else 0,
        "exact_unconfirmed": worst["n_refuted_unconfirmed"],
        "certified": worst["n_certified"],
        "unknown": worst["n_unknown"],
        "worst_robust_accuracy": worst["robust_accuracy"],
        "certified_robust_accuracy": worst["certified_robust_accuracy"],
        "pgd40_robust_accuracy": strong["rows"][-1]["robust_accuracy"],
        "exact_also_fooled_by_pgd40": len(by_exact & _fooled(folder / "strong.jsonl", "pgd")),
        "seconds_weak_exact": round(weak_s, 1),
        "seconds_pgd40": round(strong_s, 1),
        "notes": [note for note in weak["notes"] if "exact verification proved" in note],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--weak", choices=sorted(WEAK), default="fgsm")
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for eps in args.eps:
            out.append(measure(args.n, eps, args.weak, args.time_limit, Path(folder)))
            print(json.dumps(out[-1]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
