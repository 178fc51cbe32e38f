"""robaudit's ``strongest`` profile against torchattacks' AutoAttack (standard), same images, one process.

Run by hand from the repository root (never part of the test suite)::

    python benchmarks/autoattack_compare.py --n 1000 --models lenet --json aa.json
    python benchmarks/autoattack_compare.py --n 200 --models adv,cifar --json aa2.json

AutoAttack is torchattacks' ``AutoAttack(version='standard')`` composed by hand so that each component
runs 100 iterations (torchattacks' default is 10) and is timed on its own: APGD-CE, APGD-T (9 targets),
FAB-T (9 targets) and Square (5,000 queries), each only on the samples the ones before it left robust,
exactly as its ``MultiAttack`` does. robaudit runs ``--profile strongest`` through ``run_audit`` on the
same images written to an .npz (with its reliability probes off: they are not part of the attack). Per
model the two tools alternate which goes first, so a change in the machine's load hits both alike.

Success is recomputed here: an AutoAttack example counts when it lies in the threat model (L∞ ball of
eps + 1e-6 and [0, 1]) and the model misclassifies it; robaudit's verdict is its per-sample output,
re-checked on the reference runtime by its own runner. The script lists every sample AutoAttack fooled
and robaudit did not, and runs FAB-T once more (untimed for the comparison) on the samples robaudit
left robust, to see whether adding FAB-T to the cascade would have paid.

Models: the sample LeNet (``mnist_cnn.pt``), the FGSM-trained one (``mnist_cnn_adv.pt``), and a
CIFAR-10-shaped (3x32x32) CNN that this script trains in a few seconds, seeded, on holdout images
1000-1999 padded to 32x32 and tinted with a seeded colour per image; the benchmark images are holdout
images 0..n-1 made the same way. There is no CIFAR-10 data here, so this model is CIFAR-shaped, not a
CIFAR model: it stands for "a 3-channel 32x32 input and a different architecture".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = REPO_ROOT / "sample_models" / "mnist_holdout.npz"
MODELS = {"lenet": "mnist_cnn.pt", "adv": "mnist_cnn_adv.pt", "cifar": None}
EPS = {"lenet": 0.1, "adv": 0.1, "cifar": 8 / 255}


class TinyCifarNet(nn.Module):
    """A small CNN for 3x32x32 inputs on [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def tinted(images: np.ndarray, seed: int) -> np.ndarray:
    """MNIST digits (N, 28, 28) uint8 as (N, 3, 32, 32) uint8: padded by 2, each image in its own colour
    on a dark background of another colour."""
    rng = np.random.default_rng(seed)
    n = images.shape[0]
    fg = rng.uniform(0.5, 1.0, (n, 3, 1, 1))
    bg = rng.uniform(0.0, 0.3, (n, 3, 1, 1))
    digit = np.pad(images.astype(np.float64) / 255.0, ((0, 0), (2, 2), (2, 2)))[:, None]
    return np.round((bg + (fg - bg) * digit) * 255).astype(np.uint8)


def train_cifar_shaped(x: np.ndarray, y: np.ndarray, epochs: int = 8) -> nn.Module:
    """TinyCifarNet trained with Adam, seeded, on (N, 3, 32, 32) uint8 images."""
    torch.manual_seed(0)
    model = TinyCifarNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x).float() / 255, torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def load_case(name: str, n: int, workdir: Path) -> tuple[Path, Path, torch.nn.Module, np.ndarray, np.ndarray]:
    """The model file robaudit opens, the data file, the module torchattacks attacks, and the images."""
    data = np.load(HOLDOUT)
    x, y = data["x"], data["y"].astype(np.int64)
    if name == "cifar":
        model = train_cifar_shaped(tinted(x[1000:2000], 1), y[1000:2000])
        model_path = workdir / "cifar_shaped.pt"
        torch.jit.save(torch.jit.script(model), str(model_path))
        images = tinted(x[:n], 0)
    else:
        model_path = REPO_ROOT / "sample_models" / str(MODELS[name])
        images = x[:n, None]
    data_path = workdir / f"{name}_{n}.npz"
    np.savez(data_path, x=images, y=y[:n])
    module = torch.jit.load(str(model_path)).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return model_path, data_path, module, images, y[:n]


def autoattack(module: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch: int) -> dict[str, Any]:
    """torchattacks' AutoAttack standard at 100 iterations: per component, time and samples it fooled."""
    import torchattacks as ta

    comps = {
        "apgd-ce": ta.APGD(module, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        "apgd-t": ta.APGDT(module, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
        "fab-t": ta.FAB(module, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=0),
        "square": ta.Square(module, eps=eps, n_queries=5000, n_restarts=1, seed=0),
    }
    with torch.no_grad():
        robust = predict(module, x) == y
    clean = robust.clone()
    x_adv = x.clone()
    out: dict[str, Any] = {"seconds": {}, "cpu_seconds": {}, "fooled_by": {}}
    for name, attack in comps.items():
        idx = torch.nonzero(robust).flatten()
        start, cpu = time.perf_counter(), time.process_time()
        adv = torch.cat([attack(x[i], y[i]) for i in idx.split(batch)]) if len(idx) else x[:0]
        out["seconds"][name] = time.perf_counter() - start
        out["cpu_seconds"][name] = time.process_time() - cpu
        ok = inside(adv, x[idx], eps)
        fooled = (predict(module, adv) != y[idx]) & ok
        out.setdefault("outside_threat_model", 0)
        out["outside_threat_model"] += int((~ok).sum())
        x_adv[idx[fooled]] = adv[fooled]
        robust[idx[fooled]] = False
        out["fooled_by"][name] = idx[fooled].tolist()
    out["total_seconds"] = sum(out["seconds"].values())
    out["total_cpu_seconds"] = sum(out["cpu_seconds"].values())
    out["clean"], out["robust"] = clean, robust
    return out


def predict(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([module(c).argmax(1) for c in x.split(500)])


def inside(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per sample: within the L∞ ball (float32 slack) and the [0, 1] box."""
    dist = (adv - x).abs().flatten(1).amax(1) if len(x) else torch.zeros(0)
    box = ((adv >= 0) & (adv <= 1)).flatten(1).all(1) if len(x) else torch.zeros(0, dtype=torch.bool)
    return (dist <= eps + 1e-6) & box


def robaudit_strongest(
    model_path: Path, data_path: Path, eps: float, out: Path, batch: int
) -> dict[str, Any]:
    """``scan --profile strongest`` in this process; per sample: fooled by which attack, or robust."""
    from robaudit.api import run_audit
    from robaudit.config import AuditConfig
    from robaudit.config.merge import merge
    from robaudit.config.profile import load_profile, profile_values

    flat = {
        "model": str(model_path),
        "data": str(data_path),
        "eps": [eps],
        "per_sample_path": str(out),
        "checks": False,
        "batch_size": batch,
    }
    config = AuditConfig.model_validate(merge(profile_values(load_profile("strongest")[0]), flat))
    start, cpu = time.perf_counter(), time.process_time()
    result = run_audit(config)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    clean, robust, first = [], [], []
    lines = sorted((json.loads(t) for t in out.read_text().splitlines()), key=lambda d: d["index"])
    for line in lines:
        fooled = [a["attack"] for a in line["attacks"] if a["fooled"]]
        ok = line["clean_pred"] == line["label"]
        clean.append(ok)
        robust.append(ok and not fooled)
        first.append(fooled[0] if fooled else None)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "timings": result.timings,
        "clean": torch.tensor(clean),
        "robust": torch.tensor(robust),
        "first": first,
    }


def fab_on(module: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch: int) -> tuple[int, float]:
    """FAB-T (100 steps, 9 targets) on the given samples: how many it fools, and its time."""
    import torchattacks as ta

    if len(x) == 0:
        return 0, 0.0
    fab = ta.FAB(module, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=0)
    start = time.perf_counter()
    adv = torch.cat([fab(xi, yi) for xi, yi in zip(x.split(batch), y.split(batch), strict=True)])
    seconds = time.perf_counter() - start
    return int(((predict(module, adv) != y) & inside(adv, x, eps)).sum()), seconds


def compare(name: str, n: int, batch: int, robaudit_first: bool, workdir: Path) -> dict[str, Any]:
    model_path, data_path, module, images, labels = load_case(name, n, workdir)
    x = torch.from_numpy(images).float() / 255
    y = torch.from_numpy(labels)
    eps = EPS[name]
    per_sample = workdir / f"{name}_samples.jsonl"
    runs: dict[str, Any] = {}
    order = ["robaudit", "autoattack"] if robaudit_first else ["autoattack", "robaudit"]
    for tool in order:
        if tool == "robaudit":
            runs[tool] = robaudit_strongest(model_path, data_path, eps, per_sample, batch)
        else:
            runs[tool] = autoattack(module, x, y, eps, batch)
    ra, aa = runs["robaudit"], runs["autoattack"]
    missed = torch.nonzero(ra["robust"] & ~aa["robust"]).flatten().tolist()
    left = torch.nonzero(ra["robust"]).flatten()
    fab_adds, fab_seconds = fab_on(module, x[left], y[left], eps, batch)
    ra_first = {a: sum(f == a for f in ra["first"]) for a in ("apgd-ce", "apgd-t", "square")}
    return {
        "model": name,
        "n": n,
        "eps": eps,
        "order": order,
        "clean_accuracy": {
            "robaudit": float(ra["clean"].float().mean()),
            "autoattack": float(aa["clean"].float().mean()),
        },
        "robust_accuracy": {
            "robaudit": float(ra["robust"].float().mean()),
            "autoattack": float(aa["robust"].float().mean()),
        },
        "seconds": {"robaudit": ra["seconds"], "autoattack": aa["total_seconds"]},
        "ratio": ra["seconds"] / aa["total_seconds"],
        "cpu_seconds": {"robaudit": ra["cpu_seconds"], "autoattack": aa["total_cpu_seconds"]},
        "cpu_ratio": ra["cpu_seconds"] / aa["total_cpu_seconds"],
        "autoattack_components": aa["seconds"],
        "autoattack_components_cpu": aa["cpu_seconds"],
        "autoattack_fooled_by": {k: len(v) for k, v in aa["fooled_by"].items()},
        "autoattack_outside_threat_model": aa["outside_threat_model"],
        "robaudit_fooled_first_by": ra_first,
        "robaudit_timings": ra["timings"],
        "aa_fooled_robaudit_not": missed,
        "robaudit_fooled_aa_not": torch.nonzero(aa["robust"] & ~ra["robust"]).flatten().tolist(),
        "fab_t_on_robaudit_robust": {"samples": len(left), "fooled": fab_adds, "seconds": fab_seconds},
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | n | eps | clean | robust: AutoAttack | robust: strongest | AutoAttack s (CPU s) "
        "| strongest s (CPU s) | ratio (CPU) | AA fooled, strongest not | FAB-T in AA adds "
        "| FAB-T after strongest adds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ra, sec, cpu = r["robust_accuracy"], r["seconds"], r["cpu_seconds"]
        fab = r["fab_t_on_robaudit_robust"]
        lines.append(
            f"| {r['model']} | {r['n']} | {r['eps']:.4f} | {r['clean_accuracy']['robaudit']:.1%} "
            f"| {ra['autoattack']:.1%} | {ra['robaudit']:.1%} | {sec['autoattack']:.0f} ({cpu['autoattack']:.0f}) "
            f"| {sec['robaudit']:.0f} ({cpu['robaudit']:.0f}) | {r['ratio']:.2f} ({r['cpu_ratio']:.2f}) "
            f"| {len(r['aa_fooled_robaudit_not'])} | {r['autoattack_fooled_by']['fab-t']} "
            f"| {fab['fooled']} of {fab['samples']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per model (the first n of the holdout)")
    parser.add_argument("--models", default="lenet,adv,cifar", help="comma-separated: lenet, adv, cifar")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    uptime = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.models.split(",")):
            rows.append(compare(name.strip(), args.n, args.batch_size, i % 2 == 0, Path(tmp)))
            print(json.dumps(rows[-1], default=str), file=sys.stderr, flush=True)
    meta = {
        "threads": args.threads,
        "load_average_before": uptime,
        "load_average_after": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(markdown(rows))
    print(json.dumps(meta))
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
