"""The built-in ``standard`` and ``thorough`` profiles against candidate re-balancings, on the sample LeNets.

Run by hand from the repository root (never part of the test suite)::

    OMP_NUM_THREADS=1 python benchmarks/profile_balance.py --n 300 --n-l0 20 --json balance.json

Every variant is a small profile run through ``run_audit`` exactly as ``robaudit scan --profile`` runs
it (the cascade: each attack only on the samples the ones before it left robust; reliability probes
off), in this one process, torch on one thread, on the first ``--n`` holdout images
(``sample_models/mnist_holdout.npz``; misclassified ones count as not robust). Seconds are the attack
rows' own (no loading, no conversion). The L∞ variants run on ``mnist_cnn.onnx`` at ε = 0.1 and on
``mnist_cnn_adv.onnx`` at ε = 0.2 (it resists 0.1); the one-pixel variants (L0, 1 and 3 pixels) run on
the first ``--n-l0`` images only, differential evolution being slow on the CPU. Sparse-RS gets a quarter
of differential evolution's queries (population 400 x 100 generations = 40,400 per sample).

"missed" counts the samples the slot's first variant (today's profile) fooled and this one did not, so
a candidate is at least as strong sample by sample when it is 0. The machine's load average is printed
with each model: on a shared machine the seconds are only comparable within one model's rows.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / "sample_models" / "mnist_holdout.npz"
MODELS = {"lenet": ("mnist_cnn.onnx", 0.1), "adv": ("mnist_cnn_adv.onnx", 0.2)}
DE = {"name": "onepixel", "population": 400, "generations": 100}
Attacks = list[dict[str, Any]]

LINF: dict[str, list[tuple[str, Attacks]]] = {
    "standard": [
        ("today: FGSM + PGD-50", [{"name": "fgsm"}, {"name": "pgd", "steps": 50}]),
        ("FGSM + APGD-CE-50", [{"name": "fgsm"}, {"name": "apgd", "loss": "ce", "steps": 50}]),
    ],
    "thorough": [
        (
            "today: PGD-100x5 CE + PGD-100x5 DLR",
            [
                {"name": "pgd", "steps": 100, "restarts": 5, "loss": "ce"},
                {"name": "pgd", "steps": 100, "restarts": 5, "loss": "dlr"},
            ],
        ),
        (
            "APGD-CE-100 + APGD-DLR-100",
            [{"name": "apgd", "loss": "ce", "steps": 100}, {"name": "apgd", "loss": "dlr", "steps": 100}],
        ),
        (
            "APGD-CE-100 + APGD-T-100 (3 targets)",
            [{"name": "apgd", "loss": "ce", "steps": 100}, {"name": "apgd-t", "steps": 100, "n_targets": 3}],
        ),
    ],
}


def l0_variants(queries: int) -> dict[str, list[tuple[str, Attacks]]]:
    return {
        f"L0 {k} px": [
            (f"onepixel DE 400x100, {k} px", [{**DE, "pixels": k}]),
            (
                f"sparse-rs {queries} queries, {k} px",
                [{"name": "sparse-rs", "pixels": k, "queries": queries}],
            ),
        ]
        for k in (1, 3)
    }


def write_data(n: int, folder: Path) -> Path:
    with np.load(HOLDOUT) as data:
        path = folder / f"holdout_{n}.npz"
        np.savez(path, x=data["x"][:n], y=data["y"][:n])
    return path


def run_variant(model: Path, data: Path, eps: float, attacks: Attacks, folder: Path) -> dict[str, Any]:
    """One variant as a profile: per-attack rows and the indices of the samples it fooled."""
    from robaudit.api import run_audit
    from robaudit.config import AuditConfig
    from robaudit.config.merge import merge
    from robaudit.config.profile import parse_profile, profile_values

    text = json.dumps({"version": 1, "attacks": attacks, "threat": {"norms": ["linf"], "eps": [eps]}})
    per_sample = folder / "samples.jsonl"
    flat = {"model": str(model), "data": str(data), "checks": False, "per_sample_path": str(per_sample)}
    config = AuditConfig.model_validate(merge(profile_values(parse_profile(text, "variant.yaml")), flat))
    result = run_audit(config)
    lines = [json.loads(t) for t in per_sample.read_text().splitlines()]
    fooled = sorted(
        d["index"] for d in lines if d["clean_pred"] == d["label"] and any(a["fooled"] for a in d["attacks"])
    )
    worst = [r for r in result.rows if r.attack == "worst-case"][-1]
    return {
        "attacks": {r.attack: r.seconds for r in result.rows if r.attack != "worst-case"},
        "fooled_by": {r.attack: r.n_fooled_by_attack for r in result.rows if r.attack != "worst-case"},
        "n": worst.n_samples,
        "clean_accuracy": worst.n_clean_correct / worst.n_samples,
        "robust_accuracy": worst.robust_accuracy,
        "seconds": round(sum(r.seconds or 0.0 for r in result.rows if r.attack != "worst-case"), 2),
        "fooled": fooled,
    }


def measure(name: str, n: int, slots: dict[str, list[tuple[str, Attacks]]], folder: Path) -> list[dict]:
    file, eps = MODELS[name]
    data = write_data(n, folder)
    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for slot, variants in slots.items():
        baseline: set[int] | None = None
        for label, attacks in variants:
            out = run_variant(ROOT / "sample_models" / file, data, eps, attacks, folder)
            fooled = set(out["fooled"])
            baseline = fooled if baseline is None else baseline
            rows.append(
                {"model": name, "eps": eps, "slot": slot, "variant": label, **out,
                 "missed": len(baseline - fooled), "load_before": load}
            )  # fmt: skip
            print(f"  {name} {slot}: {label}: {out['robust_accuracy']:.3f} in {out['seconds']} s", flush=True)
    for row in rows:
        row["load_after"] = os.getloadavg()[0]
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model (ε) | slot | variant | n | robust accuracy | fooled | missed | attack seconds | per attack (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{a} {s:.1f}" for a, s in r["attacks"].items())
        lines.append(
            f"| {r['model']} ({r['eps']:g}) | {r['slot']} | {r['variant']} | {r['n']} | "
            f"{100 * r['robust_accuracy']:.1f}% | {len(r['fooled'])} | {r['missed']} | {r['seconds']:.1f} | {per} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images for the L∞ variants")
    parser.add_argument("--n-l0", type=int, default=20, help="images for the L0 variants (0: skip them)")
    parser.add_argument("--queries", type=int, default=10100, help="Sparse-RS queries per sample")
    parser.add_argument("--models", default="lenet,adv")
    parser.add_argument("--part", choices=("all", "linf", "l0"), default="all")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in (m for m in args.models.split(",") if m):
            if args.part in ("all", "linf"):
                rows += measure(name, args.n, LINF, Path(tmp))
            if args.part in ("all", "l0") and args.n_l0 > 0:
                rows += measure(name, args.n_l0, l0_variants(args.queries), Path(tmp))
    loads = sorted(
        {(r["model"], r["slot"], round(r["load_before"], 1), round(r["load_after"], 1)) for r in rows}
    )
    print(f"\ntorch threads: {torch.get_num_threads()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("load average (1 min) before/after: " + "; ".join(f"{m} {s}: {a}/{b}" for m, s, a, b in loads))
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
