"""Gradients for quantized ONNX graphs: a float surrogate with the quantization taken out.

An int8 graph in the QDQ format (what ONNX Runtime's ``quantize_static`` writes by default, and what
most deployment toolchains emit) stores weights as integers behind ``DequantizeLinear`` and rounds
activations with ``QuantizeLinear`` -> ``DequantizeLinear`` pairs. Neither converter handles those
operators, and rounding has a zero gradient almost everywhere anyway. The surrogate dequantizes the
weights once, exactly, and lets activations pass unrounded but still clipped to the range their int8
type can hold: the straight-through estimator, a case of BPDA (Athalye et al. 2018, "Obfuscated
Gradients"). Keeping the clipping matters: calibrated on a few images, quantization saturates
activations (and logits) that the float model does not, and without it the surrogate's logits were
23 apart from the quantized graph's on the sample LeNet, against 0.17 with it. Attacks take their gradients from it, and every
adversarial example they find is still confirmed on the quantized graph in ONNX Runtime, so the
surrogate can make attacks weaker, never the reported robustness wrong.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def is_qdq(graph: onnx.GraphProto) -> bool:
    return any(node.op_type in QDQ_OPS for node in graph.node)


def float_surrogate(model: onnx.ModelProto) -> tuple[onnx.ModelProto | None, str]:
    """The graph with its weights dequantized and its activation quantize/dequantize pairs removed, and
    what was done, in words; (None, why not) when some quantized operator remains (QLinearConv, ...)."""
    out = copy.deepcopy(model)
    graph = out.graph
    initializers = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    rename: dict[str, str] = {}
    clips: list[onnx.NodeProto] = []
    dropped: set[int] = set()
    weights = pairs = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        constants = all(name in initializers for name in node.input[1:] if name)
        if source in initializers and constants:  # a stored integer weight: dequantize it once
            graph.initializer.append(
                numpy_helper.from_array(_dequantize(node, initializers), name=node.output[0])
            )
            dropped.add(id(node))
            weights += 1
        elif source in producer and producer[source].op_type == "QuantizeLinear":
            quantize = producer[source]
            bounds = _saturation(quantize, initializers)
            if bounds is None:  # the activation as it was before rounding
                rename[node.output[0]] = quantize.input[0]
            else:  # rounding passes straight through; saturation at the int8 range stays, as in the graph
                lo, hi = (f"{node.output[0]}__lo", f"{node.output[0]}__hi")
                graph.initializer.extend(
                    [
                        numpy_helper.from_array(np.array(b, dtype=np.float32), name)
                        for b, name in zip(bounds, (lo, hi), strict=True)
                    ]
                )
                clips.append(helper.make_node("Clip", [quantize.input[0], lo, hi], [node.output[0]]))
            dropped.add(id(node))
            pairs += 1

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    kept = []
    for node in graph.node:  # each Clip takes the place of the pair's DequantizeLinear, in order
        if id(node) not in dropped:
            kept.append(node)
        else:
            kept += [c for c in clips if c.output[0] == node.output[0]]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    graph_outputs = {o.name for o in graph.output}
    # An output that was a dequantized activation now copies the activation it rounded.
    kept += [helper.make_node("Identity", [resolve(o)], [o]) for o in sorted(graph_outputs & set(rename))]
    read = {name for n in kept for name in n.input} | graph_outputs
    kept = [n for n in kept if not (n.op_type == "QuantizeLinear" and n.output[0] not in read)]
    left = sorted(
        {n.op_type for n in kept if n.op_type in QDQ_OPS or n.op_type.startswith(("QLinear", "QGemm"))}
    )
    if left:
        return None, f"quantized operators remain ({', '.join(left)})"
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for n in kept for name in n.input}
    unused = [t for t in graph.initializer if t.name not in used and t.name not in graph_outputs]
    for t in unused:  # the integer weights and the scales, now read by nothing
        graph.initializer.remove(t)
    return out, (
        f"{weights} weight(s) dequantized, {pairs} activation rounding(s) passed straight through with "
        f"their saturation kept"
    )


def _saturation(
    quantize: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]
) -> tuple[float, float] | None:
    """The float range a per-tensor QuantizeLinear saturates at, (qmin - zp) * scale to
    (qmax - zp) * scale; None when its scale or zero point is not a constant scalar."""
    names = list(quantize.input[1:3])
    if not all(name in initializers for name in names if name):
        return None
    scale = numpy_helper.to_array(initializers[names[0]])
    zero = numpy_helper.to_array(initializers[names[1]]) if len(names) > 1 and names[1] else np.uint8(0)
    if scale.size != 1 or np.size(zero) != 1 or not np.issubdtype(np.asarray(zero).dtype, np.integer):
        return None
    info = np.iinfo(np.asarray(zero).dtype)
    z, sc = float(np.asarray(zero).reshape(-1)[0]), float(scale.reshape(-1)[0])
    return (info.min - z) * sc, (info.max - z) * sc


def _dequantize(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> np.ndarray:
    """(q - zero_point) * scale, per tensor or along the node's axis, in float32 (ONNX's definition)."""
    q = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    zero = (
        numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
        if len(node.input) > 2 and node.input[2]
        else np.zeros_like(scale)
    )
    if scale.ndim == 1 and q.ndim > 1:  # per axis
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)
