"""What only a CUDA GPU can check: each test is skipped without one, and a skip is not a pass.

On a GPU machine run ``pytest tests/test_gpu.py tests/test_pgd.py -k "gpu or cuda"``. The ONNX Runtime
checks also need onnxruntime-gpu (its CUDA provider) and are skipped without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robaudit.api import run_audit
from robaudit.attacks.pgd import PGD
from robaudit.config import AuditConfig
from tests.conftest import HOLDOUT, SAMPLES, assert_same_points, small_cnn

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")


def _ort_has_cuda() -> bool:
    from robaudit.models.ort_install import import_onnxruntime

    return GPU and "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()


needs_ort_cuda = pytest.mark.skipif(
    not _ort_has_cuda(), reason="needs a CUDA GPU and onnxruntime-gpu's CUDA provider"
)


def _holdout(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(HOLDOUT) as npz:
        x = torch.from_numpy(npz["x"][:n].astype(np.float32) / 255.0).unsqueeze(1)
        return x, torch.from_numpy(npz["y"][:n].astype(np.int64))


@needs_gpu
def test_auto_batch_size_halves_on_a_real_gpu_out_of_memory() -> None:
    """With the GPU capped below what the estimate allows, the trial run meets a real CUDA out-of-memory
    error and halves the batch until a forward+backward pass fits under the cap."""
    from robaudit.audit.batching import CAP, _saved_bytes, choose
    from robaudit.models.torch_model import module_handle

    device = torch.device("cuda")
    x, _ = _holdout(8)
    adapter = module_handle(small_cnn(2), AuditConfig(model=Path("in-memory")), device).bind((1, 28, 28), x)
    uncapped = choose(adapter, x, 100_000, budget=1 << 50)
    assert uncapped.batch_size == CAP  # a few hundred MiB: fits on any GPU
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    allowed = torch.cuda.memory_reserved(device) + CAP * uncapped.bytes_per_sample // 8
    torch.cuda.set_per_process_memory_fraction(allowed / total, device)
    try:
        capped = choose(adapter, x, 100_000, budget=1 << 50)  # the estimate alone would say CAP again
        assert 1 <= capped.batch_size < CAP
        rows = x[torch.arange(capped.batch_size) % len(x)].to(device)
        assert _saved_bytes(adapter, rows) > 0  # the chosen batch runs under the cap
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


@needs_gpu
@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_lagged_pgd_on_a_gpu_returns_the_points_of_unlagged_pgd(norm: str) -> None:
    """On a GPU PGD reads the fooled flags a step late; the points must be those read at once."""
    torch.backends.cudnn.deterministic = True  # the same gradients for the same batch in both runs
    try:
        model = small_cnn(2).cuda()
        x, _ = _holdout(64)
        x = x.cuda()
        with torch.no_grad():
            y = model(x).argmax(1)
        eps = {"linf": 0.1, "l2": 1.5, "l1": 10.0}[norm]
        seeds = torch.arange(64)
        lagged, unlagged = (
            PGD(steps=20, lagged=lag)(model, x, y, eps=eps, norm=norm, seeds=seeds) for lag in (True, False)
        )
        assert_same_points(lagged, unlagged, model)
        with torch.no_grad():
            fooled = model(lagged).argmax(1) != y
    finally:
        torch.backends.cudnn.deterministic = False
    assert 0 < int(fooled.sum()) < 64  # fooled and unbroken samples both covered


@needs_gpu
def test_a_scan_on_the_gpu_agrees_with_the_cpu() -> None:
    """The same audit of the sample TorchScript model on the GPU and on the CPU: the same clean
    accuracy, and robust accuracy within 1% of the samples per attack: the devices round differently,
    which can tip a sample that sits on the boundary."""
    settings = dict(
        model=SAMPLES / "mnist_cnn.pt", data=str(HOLDOUT), limit=200, attacks=("fgsm", "pgd"), checks=False
    )
    on_gpu = run_audit(AuditConfig(device="cuda", **settings))  # type: ignore[arg-type]
    on_cpu = run_audit(AuditConfig(device="cpu", **settings))  # type: ignore[arg-type]
    assert on_gpu.settings["device"].startswith("cuda")
    assert on_gpu.n_clean_correct == on_cpu.n_clean_correct
    for gpu_row, cpu_row in zip(on_gpu.rows, on_cpu.rows, strict=True):
        assert (gpu_row.attack, gpu_row.eps) == (cpu_row.attack, cpu_row.eps)
        assert abs(gpu_row.n_robust - cpu_row.n_robust) <= 2


@needs_ort_cuda
def test_onnx_runtime_runs_on_its_cuda_provider_in_full_fp32() -> None:
    """An ONNX model audited on the GPU runs on ONNX Runtime's CUDA provider, and with TF32 off (the
    default) its logits match the CPU provider's within 1e-4."""
    from robaudit.models.onnx_model import OnnxModelHandle

    path = SAMPLES / "mnist_cnn.onnx"
    x, _ = _holdout(256)
    logits = {}
    for name in ("cuda", "cpu"):
        handle = OnnxModelHandle(path, AuditConfig(model=path), torch.device(name))
        assert handle.provider == ("CUDAExecutionProvider" if name == "cuda" else "CPUExecutionProvider")
        logits[name] = torch.from_numpy(handle._run(x.numpy()))
    torch.testing.assert_close(logits["cuda"], logits["cpu"], atol=1e-4, rtol=1e-4)
