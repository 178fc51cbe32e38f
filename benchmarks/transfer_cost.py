"""The cost of a 3 x 3 transfer against three separate scans of the same models, samples and attack.

``robaudit transfer`` makes each model's examples once, as scan makes them, and adds only the
cross-evaluations (forward passes), so it should cost about the three scans plus 6 evaluations.
Both are timed in this one process, in alternating rounds (scans, transfer, scans, ...), so load on the
machine affects them alike; every run loads its models itself, as the commands do. Run from the
repository root:

    python benchmarks/transfer_cost.py --rounds 3 --threads 1

Prints, per round, the three scans' wall time (their sum), the transfer's, and the ratio, each also as
the process's CPU time (which other jobs on a shared machine inflate less); then the medians, and the
transfer's own breakdown (loading, attacks, evaluations) from its timings.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robaudit.api import run_audit  # noqa: E402
from robaudit.config import AuditConfig  # noqa: E402
from robaudit.transfer.run import run_transfer  # noqa: E402

MODELS = ["mnist_cnn.onnx", "mnist_cnn_adv.onnx", "mnist_cnn_mixed.onnx"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="a stratified subset (default: all 2,000)")
    parser.add_argument("--models", default=",".join(MODELS), help="files in sample_models/, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = [
        AuditConfig(
            model=REPO / "sample_models" / name,
            data=str(REPO / "sample_models" / "mnist_holdout.npz"),
            limit=args.limit,
            attacks=("fgsm",),
            eps=(0.25,),
            checks=False,
        )
        for name in args.models.split(",")
    ]
    scans, transfers, scans_cpu, transfers_cpu = [], [], [], []
    result = None
    for r in range(args.rounds):
        start, cpu = time.perf_counter(), time.process_time()
        for config in configs:
            run_audit(config)
        scans.append(time.perf_counter() - start)
        scans_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        result = run_transfer(configs, "all")
        transfers.append(time.perf_counter() - start)
        transfers_cpu.append(time.process_time() - cpu)
        print(
            f"round {r + 1}: scans {scans[-1]:.2f} s (CPU {scans_cpu[-1]:.2f} s), transfer {transfers[-1]:.2f} s "
            f"(CPU {transfers_cpu[-1]:.2f} s), wall ratio {transfers[-1] / scans[-1]:.2f}"
        )
    med = statistics.median
    print(
        f"median over {args.rounds} rounds ({args.threads} thread(s)): three scans {med(scans):.2f} s, transfer "
        f"{med(transfers):.2f} s, wall ratio {med(transfers) / med(scans):.2f}; CPU time: scans {med(scans_cpu):.2f} s, "
        f"transfer {med(transfers_cpu):.2f} s, ratio {med(transfers_cpu) / med(scans_cpu):.2f}"
    )
    assert result is not None
    timings = result.timings
    attack = sum(v for k, v in timings.items() if k.startswith("attack_seconds"))
    pairs = {tuple(re.findall(r"\d+", k)): v for k, v in timings.items() if k.startswith("evaluate_seconds")}
    own = sum(v for (s_, t_), v in pairs.items() if s_ == t_)
    cross = sum(v for (s_, t_), v in pairs.items() if s_ != t_)
    print(
        f"last transfer: load {timings['load_seconds']:.2f} s, attacks {attack:.2f} s, own evaluations "
        f"{own:.2f} s, {len(configs) * (len(configs) - 1)} cross-evaluations {cross:.2f} s, total {timings['total_seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
