"""Checks an ONNX file must pass before anything reads its tensors.

External data is a path written inside the file. A hostile model can point it at ``/etc/shadow``,
``../../secrets`` or a symlink out of its folder, so every location is checked to stay inside the
model's folder before it is read. An initializer whose bytes do not match its declared shape is
refused before ONNX Runtime or a converter trusts the shape.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import TensorProto, external_data_helper, helper

from robaudit.errors import InputError

# Typed repeated fields that can hold a tensor's values instead of raw_data.
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _external_info(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _all_tensors(graph: onnx.GraphProto) -> list[TensorProto]:
    """Initializers and tensor attributes (Constant nodes), in this graph and its subgraphs."""
    out = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                out.append(attr.t)
            out.extend(attr.tensors)
            if attr.HasField("g"):
                out.extend(_all_tensors(attr.g))
            for sub in attr.graphs:
                out.extend(_all_tensors(sub))
    return out


def load_external_data_safely(model: onnx.ModelProto, path: Path) -> int:
    """Check every external-data location of ``model`` (read from ``path``) and load the data.

    Returns how many tensors had external data. Raises InputError naming the tensor for a location
    that is absolute, climbs out with ``..``, resolves (through symlinks) outside the model's folder,
    does not exist, or whose offset and length run past the end of the file.
    """
    folder = path.resolve().parent
    tensors = [
        t for t in external_data_helper._get_all_tensors(model) if t.data_location == TensorProto.EXTERNAL
    ]
    for tensor in tensors:
        info = _external_info(tensor)
        location = info.get("location", "")
        fix = "keep external data files next to the model, or re-export with the weights inside the .onnx"
        if not location or Path(location).is_absolute() or ".." in Path(location).parts:
            raise InputError(
                f"{path}: initializer {tensor.name!r} keeps its data at {location!r}, outside the model's folder; "
                f"refused. {fix}"
            )
        target = (folder / location).resolve()
        if folder not in target.parents:
            raise InputError(
                f"{path}: initializer {tensor.name!r} data {location!r} resolves outside the model's folder "
                f"(a symlink?); refused. {fix}"
            )
        if not target.is_file():
            raise InputError(f"{path}: initializer {tensor.name!r} data file {location!r} is missing; {fix}")
        offset, length = int(info.get("offset", 0) or 0), info.get("length")
        size = target.stat().st_size
        if offset < 0 or offset > size or (length is not None and offset + int(length) > size):
            raise InputError(
                f"{path}: initializer {tensor.name!r} asks for bytes past the end of {location!r}; the file is "
                "truncated or the model is corrupt"
            )
    if tensors:
        external_data_helper.load_external_data_for_model(model, str(folder))
    return len(tensors)


def check_initializer_sizes(model: onnx.ModelProto, path: Path) -> None:
    """Refuse an initializer whose stored values do not fill its declared shape exactly."""
    for tensor in model.graph.initializer:
        count = math.prod(tensor.dims)
        if tensor.HasField("raw_data"):
            if tensor.data_type == TensorProto.STRING:
                continue
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            stored, unit = len(tensor.raw_data), itemsize
            expected = count * itemsize
        else:
            values = max((len(getattr(tensor, f)) for f in _TYPED_FIELDS), default=0)
            if values == 0 and count == 0:
                continue
            stored, expected, unit = values, count, 1
            if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
                expected = 2 * count
        if stored != expected:
            raise InputError(
                f"{path}: initializer {tensor.name!r} declares shape {list(tensor.dims)} "
                f"({count} values) but stores {stored // unit if unit else stored}; the file is corrupt or "
                "tampered with; re-export the model"
            )
