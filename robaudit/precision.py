"""Float32 math on NVIDIA GPUs: full FP32 unless the user opts into TF32.

PyTorch lets cuDNN run float32 convolutions in TF32 (a 10-bit mantissa) by default on Ampere and later
GPUs, and ONNX Runtime's CUDA provider does the same for its convolutions and matrix products. That
is fast, but it changes the model's outputs: on an H100, TF32 moved a CIFAR-10 ResNet-18's logits by
up to 3.4e-4 against a float64 reference and flipped 4 of 1000 predictions (full FP32: 4.7e-7, none),
and ONNX Runtime on CUDA differed from ONNX Runtime on the CPU by 6.4e-3 on the sample LeNet. An audit
reports the model's own decisions, the same on every machine, so it runs in full FP32 unless --tf32
asks for speed (1.55x faster forward+backward passes for that ResNet-18).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def float32_math(tf32: bool) -> Iterator[None]:
    """Set PyTorch's TF32 switches for the audit and give the caller's back afterwards."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def ort_cuda_options(tf32: bool) -> dict[str, str]:
    """ONNX Runtime CUDA provider options with the same choice (its ``use_tf32`` defaults to on)."""
    return {"use_tf32": "1" if tf32 else "0"}
