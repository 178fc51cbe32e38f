"""The GPU measurements behind benchmarks/RESULTS.md's "Speed-ups measured on the GPU" and "ONNX
Runtime on the GPU" sections: ONNX Runtime's provider and IO binding, TF32, one-pixel autocast and
pass size, PGD's overhead over its floor in one process, and torch.compile.

Needs a CUDA GPU, onnxruntime-gpu and the sample models; run from the repository root::

    python benchmarks/gpu_candidates.py --out gpu_out            # every section
    python benchmarks/gpu_candidates.py --out gpu_out ort tf32   # some of them

Each section prints its numbers as one JSON line and all of them are collected in OUT/exp.json.
"""

# The timed lambdas below run inside the loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
OUT = Path("gpu_out")  # set from --out in main
RESULTS: dict[str, object] = {}
DEV = "cuda"


def save() -> None:
    (OUT / "exp.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def sync() -> None:
    torch.cuda.synchronize()


def timed(fn, repeats: int = 5, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def section(name):
    def deco(fn):
        def run(*a, **k):
            t = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                RESULTS[name] = fn(*a, **k)
            except Exception as exc:  # noqa: BLE001
                RESULTS[name] = {"error": repr(exc), "trace": traceback.format_exc()[-3000:]}
            RESULTS[name + "_seconds"] = time.perf_counter() - t
            print(json.dumps(RESULTS[name], default=str)[:3000], flush=True)
            save()

        return run

    return deco


import compare_attacks as ca  # noqa: E402


def lenet_data(n: int):
    model = ca.load_model(DEV, "lenet")
    idx, _ = ca.select_correct(model, DEV, n, 1000, "lenet")
    x, y = ca.load_holdout(idx, "lenet")
    return model, torch.from_numpy(x).to(DEV), torch.from_numpy(y).to(DEV)


def model_and_data(name: str, n: int):
    """The sample LeNet with n holdout images it classifies correctly, or the timing-only ResNet-18."""
    if name == "lenet":
        return lenet_data(n)
    xs, ys = ca.load_holdout(list(range(n)), name)
    return ca.load_model(DEV, name), torch.from_numpy(xs).to(DEV), torch.from_numpy(ys).to(DEV)


@section("env")
def env():
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cpu_count": os.cpu_count(),
    }


@section("ort")
def ort_check():
    import onnxruntime as ort

    res: dict[str, object] = {"version": ort.__version__, "available": ort.get_available_providers()}
    path = str(REPO / "sample_models" / "mnist_cnn.onnx")
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = "/tmp/ortprof"
    sess = ort.InferenceSession(path, so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    res["session_providers"] = sess.get_providers()
    _, x, _ = lenet_data(1900)
    xn = x.cpu().numpy()
    sess.run(None, {"x": xn[:256]})  # one profiled run
    prof = sess.end_profiling()
    counts: dict[str, int] = {}
    for e in json.load(open(prof)):
        if e.get("cat") == "Node" and "provider" in e.get("args", {}):
            p = e["args"]["provider"]
            counts[p] = counts.get(p, 0) + 1
    res["node_events_by_provider"] = counts
    sess = ort.InferenceSession(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    cpu_sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    bs = 256

    def numpy_path(sess=sess):
        outs = []
        for i in range(0, len(xn), bs):
            outs.append(sess.run(["linear_1"], {"x": x[i : i + bs].cpu().numpy()})[0])
        return torch.from_numpy(np.concatenate(outs)).to(DEV)

    def iobind_path(batch=bs):
        out = torch.empty((len(x), 10), device=DEV)
        io = sess.io_binding()
        sync()
        for i in range(0, len(x), batch):
            xb = x[i : i + batch].contiguous()
            ob = out[i : i + batch]
            io.bind_input("x", "cuda", 0, np.float32, tuple(xb.shape), xb.data_ptr())
            io.bind_output("linear_1", "cuda", 0, np.float32, tuple(ob.shape), ob.data_ptr())
            sess.run_with_iobinding(io)
        return out

    a, b = numpy_path(), iobind_path()
    c = torch.from_numpy(cpu_sess.run(None, {"x": xn})[0]).to(DEV)
    res["iobind_vs_numpy_maxdiff"] = float((a - b).abs().max())
    res["cuda_vs_cpu_ort_maxdiff"] = float((a - c).abs().max())
    res["cuda_vs_cpu_argmax_flips"] = int((a.argmax(1) != c.argmax(1)).sum())
    res["t_numpy_1900"] = timed(numpy_path)
    res["t_iobind_1900"] = timed(iobind_path)
    res["t_iobind_1900_batch1900"] = timed(lambda: iobind_path(1900))
    res["t_cpu_provider_1900"] = timed(lambda: numpy_path(cpu_sess), repeats=3)
    # one-pixel-shaped load: 16384 images per call
    big = x[torch.arange(16384, device=DEV) % len(x)].contiguous()
    bign = big.cpu().numpy()
    out = torch.empty((len(big), 10), device=DEV)

    def big_numpy():
        return torch.from_numpy(sess.run(["linear_1"], {"x": big.cpu().numpy()})[0]).to(DEV)

    def big_io():
        io = sess.io_binding()
        sync()
        io.bind_input("x", "cuda", 0, np.float32, tuple(big.shape), big.data_ptr())
        io.bind_output("linear_1", "cuda", 0, np.float32, tuple(out.shape), out.data_ptr())
        sess.run_with_iobinding(io)
        return out

    res["t_numpy_16384"] = timed(big_numpy)
    res["t_iobind_16384"] = timed(big_io)
    del bign
    return res


@section("tf32")
def tf32():
    res: dict[str, object] = {}
    for name, n, bs in (("lenet", 1900, 1000), ("resnet18", 1000, 250)):
        model, x, y = model_and_data(name, n)
        cpu_model = ca.load_model("cpu", name).double()
        with torch.no_grad():
            ref = torch.cat([cpu_model(x[i : i + bs].cpu().double()) for i in range(0, n, bs)])
        for flag in (True, False):
            torch.backends.cudnn.allow_tf32 = flag
            with torch.no_grad():
                out = torch.cat([model(x[i : i + bs]) for i in range(0, n, bs)]).double().cpu()
            t = timed(lambda: ca.forward_backward_sweep(model, x, y, bs))
            res[f"{name}_tf32={flag}"] = {
                "fwd_bwd_sweep_s": t,
                "max_abs_logit_err_vs_f64": float((out - ref).abs().max()),
                "argmax_flips_vs_f64": int((out.argmax(1) != ref.argmax(1)).sum()),
            }
        torch.backends.cudnn.allow_tf32 = True
    return res


@section("onepixel")
def onepixel():
    from robaudit.attacks.onepixel import OnePixel

    res: dict[str, object] = {}
    model, x, y = lenet_data(500)
    seeds = torch.arange(len(x), device=DEV)
    fp32 = model

    def run(fn, attack, n):
        adv = attack(fn, x[:n], y[:n], eps=1.0, norm="l0", seeds=seeds[:n])
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y[:n]
        return adv, fooled

    base_adv, base_fooled = run(fp32, OnePixel(), 500)
    for label, attack in (
        ("default", OnePixel()),
        ("pass4096", OnePixel(images_per_pass=4096)),
        ("pass65536", OnePixel(images_per_pass=65536)),
        ("pass200000", OnePixel(images_per_pass=200000)),
    ):
        t = timed(lambda attack=attack: run(fp32, attack, 500), repeats=3, warm=1)
        _, fooled = run(fp32, attack, 500)
        res[label] = {
            "s_500": t,
            "fooled": int(fooled.sum()),
            "same_as_default": bool((fooled == base_fooled).all()),
        }
    for dtype in (torch.bfloat16, torch.float16):

        def amp(xx, dtype=dtype):
            with torch.autocast("cuda", dtype=dtype):
                return model(xx)

        t = timed(lambda amp=amp: run(amp, OnePixel(), 500), repeats=3, warm=1)
        _, fooled = run(amp, OnePixel(), 500)
        res[str(dtype)] = {
            "s_500": t,
            "fooled_fp32_verified": int(fooled.sum()),
            "agree_with_fp32_run": int((fooled == base_fooled).sum()),
        }
    # where the time goes: pure forward floor for one generation of 500 x 400 images
    big = x[torch.arange(16384, device=DEV) % len(x)]
    with torch.no_grad():
        per = timed(lambda: model(big)) / len(big)
    res["fwd_per_image_us_16384"] = per * 1e6
    res["floor_500_s"] = per * 500 * 400 * 100
    # resnet18 timing (10 generations, 20 samples)
    rmodel, rx, ry = model_and_data("resnet18", 20)
    for label, fn in (("fp32", rmodel), ("bf16", None)):
        if fn is None:

            def fn(xx):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return rmodel(xx)

        att = OnePixel(generations=10)
        t = timed(
            lambda fn=fn, att=att: att(fn, rx, ry, eps=1.0, norm="l0", seeds=seeds[:20]), repeats=2, warm=1
        )
        res[f"resnet18_{label}_20x10gen_s"] = t
    return res


@section("pgd")
def pgd():
    from robaudit.attacks.pgd import PGD

    res: dict[str, object] = {}
    for name, n, bs in (("lenet", 1000, 250), ("lenet", 1000, 1000), ("resnet18", 1000, 250)):
        model, x, y = model_and_data(name, n)
        seeds = torch.arange(n, device=DEV)
        sweep = timed(lambda: ca.forward_backward_sweep(model, x, y, bs))
        r: dict[str, object] = {"sweep_s": sweep, "floor40_s": 40 * sweep}
        for norm, eps in (
            ("linf", 0.1 if name == "lenet" else 8 / 255),
            ("l2", 1.5 if name == "lenet" else 0.5),
        ):
            # lagged=False: the fooled flags read at once, a wait for the GPU at every step (the
            # behaviour before the lagged read).
            for es, lagged in ((True, None), (False, None), (True, False), (False, False)):
                att = PGD(steps=40, early_stop=es, lagged=lagged)

                def go(att=att, norm=norm, eps=eps):
                    for i in range(0, n, bs):
                        att(model, x[i : i + bs], y[i : i + bs], eps=eps, norm=norm, seeds=seeds[i : i + bs])

                t = timed(go, repeats=3, warm=1)
                r[f"{norm}_early={es}" + ("_unlagged" if lagged is False else "")] = {
                    "s": t,
                    "ratio": t / (40 * sweep),
                }
        res[f"{name}_bs{bs}"] = r
    return res


@section("compile")
def compile_check():
    res: dict[str, object] = {}
    for name, n, bs, modes in (
        ("lenet", 1000, 250, ("reduce-overhead",)),
        ("resnet18", 1000, 250, ("default",)),
    ):
        model, x, y = model_and_data(name, n)
        eager = timed(lambda: ca.forward_backward_sweep(model, x, y, bs))
        r: dict[str, object] = {"eager_sweep_s": eager}
        if name == "resnet18":
            cl = ca.load_model(DEV, name).to(memory_format=torch.channels_last)
            r["channels_last_sweep_s"] = timed(lambda: ca.forward_backward_sweep(cl, x, y, bs))
        for mode in modes:
            t0 = time.perf_counter()
            cm = torch.compile(model, mode=mode)
            ca.forward_backward_sweep(cm, x, y, bs)
            sync()
            r[f"{mode}_compile_s"] = time.perf_counter() - t0
            r[f"{mode}_sweep_s"] = timed(lambda cm=cm: ca.forward_backward_sweep(cm, x, y, bs))
        res[name] = r
    return res


SECTIONS = {
    "env": env,
    "ort": ort_check,
    "tf32": tf32,
    "onepixel": onepixel,
    "pgd": pgd,
    "compile": compile_check,
}


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_out"), help="folder for exp.json")
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_candidates.py needs a CUDA GPU")
    OUT = args.out
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.sections or list(SECTIONS):
        SECTIONS[name]()
    print(json.dumps({k: v for k, v in RESULTS.items() if not k.endswith("_seconds")}, default=str)[:6000])


if __name__ == "__main__":
    main()
