"""Rewrites of an ONNX graph before robaudit runs and converts it, and what its first operation says.

Each rewrite keeps what the graph computes (ONNX Runtime gives the same outputs) and removes something
that stops a converter or masks gradients: nodes out of order, Identity nodes over shared weights, a
final Softmax or Sigmoid. Each returns whether (or how much) it changed, for the notes.
"""

from __future__ import annotations

import copy

import onnx
from onnx import helper, numpy_helper


def topological_sort(graph: onnx.GraphProto) -> bool:
    """Sort ``graph.node`` in place so every node follows its inputs (Kahn). Returns True if it moved any.

    Real Keras/tf2onnx exports ship unsorted nodes; ONNX Runtime sorts for itself, converters do not.
    """
    produced_by = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    deps: list[set[int]] = []
    for node in graph.node:
        deps.append({produced_by[name] for name in node.input if name in produced_by})
    if all(all(d < i for d in dep) for i, dep in enumerate(deps)):
        return False  # already in a topological order (any one will do; keep the exporter's)
    order: list[int] = []
    placed: set[int] = set()
    remaining = list(range(len(graph.node)))
    while remaining:
        ready = [i for i in remaining if deps[i] <= placed]
        if not ready:  # a cycle: leave the graph as it is and let the checker speak
            return False
        for i in ready:
            placed.add(i)
            order.append(i)
        remaining = [i for i in remaining if i not in placed]
    if order == list(range(len(graph.node))):
        return False
    nodes = [copy.deepcopy(graph.node[i]) for i in order]
    del graph.node[:]
    graph.node.extend(nodes)
    return True


def bypass_initializer_identities(graph: onnx.GraphProto) -> int:
    """Let the consumers of ``Identity(initializer)`` read the initializer itself; return how many.

    PyTorch's TorchScript exporter stores equal initializers once and gives the other users an Identity
    of it (a freshly initialised ResNet-18's folded BatchNorm biases are all zeros: 16 such nodes).
    Both converters look a Conv's weight and bias up among the initializers and fail on such a graph;
    ONNX Runtime computes the same either way. Names that a graph output or a subgraph uses stay.
    """
    initializers = {t.name for t in graph.initializer}
    kept = {o.name for o in graph.output} | _subgraph_names(graph)
    target = {
        node.output[0]: node.input[0]
        for node in graph.node
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in kept
    }
    if not target:
        return 0
    nodes = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in target)]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in target:
                node.input[i] = target[name]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(target)


# Operators whose inputs after the first are weights (and bias) that the converters build a layer from.
_WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm"}


def lift_weight_constants(graph: onnx.GraphProto) -> int:
    """Turn ``Constant`` nodes that feed a Conv/ConvTranspose/Gemm weight or bias into initializers of
    the same name; return how many.

    PyTorch's TorchScript exporter writes a non-persistent buffer used as a weight (timm's BlurPool
    filter, say) as a Constant node rather than an initializer. Both converters read a Conv's weight
    only from the initializers and fail on such a graph; ONNX Runtime computes the same either way.
    """
    weights = {
        name for node in graph.node if node.op_type in _WEIGHTED_OPS for name in node.input[1:] if name
    }
    kept = {o.name for o in graph.output} | _subgraph_names(graph)
    lifted = []
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and len(node.output) == 1
            and node.output[0] in weights
            and node.output[0] not in kept
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            lifted.append((node, tensor))
    if not lifted:
        return 0
    graph.initializer.extend(tensor for _, tensor in lifted)
    gone = {id(node) for node, _ in lifted}
    nodes = [n for n in graph.node if id(n) not in gone]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(lifted)


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name that a node's subgraph (If, Loop, Scan bodies) reads or writes."""
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                subgraphs = [attribute.g]
            else:
                subgraphs = list(attribute.graphs)  # empty unless a GRAPHS attribute
            for sub in subgraphs:
                for inner in sub.node:
                    names.update(inner.input)
                    names.update(inner.output)
                names |= _subgraph_names(sub)
    return names


def strip_final_softmax(model: onnx.ModelProto) -> str | None:
    """Drop a Softmax that produces the first graph output, so the output is the logits feeding it, or
    a Sigmoid over a single score (a binary classifier's probability); return the operator dropped.

    Gradients through a saturated softmax vanish (1e-5 to 1e-6 measured on Keras models), and a
    sigmoid rounds to exactly 1 in float32 once its logit passes 17: attacks must see the logits.
    """
    graph = model.graph
    out_name = graph.output[0].name
    producers = [n for n in graph.node if out_name in n.output]
    if len(producers) != 1 or producers[0].op_type not in ("Softmax", "Sigmoid"):
        return None
    if producers[0].op_type == "Sigmoid":  # element-wise: a probability only when there is one score
        dims = graph.output[0].type.tensor_type.shape.dim
        if not dims or not (dims[-1].HasField("dim_value") and dims[-1].dim_value == 1):
            return None
    softmax = producers[0]
    consumers = [n for n in graph.node if softmax.input[0] in n.input and n is not softmax]
    other_outputs = [o for o in graph.output[1:] if o.name == softmax.input[0]]
    if consumers or other_outputs:
        return None  # the logits are used elsewhere; keep the graph whole
    old = graph.output[0]
    new = helper.make_tensor_value_info(softmax.input[0], old.type.tensor_type.elem_type, None)
    new.type.CopyFrom(old.type)
    graph.node.remove(softmax)
    graph.output.remove(old)
    graph.output.insert(0, new)
    return softmax.op_type


def rescales_from_255(graph: onnx.GraphProto, input_name: str) -> bool:
    """Whether the graph's only use of its input is a multiplication by 1/255 or a division by 255:
    the model then expects pixels on 0..255 (Keras' Rescaling(1/255) layer exports that way)."""
    users = [n for n in graph.node if input_name in n.input]
    if len(users) != 1 or users[0].op_type not in ("Mul", "Div") or len(users[0].input) != 2:
        return False
    node = users[0]
    other = node.input[1] if node.input[0] == input_name else node.input[0]
    if node.op_type == "Div" and other == node.input[0]:
        return False  # 255 / x is no rescaling
    values = {t.name: t for t in graph.initializer}
    values.update(
        {
            n.output[0]: a.t
            for n in graph.node
            if n.op_type == "Constant"
            for a in n.attribute
            if a.name == "value"
        }
    )
    if other not in values:
        return False
    array = numpy_helper.to_array(values[other])
    if array.size != 1:
        return False
    factor = float(array.reshape(-1)[0])
    target = 1 / 255 if node.op_type == "Mul" else 255.0
    return abs(factor - target) <= 1e-6 * target
