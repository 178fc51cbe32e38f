"""What Ray workers cost and what they gain, on one machine: a PGD audit of the sample LeNet.

In one process, in rounds (the order rotated each round, so a change in the machine's load falls on
every variant alike), it runs the same audit

- in this process, on one torch thread;
- on 1 Ray worker (one thread);
- on 2 Ray workers (one thread each; skipped with ``--max-workers 1``).

Ray's local runtime is started once, and timed on its own (``ray.init``). Each Ray run's result carries
its own split (``timings``): the workers' start-up (a Python process each, torch imported, the model
loaded) and the shards' wall time. The overhead of ``--workers 1`` beyond those fixed costs is its
audit time (total, less model loading, Ray start and workers' start-up) over the in-process run's (total,
less model loading). The efficiency at 2 workers is the shards' time on 1 worker over twice that on 2.
The load average is printed beside each run: the machine may be shared.

    python benchmarks/distributed_overhead.py                      # 1000 samples, PGD-10, 2 rounds
    python benchmarks/distributed_overhead.py --n 200 --rounds 1 --json out.json
    python benchmarks/distributed_overhead.py --device cuda --max-workers 1   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = REPO_ROOT / "sample_models" / "mnist_cnn.pt"
HOLDOUT = REPO_ROOT / "sample_models" / "mnist_holdout.npz"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples (the holdout has 2,000)")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--shard-size", type=int, default=100, help="samples per shard (and per batch)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-workers", type=int, default=2, choices=(1, 2))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU comparison (1 worker)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


class _CpuMeter:
    """A progress sink that reads the CPU seconds of this process and of its Ray worker processes when
    the shards start (the runner adds its task once the workers are ready) and when the last one ends:
    CPU time does not depend on what else runs on a shared machine, wall time does."""

    def __init__(self) -> None:
        self.total = self.done = 0
        self.start: dict[int, float] = {}
        self.end: dict[int, float] = {}

    @staticmethod
    def _cpu() -> dict[int, float]:
        import psutil

        me = psutil.Process()
        out = {me.pid: sum(me.cpu_times()[:2])}
        for p in me.children(recursive=True):  # the workers, and Ray's own processes (raylet, GCS, ...)
            try:
                sign = 1 if "ShardWorker" in " ".join(p.cmdline()) else -1  # negative pid: one of Ray's own
                out[sign * p.pid] = sum(p.cpu_times()[:2])
            except psutil.Error:  # a process that ended meanwhile
                continue
        return out

    def add_task(self, description: str, total: int) -> int:
        self.total, self.start = total, self._cpu()
        return 0

    def advance(self, task: int, n: int) -> None:
        self.done += n
        if self.done >= self.total:
            self.end = self._cpu()

    def split(self) -> tuple[float, float, float]:
        """CPU seconds of the driver (this process), of the workers and of Ray's own processes, over the
        shards."""
        driver = os.getpid()
        spent = {pid: cpu - self.start.get(pid, 0.0) for pid, cpu in self.end.items()}
        own = spent.pop(driver)
        return own, sum(v for k, v in spent.items() if k > 0), sum(v for k, v in spent.items() if k < 0)


def _audit(args: argparse.Namespace, workers: int) -> dict[str, float]:
    """One run's wall times: its audit phase (total less loading and Ray's fixed costs) and Ray's split."""
    import torch

    from robaudit.api import run_audit
    from robaudit.config import AuditConfig

    config = AuditConfig(
        model=MODEL, data=str(HOLDOUT), limit=args.n, batch_size=args.shard_size, shard_size=args.shard_size,
        attacks=("pgd",), steps=args.steps, eps=(0.1,), checks=False, device=args.device, workers=workers,
    )  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the in-process run on one thread, as each Ray worker runs
    try:
        load = os.getloadavg()[0]
        meter = _CpuMeter()
        timings = run_audit(config, progress=meter).timings
    finally:
        torch.set_num_threads(before)
    fixed = timings.get("ray_start_seconds", 0.0) + timings.get("ray_workers_ready_seconds", 0.0)
    driver_cpu, workers_cpu, ray_cpu = meter.split()
    return {
        "ray_daemons_cpu_seconds": ray_cpu,
        "driver_cpu_seconds": driver_cpu,
        "workers_cpu_seconds": workers_cpu,
        "audit_seconds": timings["total_seconds"] - timings["load_seconds"] - fixed,
        "workers_ready_seconds": timings.get("ray_workers_ready_seconds", 0.0),
        "shards_seconds": timings.get("ray_shards_seconds", 0.0),
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import ray

    variants = [0, 1, 2][: args.max_workers + 1]
    tick = time.perf_counter()
    ray.init(
        address="local", num_cpus=args.max_workers, include_dashboard=False, log_to_driver=False,
        logging_level=logging.ERROR,
    )  # fmt: skip
    ray_start = time.perf_counter() - tick
    runs: dict[int, list[dict[str, float]]] = {w: [] for w in variants}
    try:
        for r in range(args.rounds):
            for workers in variants[r % len(variants) :] + variants[: r % len(variants)]:
                runs[workers].append(_audit(args, workers))
                got = runs[workers][-1]
                print(
                    f"round {r + 1}, {workers} workers: audit {got['audit_seconds']:.2f} s, shards "
                    f"{got['shards_seconds']:.2f} s, workers ready {got['workers_ready_seconds']:.2f} s, CPU "
                    f"driver {got['driver_cpu_seconds']:.2f} s, workers {got['workers_cpu_seconds']:.2f} s, Ray's "
                    f"processes {got['ray_daemons_cpu_seconds']:.2f} s "
                    f"(load {got['load_before']:.2f} -> {got['load_after']:.2f})",
                    file=sys.stderr,
                )
    finally:
        ray.shutdown()
    figures = _figures(args, runs, ray_start)
    print(_table(figures))
    if args.json is not None:
        args.json.write_text(json.dumps({"figures": figures, "runs": runs}, indent=2))
    return 0


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _figures(
    args: argparse.Namespace, runs: dict[int, list[dict[str, float]]], ray_start: float
) -> dict[str, Any]:
    shards = -(-args.n // args.shard_size)
    inproc, one = _median(runs[0], "audit_seconds"), _median(runs[1], "audit_seconds")
    figures: dict[str, Any] = {
        "samples": args.n, "pgd_steps": args.steps, "shards": shards, "rounds": args.rounds,
        "ray_start_seconds": round(ray_start, 2),
        "workers_ready_seconds_1": round(_median(runs[1], "workers_ready_seconds"), 2),
        "in_process_audit_seconds": round(inproc, 2),
        "one_worker_audit_seconds": round(one, 2),
        "one_worker_overhead_percent": round(100 * (one / inproc - 1), 1),
        "per_shard_overhead_ms": round(1000 * (one - inproc) / shards, 1),
        "in_process_cpu_seconds": round(_median(runs[0], "driver_cpu_seconds"), 2),
        "one_worker_cpu_seconds": round(_median(runs[1], "workers_cpu_seconds"), 2),
        "ray_daemons_cpu_seconds_1": round(_median(runs[1], "ray_daemons_cpu_seconds"), 2),
        "paired_wall_overhead_percent": [
            round(100 * (one["audit_seconds"] / zero["audit_seconds"] - 1), 1)
            for zero, one in zip(runs[0], runs[1], strict=False)
        ],
        "load_average_range": [
            round(min(r["load_before"] for rs in runs.values() for r in rs), 2),
            round(max(r["load_after"] for rs in runs.values() for r in rs), 2),
        ],
    }  # fmt: skip
    if 2 in runs:
        s1, s2 = _median(runs[1], "shards_seconds"), _median(runs[2], "shards_seconds")
        figures["workers_ready_seconds_2"] = round(_median(runs[2], "workers_ready_seconds"), 2)
        figures["shards_seconds_1"], figures["shards_seconds_2"] = round(s1, 2), round(s2, 2)
        figures["efficiency_2"] = round(s1 / (2 * s2), 3)
        # Independent of the machine's load: the work the shards took, in CPU seconds, on 1 and 2 workers.
        for w in (1, 2):
            figures[f"workers_cpu_seconds_{w}"] = round(_median(runs[w], "workers_cpu_seconds"), 2)
            figures[f"driver_cpu_seconds_{w}"] = round(_median(runs[w], "driver_cpu_seconds"), 2)
        figures["cpu_efficiency_2"] = round(
            figures["workers_cpu_seconds_1"] / figures["workers_cpu_seconds_2"], 3
        )
    return figures


def _table(figures: dict[str, Any]) -> str:
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in figures.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
