"""ONNX graphs that draw random numbers (RandomNormalLike and its kin): audited, checked statistically.

ONNX Runtime runs them; onnx2pytorch converts them to layers that draw from torch's generator (the
randomness is kept, so EOT's gradient samples differ as the runtime's passes do). The two runtimes
cannot draw the same numbers, so the usual check, equal logits on the first batch, cannot hold. The
conversion is held instead to equal *means*: over many passes, each output's mean on ONNX Runtime and
on the conversion must agree within the tolerance plus five standard errors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch

RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
DRAWS = 64  # passes per runtime for the statistical check
_SAMPLES = 16  # of the first batch
_SIGMAS = 5.0  # standard errors allowed: a false refusal is then about one in a million per output


def random_ops(model: onnx.ModelProto) -> list[str]:
    """The random op types of the graph (and its subgraphs), sorted; empty for a deterministic graph."""
    found: set[str] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.op_type in RANDOM_OPS:
                found.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return sorted(found)


def _moments(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    stack = np.stack([o.reshape(o.shape[0], -1).astype(np.float64) for o in outputs])
    return stack.mean(0), stack.var(0, ddof=1) / len(outputs)


def mean_parity(
    runtime: Callable[[np.ndarray], np.ndarray],
    converted: Callable[[torch.Tensor], torch.Tensor],
    model_input: np.ndarray,
    device: torch.device,
    tolerance: float,
) -> tuple[float, bool]:
    """(largest difference between the two runtimes' mean outputs, whether every output's difference
    is within ``tolerance`` plus ``_SIGMAS`` standard errors of the difference)."""
    x = model_input[:_SAMPLES]
    ort_mean, ort_var = _moments([runtime(x) for _ in range(DRAWS)])
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    with torch.no_grad():
        torch_outputs = [converted(xt).float().cpu().numpy() for _ in range(DRAWS)]
    conv_mean, conv_var = _moments(torch_outputs)
    diff = np.abs(ort_mean - conv_mean)
    allowed = tolerance + _SIGMAS * np.sqrt(ort_var + conv_var)
    return float(diff.max()), bool((diff <= allowed).all())
