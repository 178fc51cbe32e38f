"""Peak memory of a scan against the number of samples: it should stay flat.

Builds uncompressed ``.npz`` files of ``--small`` and ``--large`` MNIST-shaped samples (the sample
holdout images, tiled, with their labels), scans each with ``robaudit scan`` in its own process at the
same batch size, and prints the peak resident set size of each, read from the kernel (``VmHWM`` of the
scan's process, via ``/usr/bin/time -v`` when present, else ``resource.getrusage`` of a fresh child).

    python benchmarks/memory_scaling.py                    # 10,000 vs 100,000 samples, FGSM
    python benchmarks/memory_scaling.py --attack pgd --steps 5 --json memory.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = REPO_ROOT / "sample_models" / "mnist_cnn.onnx"
HOLDOUT = REPO_ROOT / "sample_models" / "mnist_holdout.npz"


def build_data(path: Path, n: int) -> None:
    with np.load(HOLDOUT) as npz:
        x, y = npz["x"], npz["y"]
    reps = -(-n // len(x))
    np.savez(path, x=np.tile(x, (reps, 1, 1))[:n], y=np.tile(y, reps)[:n])  # uncompressed: memory-mapped


def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``command`` run in a fresh process."""
    start = time.perf_counter()
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if gnu_time:
        done = subprocess.run([gnu_time, "-v", *command], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"scan failed ({done.returncode}): {done.stderr[-2000:]}")
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        if match:
            return int(match.group(1)) / 1024, seconds
    # Without GNU time: a fresh Python parent whose only child is the scan, so RUSAGE_CHILDREN is its own.
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--attack", default="fgsm")
    p.add_argument("--steps", type=int, default=5, help="PGD steps when --attack pgd")
    p.add_argument("--batch-size", default="256")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    robaudit = [sys.executable, "-m", "robaudit"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="robaudit-memory-") as folder:
        for n in (args.small, args.large):
            data = Path(folder) / f"mnist_{n}.npz"
            build_data(data, n)
            command = [
                *robaudit, "scan", str(MODEL), "--data", str(data), "--attack", args.attack,
                "--steps", str(args.steps), "--eps", "0.1", "--batch-size", args.batch_size,
                "--no-checks", "--json", str(Path(folder) / f"r{n}.json"),
            ]  # fmt: skip
            peak, seconds = peak_rss_of(command)
            rows.append({"samples": n, "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1)})
            print(f"{n:>9,} samples: peak RSS {peak:,.1f} MiB, {seconds:.1f} s", flush=True)
    ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"peak RSS ratio {args.large:,} / {args.small:,} samples: {ratio:.3f} (target: at most 1.10)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"attack": args.attack, "batch_size": args.batch_size, "runs": rows, "ratio": ratio}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
