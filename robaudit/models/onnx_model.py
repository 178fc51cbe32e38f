"""ONNX models: predictions from ONNX Runtime, gradients from a PyTorch conversion of the graph.

The conversion is only trusted after its logits match ONNX Runtime's on the first batch, and every
adversarial example it helps find is re-checked on ONNX Runtime by the runner.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import torch

from robaudit.config import AuditConfig
from robaudit.errors import InputError, is_out_of_memory, one_line
from robaudit.models.base import (
    Capabilities,
    InDtype,
    ModelAdapter,
    Preprocessing,
    chunked,
    detect_output_kind,
    output_classes,
)
from robaudit.models.conversion import Converter, convert_with, import_converters, trial_convert
from robaudit.models.handle import FileHandle, declared_sample_shape
from robaudit.models.isolated import preflight, trial_conversion
from robaudit.models.layout import use_channels_last
from robaudit.models.onnx_graph import (
    bypass_initializer_identities,
    lift_weight_constants,
    rescales_from_255,
    strip_final_softmax,
    topological_sort,
)
from robaudit.models.onnx_random import DRAWS, mean_parity, random_ops
from robaudit.models.onnx_safety import check_initializer_sizes, load_external_data_safely
from robaudit.models.ort_install import import_onnxruntime
from robaudit.models.quantized import float_surrogate, is_qdq
from robaudit.precision import ort_cuda_options

log = logging.getLogger(__name__)


# A quantized graph's float surrogate must predict the class ONNX Runtime predicts on this share of the
# first batch: int8 rounding moves logits (so they cannot match to 1e-4), but should rarely move a class.
SURROGATE_AGREEMENT = 0.95

FLOAT_INPUTS: dict[int, type[np.floating]] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}


_TORCH_DTYPES: dict[type[np.floating], torch.dtype] = {np.float16: torch.float16, np.float64: torch.float64}


def _graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InputError(f"model has {len(inputs)} inputs; robaudit audits single-input image classifiers")
    return inputs[0]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in value.type.tensor_type.shape.dim
    ]


def infer_layout(dims: list[int | None]) -> str:
    """NHWC when the last axis looks like channels and the second does not (Keras/tf2onnx exports)."""
    if len(dims) == 4 and dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):
        return "nhwc"
    return "nchw"


class OnnxModelHandle(FileHandle):
    def __init__(self, path: Path, config: AuditConfig, device: torch.device) -> None:
        super().__init__(path, config, device)
        ort = import_onnxruntime()
        model = self._read(path)
        # A crash or hang in the C++ parsers stays in a child. Meanwhile the converters are imported
        # here (0.9 s, see import_converters), which needs no model, so the check costs no wall time.
        preflight(model.SerializeToString(), path, meanwhile=import_converters)
        try:
            onnx.checker.check_model(model)
            checker_error = None
        except Exception as exc:  # noqa: BLE001
            checker_error = one_line(exc, 160, all_lines=True)
        self._prepare_graph(model)
        self._read_input(_graph_input(model), model)
        self.model = model
        self.session = self._open_session(ort, model, checker_error)
        if checker_error:
            self.notes.append(f"{path.name}: fails onnx.checker ({checker_error}) but runs in ONNX Runtime")
        self.provider = self.session.get_providers()[0]
        self.output_name = self.session.get_outputs()[0].name

    def _read(self, path: Path) -> onnx.ModelProto:
        """The graph in ``path``, with any external weights loaded, refused when corrupt, empty or with
        initializers larger than their files can hold."""
        try:
            model = onnx.load_model_from_string(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - protobuf raises several types for corrupt bytes
            raise InputError(
                f"{path}: not a readable ONNX file ({one_line(exc, all_lines=True)}); re-export the model"
            ) from None
        if not model.graph.node:
            raise InputError(f"{path}: the ONNX graph is empty; re-export the model")
        if load_external_data_safely(model, path):
            self.notes.append(f"{path.name}: weights loaded from external data files next to the model")
        check_initializer_sizes(model, path)
        return model

    def _prepare_graph(self, model: onnx.ModelProto) -> None:
        """Rewrite the graph where the converters need it, and drop a final Softmax or Sigmoid so that
        attacks see logits; a note for each change."""
        name = self.path.name
        if topological_sort(model.graph):
            self.notes.append(f"{name}: graph nodes were not in topological order; sorted them")
        bypassed = bypass_initializer_identities(model.graph)
        if bypassed:
            self.notes.append(
                f"{name}: {bypassed} Identity node(s) over shared weights bypassed for the conversion"
            )
        lifted = lift_weight_constants(model.graph)
        if lifted:
            self.notes.append(
                f"{name}: {lifted} Constant node(s) used as layer weights made initializers for the conversion"
            )
        stripped = strip_final_softmax(model)
        self.stripped_softmax = stripped is not None
        if stripped == "Softmax":
            self.notes.append(f"{name}: graph ends in Softmax; attacks use the logits that feed it")
        elif stripped == "Sigmoid":
            self.notes.append(
                f"{name}: graph ends in a Sigmoid over one score (a binary classifier); attacks use the "
                f"logit that feeds it"
            )

    def _read_input(self, graph_input: onnx.ValueInfoProto, model: onnx.ModelProto) -> None:
        """The input's name, float type, layout, fixed batch size and declared (C, H, W); refused
        unless it is a float image batch."""
        path = self.path
        self.input_name = graph_input.name
        if self.config.preprocessing.input_range == (0.0, 1.0) and rescales_from_255(
            model.graph, self.input_name
        ):
            self.notes.append(
                f"{path.name}: the graph first scales its input by 1/255 (a Keras Rescaling layer, say), so it "
                f"likely takes pixels on 0..255; if so, pass --input-range 0,255"
            )
        elem_type = graph_input.type.tensor_type.elem_type
        if elem_type not in FLOAT_INPUTS:
            raise InputError(
                f"{path}: input {graph_input.name!r} is of type {onnx.TensorProto.DataType.Name(elem_type)}; "
                f"attacks need a float input to perturb: export the model with a float32 input (casting "
                f"inside the graph if it needs to)"
            )
        # float16 and float64 graphs are fed and read in their own type; robaudit works in float32.
        self.input_dtype = FLOAT_INPUTS[elem_type]
        if self.input_dtype == np.float16:
            self.notes.append(
                f"{path.name}: takes float16 input, so every image, adversarial ones included, is rounded to "
                f"float16 on its way in (steps of up to 4.9e-4 on [0, 1])"
            )
        dims = _dims(graph_input)
        if len(dims) != 4:
            raise InputError(
                f"{path}: input {graph_input.name!r} has rank {len(dims)}; robaudit audits image models "
                f"with (N, C, H, W) or (N, H, W, C) input"
            )
        self.layout = (
            self.config.preprocessing.layout
            if self.config.preprocessing.layout != "auto"
            else infer_layout(dims)
        )
        self.fixed_batch = dims[0]
        self.declared_shape = declared_sample_shape(dims, self.layout)

    def _open_session(self, ort: ModuleType, model: onnx.ModelProto, checker_error: str | None) -> Any:
        """An ONNX Runtime session on the model, on CUDA when the device is a GPU and the runtime has it."""
        providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", ort_cuda_options(self.config.run.tf32)))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # A graph's random ops seed from this when the graph gives no seed: the same run, the same draws.
        ort.set_seed(self.config.run.seed)
        try:
            return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        except Exception as exc:  # noqa: BLE001
            detail = f"; onnx.checker also says: {checker_error}" if checker_error else ""
            raise InputError(
                f"{self.path}: ONNX Runtime cannot load the model ({one_line(exc, 160, all_lines=True)}){detail}; "
                "re-export it"
            ) from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        feed = x.astype(self.input_dtype, copy=False)
        return np.asarray(self.session.run([self.output_name], {self.input_name: feed})[0], dtype=np.float32)

    def _run_on_zeros(self, pre: Preprocessing, sample_shape: tuple[int, int, int]) -> None:
        chunked(self._run, self.fixed_batch)(pre.apply(torch.zeros((1, *sample_shape))).numpy())

    def restore(self) -> None:
        """Nothing to give back: the converted module is robaudit's own."""

    def bind(self, sample_shape: tuple[int, int, int], probe_x01: torch.Tensor) -> ModelAdapter:
        pre = self._preprocessing()
        runtime = chunked(self._run, self.fixed_batch)
        model_input = pre.apply(probe_x01.cpu()).numpy().astype(np.float32)
        try:
            reference = runtime(model_input)
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                f"{self.path}: ONNX Runtime fails on data of shape {'x'.join(map(str, sample_shape))} "
                f"({one_line(exc, 160, all_lines=True)}); pass data of the model's input shape, or set --layout"
            ) from None
        reference_2d = torch.from_numpy(reference.reshape(reference.shape[0], -1).astype(np.float32))
        detected = detect_output_kind(reference_2d)
        kind = detected if self.config.model.output == "auto" else self.config.model.output
        if kind == "probabilities" and not self.stripped_softmax:
            self.notes.append(
                f"{self.path.name}: outputs probabilities with no final Softmax to remove; attacks use their "
                f"log, which can mask gradients"
            )

        self.surrogate_gap = 0.0  # set when gradients come from a quantized graph's float surrogate
        torch_model, converter, parity, note = self._convert_checked(
            pre, probe_x01, model_input, reference, reference_2d
        )
        return ModelAdapter(
            name=str(self.path),
            sample_shape=sample_shape,
            num_classes=output_classes(int(reference_2d.shape[1])),
            preprocessing=pre,
            output_kind=kind,
            detected_output_kind=detected,
            device=self.device,
            capabilities=Capabilities(
                backend="onnx",
                gradients=torch_model is not None,
                converter=converter if torch_model is not None else None,
                gradient_note=note,
                parity_max_abs_diff=parity,
                runtime_provider=self.provider,
                surrogate_gap=self.surrogate_gap,
            ),
            torch_model=torch_model,
            runtime=runtime,
        )

    def _convert_checked(
        self,
        pre: Preprocessing,
        probe_x01: torch.Tensor,
        model_input: np.ndarray,
        reference: np.ndarray,
        reference_2d: torch.Tensor,
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str | None, float | None, str | None]:
        """The first conversion that runs and matches ONNX Runtime on the probe batch, trying the
        converters in turn: (module, converter, largest logit difference, why there is none, in words).

        Each converter is first tried in a child, where a crash or hang in it stays. When every
        conversion that ran disagrees with ONNX Runtime the run stops: gradients from a graph that
        computes something else cannot be trusted. A quantized (QDQ) graph that no converter takes gets
        its float surrogate instead (see ``quantized``), held to the same predictions, not logits.
        """
        attempts, failures = import_converters()
        tolerance = self.config.model.parity_atol + self.config.model.parity_rtol * float(
            reference_2d.abs().max()
        )
        disagreements: list[tuple[str, float]] = []
        tried: list[str] = []  # why converters tried before the one used failed
        randomised = random_ops(self.model)
        for name, _ in attempts:
            candidate, outputs, failure = self._attempt(name, self.model, pre, probe_x01, reference_2d)
            if outputs is None or candidate is None:
                tried.append(f"{name}: {failure}")
                continue
            gap = float((outputs - reference_2d).abs().max())
            agrees = gap <= tolerance
            if randomised:  # no two passes agree: compare the means of many (onnx_random)
                runtime = chunked(self._run, self.fixed_batch)
                gap, agrees = mean_parity(runtime, candidate, model_input, self.device, tolerance)
            if agrees:
                if tried:
                    self.notes.append(f"{self.path.name}: converted with {name} after " + "; ".join(tried))
                if randomised:
                    self.notes.append(
                        f"{self.path.name}: the graph draws random numbers ({', '.join(randomised)}); the "
                        f"conversion with {name} keeps them (torch's generator), and was checked against ONNX "
                        f"Runtime on the mean of {DRAWS} passes: largest difference {gap:.3g}"
                    )
                return candidate, name, gap, None
            if not randomised:
                self._check_runtime_is_deterministic(model_input, reference)
            disagreements.append((name, gap))
            tried.append(f"{name}: disagrees with ONNX Runtime by up to {gap:.3g}")
        if disagreements:
            gaps = ", ".join(f"{name} by up to {gap:.3g}" for name, gap in disagreements)
            raise InputError(
                f"{self.path}: the PyTorch conversion disagrees with ONNX Runtime on the first batch ({gaps}; "
                f"tolerance {tolerance:.3g}); its gradients cannot be trusted: report the model to "
                f"robaudit, or raise --parity-atol if the gap is acceptable"
            )
        if is_qdq(self.model.graph):
            found = self._surrogate(attempts, pre, probe_x01, reference_2d)
            if isinstance(found, tuple):
                return found
            tried.append(found)
        return (
            None,
            None,
            None,
            "the graph could not be converted to PyTorch (" + "; ".join(failures + tried) + ")",
        )

    def _attempt(
        self,
        name: str,
        model: onnx.ModelProto,
        pre: Preprocessing,
        probe_x01: torch.Tensor,
        reference_2d: torch.Tensor,
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, torch.Tensor | None, str]:
        """Convert ``model`` with converter ``name`` (tried in a child first) and run it on the probe
        batch: (module, its outputs as (N, K), ''), or (None, None, what went wrong)."""
        trouble = trial_conversion(
            functools.partial(trial_convert, model, name),
            model.SerializeToString,
            model.ByteSize(),
            converter=name,
        )
        if trouble is not None:
            return None, None, f"the conversion {trouble} in an isolated process"
        try:
            candidate = self._ready(convert_with(name, model), pre, probe_x01)
            with torch.no_grad():
                converted = candidate(pre.apply(probe_x01.to(self.device))).float().cpu()
        except Exception as exc:  # noqa: BLE001 - any failure of a converter's module is that converter's
            if is_out_of_memory(exc):
                raise
            return None, None, one_line(exc, 160, all_lines=True)
        converted = converted.reshape(converted.shape[0], -1)
        if converted.shape != reference_2d.shape:
            return (
                None,
                None,
                (
                    f"outputs of shape {tuple(converted.shape)} where ONNX Runtime gives {tuple(reference_2d.shape)}"
                ),
            )
        return candidate, converted, ""

    def _surrogate(
        self,
        attempts: list[tuple[str, Converter]],
        pre: Preprocessing,
        probe_x01: torch.Tensor,
        reference_2d: torch.Tensor,
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], str, float, None] | str:
        """The float surrogate of a quantized graph, converted, when it predicts what ONNX Runtime
        predicts on at least ``SURROGATE_AGREEMENT`` of the probe batch; else why not, in words."""
        surrogate, how = float_surrogate(self.model)
        if surrogate is None:
            return f"float surrogate: {how}"
        reasons = []
        for name, _ in attempts:
            candidate, outputs, failure = self._attempt(name, surrogate, pre, probe_x01, reference_2d)
            if outputs is None or candidate is None:
                reasons.append(f"{name}: {failure}")
                continue
            agreement = float((outputs.argmax(1) == reference_2d.argmax(1)).float().mean())
            gap = float((outputs - reference_2d).abs().max())
            if agreement < SURROGATE_AGREEMENT:
                reasons.append(f"{name}: predicts as ONNX Runtime on only {agreement:.1%} of the first batch")
                continue
            self.notes.append(
                f"{self.path.name}: quantized graph (QuantizeLinear/DequantizeLinear): gradients come from its "
                f"float surrogate ({how}; straight-through, as BPDA), converted with {name}; it predicts as "
                f"ONNX Runtime on {agreement:.1%} of the first batch, with logits up to {gap:.3g} apart, so PGD "
                f"counts a sample as fooled only when a wrong class leads by more than {2 * gap:.3g}. Every "
                f"adversarial example is still confirmed on the quantized graph"
            )
            self.surrogate_gap = gap
            return candidate, f"{name} (float surrogate of the quantized graph)", gap, None
        return "float surrogate: " + "; ".join(reasons)

    def _ready(
        self, module: torch.nn.Module, pre: Preprocessing, probe_x01: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """A converted module on the device, in eval mode with frozen weights, taking any batch size."""
        module = module.to(self.device).eval()
        if self.config.run.channels_last:
            use_channels_last(module)
        for p in module.parameters():
            p.requires_grad_(False)
        typed: torch.nn.Module = module
        if self.input_dtype != np.float32:
            typed = InDtype(module, _TORCH_DTYPES[self.input_dtype])
        if self.fixed_batch is None:
            return typed
        return self._in_fixed_batches(typed, pre.apply(probe_x01.to(self.device)))

    def _check_runtime_is_deterministic(self, model_input: np.ndarray, reference: np.ndarray) -> None:
        """A conversion can only match a runtime that gives the same outputs for the same input."""
        again = chunked(self._run, self.fixed_batch)(model_input)
        if not np.array_equal(again.reshape(again.shape[0], -1), reference.reshape(reference.shape[0], -1)):
            raise InputError(
                f"{self.path}: ONNX Runtime gives different outputs for the same input (a Dropout "
                "exported in training mode, or a random op); audit a deterministic model: export it "
                "in eval mode (model.eval() before torch.onnx.export)"
            )


def load_onnx(path: Path, config: AuditConfig, device: torch.device) -> OnnxModelHandle:
    return OnnxModelHandle(path, config, device)
