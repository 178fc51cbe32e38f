"""PyTorch model files: TorchScript, torch.export programs (.pt2), state_dicts with --arch (pickled by
torch.save or in the safetensors format), and (only with --trust-model) whole pickled modules."""

from __future__ import annotations

import importlib
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.config import AuditConfig
from robaudit.errors import InputError, UsageError, one_line
from robaudit.hashing import sha256_of
from robaudit.models.base import (
    Capabilities,
    InDtype,
    ModelAdapter,
    Preprocessing,
    detect_output_kind,
    output_classes,
)
from robaudit.models.handle import FileHandle, declared_sample_shape
from robaudit.models.layout import use_channels_last

PICKLE_ADVICE = (
    "re-save it with torch.jit.save or torch.export.save, or save its state_dict and pass "
    "--arch package.module:ClassName (or a builder function); pass --trust-model only if you trust where the "
    "file came from"
)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: by suffix, or by content (an 8-byte little-endian header length that fits
    the file, then the JSON header's opening brace), so a weights file saved as ``model.bin`` is
    recognised too."""
    if path.suffix.lower() == ".safetensors":
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(9)
        size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def _load_safetensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file. The format holds only tensors and a JSON header, so reading
    it runs no code from the file (unlike a pickle)."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise InputError(
            f"{path}: is a safetensors file and the safetensors package is not installed; "
            f"pip install safetensors"
        ) from None
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"{path}: not a readable safetensors file ({one_line(exc, all_lines=True)}); re-save it with "
            f"safetensors.torch.save_file(model.state_dict(), path)"
        ) from None


@contextmanager
def _current_folder_importable() -> Iterator[None]:
    """Modules in the current folder importable, as under ``python -m``, for the import only. Both ways a
    model file names code resolve through it: ``--arch mynet:SmallCNN`` and the ``mynet.SmallCNN`` class a
    trusted pickle names."""
    added = "" not in sys.path
    if added:
        sys.path.insert(0, "")
    try:
        yield
    finally:
        if added and "" in sys.path:
            sys.path.remove("")


def _import_arch(spec: str) -> Callable[..., object]:
    """The class or builder function that ``--arch package.module:Name`` names (an nn.Module subclass,
    or a function such as torchvision.models:resnet18 that returns one when called)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise UsageError(f"--arch {spec}: write it as package.module:ClassName or package.module:function")
    try:
        with _current_folder_importable():
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--arch {spec}: cannot import {module_name} ({exc}); check the module path"
        ) from None
    build = getattr(module, name, None)
    is_module_class = isinstance(build, type) and issubclass(build, nn.Module)
    if not is_module_class and not (callable(build) and not isinstance(build, type)):
        raise UsageError(
            f"--arch {spec}: {module_name} has no nn.Module subclass or model-building function named {name}"
        )
    return build  # type: ignore[return-value]


def _state_dict_of(obj: Any) -> dict[str, torch.Tensor] | None:
    """The tensors of a state_dict, also when wrapped in a training checkpoint."""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return None


def _load_file(
    path: Path, config: AuditConfig, device: torch.device
) -> tuple[Callable[..., Any], str, Any, list[str]]:
    """Return (callable model, format name, example input shape or None, notes)."""
    if path.suffix.lower() == ".pt2":
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure here means an unreadable file
            raise InputError(
                f"{path}: not a readable torch.export program ({one_line(exc, all_lines=True)}); re-export it"
            ) from None
        shape: tuple[int | None, ...] | None = None
        user_inputs = set(program.graph_signature.user_inputs)
        for node in program.graph.nodes:
            val = node.meta.get("val")
            if node.op == "placeholder" and node.name in user_inputs and isinstance(val, torch.Tensor):
                # A dimension exported as dynamic is a SymInt; a plain int is fixed in the program.
                shape = tuple(d if isinstance(d, int) else None for d in val.shape)
                break
        return program.module().to(device), "torch.export", shape, []
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch's deprecation notice is for authors, not auditors
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location=device), "TorchScript", None, []
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                f"{path}: not a readable TorchScript file ({one_line(exc, all_lines=True)}); re-save it"
            ) from None
    if _is_safetensors(path):
        return _module_from_state(
            path, _load_safetensors(path, device), config, device, "safetensors state_dict"
        )
    try:
        with warnings.catch_warnings():  # the unpickler's protocol notice is noise: we report the outcome
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc).lower() and "weights only" not in str(exc).lower():
            raise InputError(
                f"{path}: not a readable PyTorch file ({one_line(exc, all_lines=True)})"
            ) from None
        if not config.model.trust_model:
            raise InputError(
                f"{path}: holds a pickled Python object, and loading it would run arbitrary code; {PICKLE_ADVICE}"
            ) from None
        try:
            with _current_folder_importable():
                obj = torch.load(str(path), map_location=device, weights_only=False)
        except (AttributeError, ImportError) as exc:  # the pickle names a class this process cannot find
            raise InputError(
                f"{path}: the pickled model needs code robaudit cannot import ({one_line(exc, all_lines=True)}); its "
                f"modules are imported from the current folder and the installed packages, as --arch's are; a class "
                f"defined in the saving script or notebook (__main__) is not importable: save the model's "
                f"state_dict and pass --arch module:ClassName, or re-save it with torch.jit.save or "
                f"torch.export.save"
            ) from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"{path}: not a readable model file ({one_line(exc, all_lines=True)}); give a .onnx, TorchScript, .pt2 or state_dict"
        ) from None
    if isinstance(obj, nn.Module):
        return obj.to(device), "pickled nn.Module", None, []
    state = _state_dict_of(obj)
    if state is None:
        raise InputError(
            f"{path}: holds a {type(obj).__name__}, not a model or a state_dict; {PICKLE_ADVICE}"
        )
    return _module_from_state(path, state, config, device, "state_dict")


def _module_from_state(
    path: Path, state: dict[str, torch.Tensor], config: AuditConfig, device: torch.device, kind: str
) -> tuple[Callable[..., Any], str, Any, list[str]]:
    """Build ``--arch`` and load a state_dict's weights into it; ``kind`` names the file format."""
    if not state:
        raise InputError(f"{path}: holds no tensors; give the file the model's weights were saved to")
    if config.model.arch is None:
        raise UsageError(
            f"{path}: holds a {kind} (weights without code); pass --arch package.module:ClassName (or a "
            f"function that builds the model, e.g. torchvision.models:resnet18) to build the model"
        )
    build = _import_arch(config.model.arch)
    try:
        # Building draws random initial weights (replaced by the file's): keep the caller's random state.
        with torch.random.fork_rng(devices=[]):
            module = build(**config.model.arch_kwargs)
    except TypeError as exc:
        raise UsageError(
            f"--arch {config.model.arch}: cannot construct it ({exc}); pass --arch-kwargs as JSON"
        ) from None
    if not isinstance(module, nn.Module):
        raise UsageError(
            f"--arch {config.model.arch}: returned a {type(module).__name__}, not an nn.Module; name the model's "
            f"class or a function that builds it"
        )
    notes: list[str] = []
    prefix = _wrapper_prefix(state, set(module.state_dict()))
    if prefix:
        state = {key[len(prefix) :]: value for key, value in state.items()}
        notes.append(
            f"{path.name}: every weight's name began with {prefix!r} (as DataParallel or a Lightning module "
            f"saves them); loaded them without it"
        )
    state = _with_shared_names(state, module)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(
            f"{path}: weights do not fit --arch {config.model.arch} ({one_line(exc, all_lines=True)}); give the class they were saved from"
        ) from None
    return module.to(device), f"{kind} + {config.model.arch}", None, notes


def _with_shared_names(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Fill in the names of weights the model shares (tied embeddings, one tensor used by two layers)
    that the file stores only once, as ``safetensors.torch.save_model`` writes them: each missing name
    takes the tensor of a stored name that is the same tensor in the model."""
    own = module.state_dict(keep_vars=True)
    missing = [name for name in own if name not in state]
    if not missing:
        return state
    by_storage: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for name, tensor in own.items():
        if tensor.device.type != "meta" and tensor.numel():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            by_storage.setdefault(key, []).append(name)
    filled = dict(state)
    for names in by_storage.values():
        stored = next((name for name in names if name in state), None)
        if stored is not None:
            for name in names:
                filled.setdefault(name, state[stored])
    return filled


def _wrapper_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> str:
    """The prefix (``module.``, ``model.``, ...) that every key of ``state`` carries and that the
    model's own keys lack, when removing it makes the two sets of names equal; else ''."""
    if set(state) == expected or not state:
        return ""
    first = next(iter(state))
    for end in (i + 1 for i, ch in enumerate(first) if ch == "."):
        prefix = first[:end]
        if all(key.startswith(prefix) for key in state) and {key[end:] for key in state} == expected:
            return prefix
    return ""


def weights_sha256(module: nn.Module) -> str:
    """A digest of a module's state (names, dtypes, shapes and bytes), for in-memory models."""
    return sha256_of(_state_bytes(module))


def _state_bytes(module: nn.Module) -> Iterator[bytes]:
    """Each tensor of a module's state as a header (name, dtype, shape) and its bytes."""
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        yield f"{name}:{t.dtype}:{tuple(t.shape)}".encode()
        # Flattened first: a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes.
        yield t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


class _Frozen:
    """Puts a module in eval mode with frozen weights, remembering how it was to restore it later.

    Dropout or batch-norm statistics in training mode would make the audit random and wrong, and
    weights that require gradients cost a backward pass through them. With ``--channels-last`` the 4-D
    weights are also laid out channels-last (``layout.use_channels_last``). The user's module is handed
    back exactly as it came.
    """

    def __init__(self, module: object) -> None:
        self.modes: list[tuple[nn.Module, bool]] = []
        self.grads: list[tuple[torch.Tensor, bool]] = []
        self.layouts: list[tuple[torch.Tensor, tuple[int, ...]]] = []  # 4-D tensors and their strides before
        if not isinstance(module, nn.Module):
            return
        self.modes = [(m, m.training) for m in module.modules()]
        self.grads = [(p, p.requires_grad) for p in module.parameters()]
        try:
            module.eval()
        except NotImplementedError:
            pass  # torch.export modules refuse eval(); they keep the mode they were exported in
        for p, _ in self.grads:
            p.requires_grad_(False)
        self.layouts = [(t, t.stride()) for t in [*module.parameters(), *module.buffers()] if t.ndim == 4]

    def restore(self) -> None:
        for m, training in self.modes:
            m.training = training
        for p, flag in self.grads:
            p.requires_grad_(flag)
        for t, stride in self.layouts:
            if t.stride() != stride:
                t.data = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device).copy_(t.data)


class TorchModelHandle(FileHandle):
    def __init__(
        self, path: Path, config: AuditConfig, device: torch.device, module: nn.Module | None = None
    ) -> None:
        super().__init__(path, config, device)
        if module is None:
            self.model, self.format, example_shape, load_notes = _load_file(path, config, device)
            self.notes.extend(load_notes)
        else:
            self.model, self.format, example_shape = module.to(device), "in-memory nn.Module", None
        self._frozen = _Frozen(self.model)
        self.layout = "nhwc" if config.preprocessing.layout == "nhwc" else "nchw"
        self.declared_shape = None
        if example_shape is not None and len(example_shape) == 4:
            self.declared_shape = declared_sample_shape(example_shape, self.layout)
        # A torch.export program exported with a fixed batch size runs in chunks of that size.
        self.fixed_batch = int(example_shape[0]) if example_shape is not None and example_shape[0] else None

    def _run_on_zeros(self, pre: Preprocessing, sample_shape: tuple[int, int, int]) -> None:
        with torch.inference_mode():
            self.model(pre.apply(torch.zeros((1, *sample_shape), device=self.device)))

    def bind(self, sample_shape: tuple[int, int, int], probe_x01: torch.Tensor) -> ModelAdapter:
        pre = self._preprocessing()
        model_input = pre.apply(probe_x01.to(self.device))
        if self.config.run.channels_last:
            use_channels_last(self.model)
        scores = ScoresOnly(self.model)
        self.model = scores
        dtype = _compute_dtype(scores.inner)
        if dtype is not None and dtype != torch.float32:
            # Images stay float32 on [0, 1]; the model sees its own type, as an ONNX graph's input does.
            self.model = InDtype(scores, dtype)
            self.notes.append(
                f"{self.path.name}: the model computes in {str(dtype).removeprefix('torch.')}; each image is "
                f"cast to it on its way in, and the scores back to float32"
            )
        self.model = self._in_fixed_batches(self.model, model_input)
        try:
            with torch.inference_mode():
                raw = self.model(model_input)
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                f"{self.path}: the model fails on data of shape {'x'.join(map(str, sample_shape))} "
                f"({one_line(exc, all_lines=True)}); pass data of the model's input shape, or set --layout"
            ) from None
        if not isinstance(raw, torch.Tensor) or raw.ndim < 2:
            raise InputError(
                f"{self.path}: the model must return a (N, classes) tensor of scores (or a tuple, a dict or an "
                f"output object holding one); it returned {scores.returned}"
            )
        if scores.picked:
            self.notes.append(f"{self.path.name}: the model returns {scores.picked}")
        raw = raw.reshape(raw.shape[0], -1)
        detected = detect_output_kind(raw)
        kind = detected if self.config.model.output == "auto" else self.config.model.output
        if kind == "probabilities":
            self.notes.append(
                "the model outputs probabilities; attacks use their log, and saturated probabilities can mask "
                "gradients: export the logits if you can"
            )
        return ModelAdapter(
            name=str(self.path),
            sample_shape=sample_shape,
            num_classes=output_classes(int(raw.shape[1])),
            preprocessing=pre,
            output_kind=kind,
            detected_output_kind=detected,
            device=self.device,
            capabilities=Capabilities(backend="torch", gradients=True),
            torch_model=self.model,
        )

    def restore(self) -> None:
        """Give the model back in the training mode and requires_grad state it was loaded in."""
        self._frozen.restore()


def _compute_dtype(model: Any) -> torch.dtype | None:
    """The floating type of a model's first parameter or buffer (TorchScript and torch.export modules
    are nn.Modules too), or None."""
    if not isinstance(model, nn.Module):
        return None
    tensors = [*model.parameters(), *model.buffers()]
    return next((t.dtype for t in tensors if t.is_floating_point()), None)


class ScoresOnly(nn.Module):
    """A model's class scores when it returns more than them: the first element of a tuple (ONNX's
    convention for the first output), a dict's ``logits`` (or its only tensor), or an output object's
    ``.logits`` (Hugging Face's image classifiers). What it found is kept for a note."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        super().__init__()
        self.inner = inner
        self.picked = ""  # what the scores were taken from, in words; '' for a plain tensor
        self.returned = ""  # the type returned, for an error

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x)
        if isinstance(out, torch.Tensor):
            return out
        self.returned = type(out).__name__
        logits = getattr(out, "logits", None)
        if isinstance(logits, torch.Tensor):
            self.picked = f"a {type(out).__name__}; attacking its .logits as the class scores"
            return logits
        if isinstance(out, dict):
            tensors = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
            if isinstance(out.get("logits"), torch.Tensor):
                self.picked = "a dict; attacking its 'logits' as the class scores"
                return out["logits"]
            if len(tensors) == 1:
                key = next(iter(tensors))
                self.picked = f"a dict; attacking its only tensor, {key!r}, as the class scores"
                return tensors[key]
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            self.picked = (
                f"a {type(out).__name__} of {len(out)}; attacking its first element as the class scores"
            )
            return out[0]
        return out


def load_torch(path: Path, config: AuditConfig, device: torch.device) -> TorchModelHandle:
    return TorchModelHandle(path, config, device)


def module_handle(module: nn.Module, config: AuditConfig, device: torch.device) -> TorchModelHandle:
    """A handle on a model already in memory (library use); ``config.model.path`` only names it."""
    if not isinstance(module, nn.Module):
        raise UsageError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    return TorchModelHandle(config.model_path, config, device, module=module)
