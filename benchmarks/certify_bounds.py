"""The bracket on the sample models: certified robust accuracy (IBP, CROWN, exact MILP) beside attacks.

Run by hand from the repository root (never part of the test suite)::

    python benchmarks/certify_bounds.py --n 2000 --n-exact 100 --json certify.json

On the first ``--n`` holdout images (``sample_models/mnist_holdout.npz``), for each model and L∞ ε:

* certified robust accuracy: correct, and the bound on every margin logit_y - logit_j is above zero,
  for IBP and CROWN (intermediate bounds by CROWN on layers of at most ``--crown-max`` elements,
  ``--crown-max-cnn`` on the CNNs, IBP's elsewhere), CROWN with IBP's intermediate bounds throughout,
  and with ``--alpha-steps`` α-CROWN (``robaudit.certify.alpha``) on the margin, on all ``--n`` images;
* exact (``robaudit.certify.milp``, ``--time-limit`` seconds per image) on the first ``--n-exact``
  images (``--n-exact-lenet`` for the CNNs): certified, fooled and unknown counts;
* attacked robust accuracy: correct and fooled by neither PGD-40 (random start) nor APGD-DLR-100 run
  on PGD's survivors, on the float32 model;
* throughput: CROWN images per second, and PGD-40's on the same images.

Then exact one-pixel verdicts (``robaudit.certify.onepixel_exact``) on the first ``--n-onepixel``
images, with the fraction of the 256 × 784 sweep skipped and the time per image, beside the one-pixel
attack (differential evolution, population 400, 100 generations) on the same images.

The models become certify ops here, from their known architectures (``sample_models/lenet.py`` and
``build_mlp.py``); the forward pass of the ops is checked against the TorchScript model first.
Everything runs on the CPU with ``--threads`` torch threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from robaudit.attacks.apgd import APGD  # noqa: E402
from robaudit.attacks.onepixel import OnePixel  # noqa: E402
from robaudit.attacks.pgd import PGD  # noqa: E402
from robaudit.certify.alpha import alpha_margin_lower_bounds  # noqa: E402
from robaudit.certify.bounds import InputSet, margin_lower_bounds  # noqa: E402
from robaudit.certify.milp import exact_verdicts, forward  # noqa: E402
from robaudit.certify.onepixel_exact import onepixel_exact  # noqa: E402
from robaudit.certify.ops import Conv, Linear, MaxPool, Op, ReLU, Reshape  # noqa: E402

MODELS = {"lenet": "mnist_cnn.pt", "lenet-adv": "mnist_cnn_adv.pt", "mlp-adv": "mnist_mlp_adv.pt"}


def load(name: str) -> tuple[torch.nn.Module, list[Op]]:
    """The TorchScript model and its certify ops, built from the known architecture."""
    model = torch.jit.load(str(REPO / "sample_models" / MODELS[name])).eval()
    s = {k: v.detach().double() for k, v in model.state_dict().items()}
    if name == "mlp-adv":
        ops: list[Op] = [Reshape((1, 28, 28), (784,))]
        for i, key in enumerate(("1", "3", "5")):
            ops += [Linear(s[f"{key}.weight"], s[f"{key}.bias"])] + ([ReLU()] if i < 2 else [])
        return model, ops
    conv = "features.{}.weight", "features.{}.bias"
    ops = [
        Conv(s[conv[0].format(0)], s[conv[1].format(0)], (1, 1), (2, 2), (1, 1), 1, (1, 28, 28)),
        ReLU(),
        MaxPool((2, 2)),
        Conv(s[conv[0].format(3)], s[conv[1].format(3)], (1, 1), (0, 0), (1, 1), 1, (16, 14, 14)),
        ReLU(),
        MaxPool((2, 2)),
        Reshape((32, 5, 5), (800,)),
        Linear(s["classifier.1.weight"], s["classifier.1.bias"]),
        ReLU(),
        Linear(s["classifier.3.weight"], s["classifier.3.bias"]),
    ]
    return model, ops


def certified(
    ops: list[Op], x: torch.Tensor, y: torch.Tensor, eps: float, method: str, crown_max: int, alpha: int = 0
) -> tuple[torch.Tensor, float]:
    """Per image: correct and every margin bound above zero; and the seconds it took. ``alpha``: that
    many α-CROWN steps on the margin (``method`` crown)."""
    start, out = time.perf_counter(), []
    for i in range(0, len(x), 100):
        xb, yb = x[i : i + 100], y[i : i + 100]
        inputs = InputSet(xb, eps, "linf")
        if alpha:
            lb = alpha_margin_lower_bounds(ops, inputs, yb, 10, alpha, crown_max=crown_max)
        else:
            lb, _ = margin_lower_bounds(ops, inputs, yb, method, 10, crown_max=crown_max)
        correct = forward(ops, xb).argmax(1) == yb
        out.append(correct & (lb.min(1).values > 0))
    return torch.cat(out), time.perf_counter() - start


def attacked(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple:
    """Per image: correct and not fooled by PGD-40 nor APGD-DLR-100; PGD-40's seconds; PGD-only flags."""
    x32, seeds = x.float(), torch.arange(len(x))
    with torch.no_grad():
        robust = model(x32).argmax(1) == y
    start = time.perf_counter()
    adv = torch.cat([PGD(steps=40)(model, x32[i : i + 500], y[i : i + 500], eps=eps, norm="linf",
                                   seeds=seeds[i : i + 500]) for i in range(0, len(x), 500)])  # fmt: skip
    pgd_s = time.perf_counter() - start
    with torch.no_grad():
        robust &= model(adv).argmax(1) == y
    pgd_only = robust.clone()
    left = torch.nonzero(robust).flatten()
    if len(left):
        adv2 = APGD(steps=100, loss="dlr")(model, x32[left], y[left], eps=eps, norm="linf", seeds=left)
        with torch.no_grad():
            robust[left] &= model(adv2).argmax(1) == y[left]
    return robust, pgd_s, pgd_only


def exact_counts(ops: list[Op], x: torch.Tensor, y: torch.Tensor, eps: float, limit: float) -> dict:
    start = time.perf_counter()
    verdicts, examples = exact_verdicts(ops, x, y, eps, "linf", time_limit_s=limit)
    seconds = time.perf_counter() - start
    for v, ce, yi in zip(verdicts, examples, y.tolist(), strict=True):
        if v is False:  # every counterexample re-checked: misclassified, inside the ball ∩ box
            assert ce is not None and int(forward(ops, ce[None]).argmax()) != yi
    return {
        "n": len(x),
        "certified": sum(v is True for v in verdicts),
        "fooled": sum(v is False for v in verdicts),
        "unknown": sum(v is None for v in verdicts),
        "seconds": round(seconds, 2),
        "verdicts": verdicts,
    }


def run_model(name: str, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    model, ops = load(name)
    with torch.no_grad():
        gap = float((forward(ops, x[:50]) - model(x[:50].float()).double()).abs().max())
    assert gap < 1e-3, f"{name}: the ops' forward differs from the model by {gap}"
    rows = []
    n_exact = args.n_exact if name == "mlp-adv" else args.n_exact_lenet
    crown_max = args.crown_max if name == "mlp-adv" else args.crown_max_cnn
    for eps in args.eps:
        ibp, ibp_s = certified(ops, x, y, eps, "ibp", crown_max)
        crown, crown_s = certified(ops, x, y, eps, "crown", crown_max)
        # IBP's intermediate bounds (the same run when crown_max is 0)
        plain, plain_s = certified(ops, x, y, eps, "crown", 0) if crown_max else (crown, crown_s)
        robust, pgd_s, pgd_only = attacked(model, x, y, eps)
        row = {
            "model": name, "eps": eps, "n": len(x), "crown_max": crown_max,
            "ibp": int(ibp.sum()), "crown": int(crown.sum()), "attacked": int(robust.sum()),
            "pgd40_robust": int(pgd_only.sum()), "crown_seconds": round(crown_s, 2),
            "ibp_seconds": round(ibp_s, 2), "pgd40_seconds": round(pgd_s, 2),
            "crown_ibp_hidden": int(plain.sum()), "crown_ibp_hidden_seconds": round(plain_s, 2),
        }  # fmt: skip
        if args.alpha_steps:
            alpha, alpha_s = certified(ops, x, y, eps, "crown", crown_max, args.alpha_steps)
            row |= {"alpha": int(alpha.sum()), "alpha_seconds": round(alpha_s, 2)}
        if n_exact:
            ex = exact_counts(ops, x[:n_exact], y[:n_exact], eps, args.time_limit)
            ex["attacked_subset"] = int(robust[:n_exact].sum())
            ex["crown_subset"] = int(crown[:n_exact].sum())
            row["exact"] = ex
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "exact"}), flush=True)
        if "exact" in row:
            print(
                "  exact:", json.dumps({k: v for k, v in row["exact"].items() if k != "verdicts"}), flush=True
            )
    return rows


def run_onepixel(name: str, x: torch.Tensor, y: torch.Tensor) -> dict:
    model, ops = load(name)
    start = time.perf_counter()
    res = onepixel_exact(ops, (x * 255).round().to(torch.uint8), y)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    adv = OnePixel()(model, x.float(), y, eps=1.0, norm="l0", seeds=torch.arange(len(x)))
    de_s = time.perf_counter() - start
    with torch.no_grad():
        de_fooled = int((model(adv).argmax(1) != y).sum())
    return {
        "model": name, "n": len(x), "exact_robust": sum(res.verdicts), "exact_not_robust": res.verdicts.count(False),
        "skipped_fraction": round(res.skipped_fraction, 4),
        "certified_positions_fraction": round(res.positions_certified / max(1, res.positions_total), 4),
        "exact_seconds_per_image": round(exact_s / len(x), 3), "de_fooled": de_fooled,
        "de_seconds_per_image": round(de_s / len(x), 3),
    }  # fmt: skip


def table(rows: list[dict], onepixel: list[dict]) -> str:
    out = [
        "| model | ε | IBP | CROWN | CROWN, IBP hidden | α-CROWN | exact (n) cert / fooled / unknown | attacked | "
        "gap CROWN→attacked | CROWN img/s | CROWN, IBP hidden img/s | α-CROWN img/s | PGD-40 img/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = r["n"]
        ex = r.get("exact")
        exact = f"{ex['certified']} / {ex['fooled']} / {ex['unknown']} ({ex['n']})" if ex else "-"
        alpha = f"{100 * r['alpha'] / n:.1f}%" if "alpha" in r else "-"
        alpha_rate = f"{n / r['alpha_seconds']:.0f}" if "alpha" in r else "-"
        out.append(
            f"| {r['model']} | {r['eps']} | {100 * r['ibp'] / n:.1f}% | {100 * r['crown'] / n:.1f}% | "
            f"{100 * r['crown_ibp_hidden'] / n:.1f}% | {alpha} | {exact} | "
            f"{100 * r['attacked'] / n:.1f}% | {100 * (r['attacked'] - r['crown']) / n:.1f} | "
            f"{n / r['crown_seconds']:.1f} | {n / r['crown_ibp_hidden_seconds']:.1f} | {alpha_rate} | "
            f"{n / r['pgd40_seconds']:.1f} |"
        )
    out += [
        "",
        "| model | n | exact robust | skipped | exact s/img | DE fooled | DE s/img |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in onepixel:
        out.append(
            f"| {o['model']} | {o['n']} | {o['exact_robust']} | {100 * o['skipped_fraction']:.1f}% | "
            f"{o['exact_seconds_per_image']} | {o['de_fooled']} | {o['de_seconds_per_image']} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-exact", type=int, default=100)
    # Building the program for LeNet (12,544 + 3,200 ReLUs, 3,936 pool windows) took 150 s per image.
    p.add_argument("--n-exact-lenet", type=int, default=0)
    p.add_argument("--n-onepixel", type=int, default=10)
    p.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--time-limit", type=float, default=10.0)
    p.add_argument("--crown-max", type=int, default=4096)
    # On the LeNets (100 images, 1 thread, load ~4) CROWN's intermediate bounds on the 128-unit dense
    # layer cost 0.4-0.55 s per image (14-33x PGD-40) and lift certified at L∞ 0.02 from 0-1% to 17-27%,
    # none either way at 0.05; the 3,200-element conv layer costs 4.5 s per image more. Off by default
    # (128 turns the dense layer's on). RESULTS.md, "Certified bounds beside attacks".
    p.add_argument("--crown-max-cnn", type=int, default=0)
    p.add_argument("--alpha-steps", type=int, default=0, help="α-CROWN steps on the margin (0: off)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hold = np.load(REPO / "sample_models" / "mnist_holdout.npz")
    x = torch.from_numpy(hold["x"][: args.n]).double().unsqueeze(1) / 255
    y = torch.from_numpy(hold["y"][: args.n])
    rows = [r for name in args.models for r in run_model(name, x, y, args)]
    onepixel = [
        run_onepixel(name, x[: args.n_onepixel], y[: args.n_onepixel])
        for name in args.models
        if args.n_onepixel
    ]
    for o in onepixel:
        print(json.dumps(o), flush=True)
    print(table(rows, onepixel))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "onepixel": onepixel}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
