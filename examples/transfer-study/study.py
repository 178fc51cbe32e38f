"""Reproduce the transfer study's five tables with robaudit's three sample LeNets.

    python examples/transfer-study/study.py [--out DIR] [--limit N]

Runs, as a user would, one ``robaudit scan`` per model and one ``robaudit transfer`` over the three
(FGSM, L-infinity eps 0.25, the 2,000 holdout images), then prints each published table beside
robaudit's figures, read from the JSON documents the commands wrote. Also prints each command's wall
time (subprocesses: each includes Python's and torch's start-up).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = [
    ("standard", REPO / "sample_models" / "mnist_cnn.onnx"),
    ("adversarial", REPO / "sample_models" / "mnist_cnn_adv.onnx"),
    ("mixed", REPO / "sample_models" / "mnist_cnn_mixed.onnx"),
]
DATA = REPO / "sample_models" / "mnist_holdout.npz"
COMMON = ["--data", str(DATA), "--attack", "fgsm", "--norm", "linf", "--eps", "0.25"]

# The study's figures (%, FGSM on the 10,000 MNIST test images), as quoted in the issue.
PUBLISHED_SCAN = {  # clean error, adversarial error, adversarial confidence, confidence on adversarial errors
    "standard": (1.53, 96.64, 93.82, 93.89),
    "adversarial": (2.03, 22.20, 79.05, 66.79),
    "mixed": (1.79, 14.72, 86.30, 70.22),
}
PUBLISHED_ERROR = [[96.64, 34.78, 19.75], [0.08, 22.20, 0.09], [0.07, 0.10, 14.72]]
PUBLISHED_CONF = [[93.89, 75.79, 75.26], [65.19, 66.79, 64.49], [69.70, 68.05, 70.22]]


def run(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "robaudit", *args], capture_output=True, text=True)  # noqa: S603
    if done.returncode not in (0, 4):  # 4: a reliability flag, not a failure of the run
        sys.exit(f"robaudit {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def scan_table(docs: dict[str, dict]) -> list[str]:
    lines = [
        "| model | clean error | adversarial error | adversarial conf. | conf. on adversarial errors |",
        "|---|---|---|---|---|",
    ]
    for name, doc in docs.items():
        row = next(r for r in doc["rows"] if r["attack"] == "fgsm")
        ours = (
            1 - doc["clean_accuracy"],
            row["robust_error"],
            row["confidence"]["overall"],
            row["mean_confidence_adversarial_errors"],
        )
        cells = [f"{p:.2f} / {pct(o)}" for p, o in zip(PUBLISHED_SCAN[name], ours, strict=True)]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def matrix_table(
    doc: dict, published: list[list[float]], value: str, convention: str | None = None
) -> list[str]:
    names = [m["name"] for m in doc["models"]]
    labels = [n for n, _ in MODELS]
    cells = {(c["source"], c["target"]): c for c in doc["matrices"][0]["cells"]}
    lines = ["| made on \\ tried on | " + " | ".join(labels) + " |", "|---" * (len(names) + 1) + "|"]
    for s in range(len(names)):
        row = []
        for t in range(len(names)):
            c = cells[(s, t)]
            if value == "conf":
                ours = pct(c["confidence_on_errors"])
            else:
                errors, n = c["counts"][convention or doc["denominator"]]
                ours = f"{pct(errors / n if n else None)} ({errors}/{n})"
            row.append(f"{published[s][t]:.2f} / {ours}")
        lines.append(f"| {labels[s]} | " + " | ".join(row) + " |")
    return lines


def share_of_all(doc: dict) -> list[str]:
    """Each cell's transferred errors among the examples that fooled their source, as a share of ALL
    samples: the convention the published 0.07-0.10 cells point to (see the README)."""
    n_all = doc["data"]["n_samples"]
    labels = [n for n, _ in MODELS]
    cells = {(c["source"], c["target"]): c for c in doc["matrices"][0]["cells"]}
    lines = ["| made on \\ tried on | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for s in range(len(labels)):
        row = []
        for t in range(len(labels)):
            errors, fooled = cells[(s, t)]["counts"]["source-fooled"]
            row.append(f"{pct(errors / n_all)} ({errors}/{n_all}; {fooled} fooled the source)")
        lines.append(f"| {labels[s]} | " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("transfer-study-out"))
    parser.add_argument("--limit", type=int, default=None, help="a stratified subset (default: all 2,000)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    limit = [] if args.limit is None else ["--limit", str(args.limit)]
    times = {}
    for name, model in MODELS:
        times[f"scan {name}"] = run(
            [
                "scan",
                str(model),
                *COMMON,
                *limit,
                "--no-checks",
                "--json",
                str(args.out / f"scan-{name}.json"),
            ]
        )
    paths = [str(m) for _, m in MODELS]
    times["transfer (3 x 3)"] = run(
        [
            "transfer",
            *paths,
            *COMMON,
            *limit,
            "--denominator",
            "all",
            "--json",
            str(args.out / "transfer.json"),
            "--html",
            str(args.out / "transfer.html"),
            "--markdown",
            str(args.out / "transfer.md"),
        ]
    )
    scans = {name: json.loads((args.out / f"scan-{name}.json").read_text()) for name, _ in MODELS}
    transfer = json.loads((args.out / "transfer.json").read_text())
    n = transfer["data"]["n_samples"]
    out = [f"Each cell: published / robaudit (%). robaudit: {n} holdout images, FGSM linf eps 0.25.", ""]
    out += ["Table 1. One scan per model.", "", *scan_table(scans), ""]
    out += ["Table 2. Transfer error rate, denominator all (every sample).", ""]
    out += [*matrix_table(transfer, PUBLISHED_ERROR, "error", "all"), ""]
    out += ["Table 3. Confidence on the transferred errors (denominator all).", ""]
    out += [*matrix_table(transfer, PUBLISHED_CONF, "conf"), ""]
    out += ["Table 4. Transfer error rate, denominator both-correct (errors the example caused).", ""]
    out += [*matrix_table(transfer, PUBLISHED_ERROR, "error", "both-correct"), ""]
    out += ["Table 5. Errors among examples that fooled their source, as a share of all samples.", ""]
    out += [*share_of_all(transfer), ""]
    out += ["Wall time (s, each a separate process):", ""]
    out += [f"- {k}: {v:.1f}" for k, v in times.items()]
    scans_total = sum(v for k, v in times.items() if k.startswith("scan"))
    out.append(
        f"- three scans together: {scans_total:.1f}; transfer / scans = {times['transfer (3 x 3)'] / scans_total:.2f}"
    )
    text = "\n".join(out)
    (args.out / "tables.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
