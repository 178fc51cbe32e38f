"""Does the cost of a forward+backward pass depend on the input's values? A check on the PGD floor.

compare_attacks.py's gradient floor repeats one pass over the same images. An iterative attack feeds
the model a new input at every step. This script times ``--steps`` forward+backward passes of the
sample LeNet over one batch of MNIST holdout images in four ways, in interleaved rounds, and prints
each as a ratio to the first:

* ``repeated``: the same input every pass (the floor's way);
* ``copied``: a fresh copy of the same input every pass (new memory, same values);
* ``same-values``: the PGD step's element-wise work, with a zero step, so the values stay the same;
* ``pgd-values``: a real L-inf PGD step, x <- clip(x + 0.0025 * sign(grad)), so the values change;
* ``pgd-inputs``: passes over the precomputed iterates of a plain reference PGD run (``--norm``: L-inf
  with eps 0.1 or L2 with eps 1.5; random start, step 2.5 eps / steps), the second floor of
  compare_attacks.py, without the step's work;
* ``reference-pgd``: that reference PGD run itself, its step's work included;
* ``robaudit-pgd``: robaudit's PGD with the same settings and early stopping off.

The last three answer how far robaudit's PGD is from a pass over the inputs PGD feeds the model, and
from the plainest PGD loop. Run from the repository root: ``python benchmarks/floor_input.py --rounds 6``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_attacks as ca  # noqa: E402

from robaudit.attacks.pgd import PGD  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--steps", type=int, default=40, help="passes per timed call (default 40)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument(
        "--norm",
        choices=("linf", "l2"),
        default="linf",
        help="the PGD ways' norm: eps 0.1 in L-inf, 1.5 in L2",
    )
    args = parser.parse_args()

    model = ca.load_model("cpu", "lenet")
    indices, _ = ca.select_correct(model, "cpu", args.batch_size, args.batch_size, "lenet")
    xs, ys = ca.load_holdout(indices, "lenet")
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)

    def step(xb: torch.Tensor) -> torch.Tensor:
        xb = xb.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(model(xb), y, reduction="sum")
            return torch.autograd.grad(loss, xb)[0]

    def repeated() -> None:
        for _ in range(args.steps):
            step(x)

    def copied() -> None:
        for _ in range(args.steps):
            step(x.clone())

    def walk(size: float) -> Callable[[], None]:
        def run() -> None:
            xb = x
            for _ in range(args.steps):
                xb = (xb + size * step(xb).sign()).clamp(0, 1)

        return run

    settings = ca.Settings(
        device="cpu", threads=0, eps=0.1, eps_l2=1.5, pgd_steps=args.steps, population=1, generations=1,
        batch_size=args.batch_size,
    )  # fmt: skip
    attack, eps = ("pgd", settings.eps) if args.norm == "linf" else ("pgd-l2", settings.eps_l2)
    iterates = ca.reference_pgd_iterates(attack, model, x, y, settings)
    seeds = torch.arange(len(x))

    def pgd_inputs() -> None:
        for x_it in iterates:
            step(x_it)

    def reference_pgd() -> None:
        ca.reference_pgd_iterates(attack, model, x, y, settings)

    def robaudit_pgd() -> None:
        PGD(steps=args.steps, early_stop=False)(model, x, y, eps=eps, norm=args.norm, seeds=seeds)

    ways = {
        "repeated": repeated,
        "copied": copied,
        "same-values": walk(0.0),
        "pgd-values": walk(0.0025),
        "pgd-inputs": pgd_inputs,
        "reference-pgd": reference_pgd,
        "robaudit-pgd": robaudit_pgd,
    }
    for run in ways.values():
        run()  # warm-up
    ratios: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        times = {}
        for name, run in ways.items():
            start = time.perf_counter()
            run()
            times[name] = time.perf_counter() - start
        for name in ways:
            ratios[name].append(times[name] / times["repeated"])
    print(
        f"{args.steps} forward+backward passes, batch {args.batch_size}, {args.rounds} rounds; time / repeated:"
    )
    for name, values in ratios.items():
        spread = f"{min(values):.3f} to {max(values):.3f}"
        print(f"{name:14s} median {statistics.median(values):.3f}  ({spread})")
    paired = [r / p for r, p in zip(ratios["robaudit-pgd"], ratios["pgd-inputs"], strict=True)]
    plain = [r / p for r, p in zip(ratios["robaudit-pgd"], ratios["reference-pgd"], strict=True)]
    print(
        f"paired, per round: robaudit-pgd over pgd-inputs {statistics.median(paired):.3f}, "
        f"over reference-pgd {statistics.median(plain):.3f}"
    )


if __name__ == "__main__":
    main()
