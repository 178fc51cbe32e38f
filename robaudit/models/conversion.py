"""The ONNX -> PyTorch converters (onnx2pytorch, onnx2torch), imported and run on a graph.

This module only converts; ``isolated`` runs a trial conversion where a crash or a hang in a converter
cannot take robaudit down, and ``onnx_model`` decides which conversion to trust.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from contextlib import redirect_stdout

import onnx
import torch

from robaudit.errors import one_line

Converter = Callable[[onnx.ModelProto], torch.nn.Module]


def import_converters() -> tuple[list[tuple[str, Converter]], list[str]]:
    """The converters to try in turn, imported into this process, and why any is unavailable.

    Importing them costs more than converting a small model: both import torchvision, which imports
    torch._dynamo (0.9 s on a 2-core CPU). The parent imports them before it forks the trial conversion,
    so the child inherits them and the import is paid once, not once in the child and again here.
    """
    failures: list[str] = []
    attempts: list[tuple[str, Converter]] = []
    try:
        from onnx2pytorch import ConvertModel

        attempts.append(("onnx2pytorch", lambda m: ConvertModel(m, experimental=True, enable_pruning=False)))
    except Exception as exc:  # noqa: BLE001 - a missing or broken converter is one failure among others
        failures.append(f"onnx2pytorch unavailable ({one_line(exc, 80, all_lines=True)})")
    try:
        from onnx2torch import convert

        attempts.append(("onnx2torch", convert))
    except Exception as exc:  # noqa: BLE001
        failures.append(f"onnx2torch unavailable ({one_line(exc, 80, all_lines=True)})")
    return attempts, failures


def convert_with(name: str, model: onnx.ModelProto) -> torch.nn.Module:
    """Convert ``model`` with the converter called ``name``; raises whatever the converter raises."""
    attempts, failures = import_converters()
    converters = dict(attempts)
    if name not in converters:
        raise RuntimeError(next((f for f in failures if f.startswith(name)), f"{name} unavailable"))
    # The converters build layers with random initial weights before loading the graph's: fork the
    # global generator so a library caller's random state is left as it was.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        return converters[name](copy.deepcopy(model))


def trial_convert(model: onnx.ModelProto, name: str) -> None:
    """An isolated child's work. One thread: in a forked child the OpenMP pool the parent started is
    gone, and a parallel region would wait for it forever."""
    torch.set_num_threads(1)
    convert_with(name, model)
