"""Resolve what the user names on the command line into a model, its dataset and input shape.

``--model`` kinds, each a registered ``ModelSource`` (tried in order, the zoo last):
* ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, **model_args)``,
  ``--weights`` a state dict (no download: pretrained weights are a file you pass);
* ``path/to/model.onnx``: an ONNX file converted by onnx2torch (pure data, no code is run);
* ``path/to/module.py:Class``: a class in a file (built with no arguments);
* ``pkg.module:factory``: an importable callable (a class or a function) returning an nn.Module,
  called with ``model_args``;
* a zoo name (trained on first use, then cached).
``model_args`` (``--model-arg KEY=VALUE``) go to torchvision builders and factories.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
import torch.nn as nn

from loihi_conv.app import data, zoo
from loihi_conv.base.errors import LoihiConvError


class ModelSpec(str):
    """The --model string carrying its --model-arg options (``args``), so commands pass one value."""
    args: dict[str, Any]

    def __new__(cls, spec: str, args: dict[str, Any] | None = None):
        obj = super().__new__(cls, spec)
        obj.args = dict(args or {})
        return obj


def parse_model_args(items) -> dict[str, Any]:
    """KEY=VALUE strings -> {key: int | float | bool | None | str}."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = str(item).partition("=")
        if not sep or not key.isidentifier():
            raise LoihiConvError(f"--model-arg {item!r} is not KEY=VALUE", "write e.g. --model-arg num_classes=10")
        out[key] = _literal(raw)
    return out


def _literal(raw: str) -> Any:
    words = {"true": True, "false": False, "none": None}
    if raw.lower() in words:
        return words[raw.lower()]
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


# ---- model sources ----------------------------------------------------------------------
class ModelSource:
    """One kind of --model: ``matches(spec)`` and ``build(spec, weights, args)`` -> nn.Module."""
    kind: ClassVar[str] = ""
    takes_weights: ClassVar[bool] = True

    @staticmethod
    def matches(spec: str) -> bool:
        raise NotImplementedError

    def build(self, spec: str, args: dict[str, Any]) -> nn.Module:
        raise NotImplementedError


MODEL_SOURCES: list[type[ModelSource]] = []


def register_source(cls: type[ModelSource]) -> type[ModelSource]:
    MODEL_SOURCES.append(cls)
    return cls


@register_source
class TorchvisionSource(ModelSource):
    kind = "torchvision"

    @staticmethod
    def matches(spec: str) -> bool:
        return spec.startswith("torchvision:")

    def build(self, spec: str, args: dict[str, Any]) -> nn.Module:
        import torchvision.models as tvm

        name = spec.split(":", 1)[1]
        known = tvm.list_models()
        if name not in known:
            close = [k for k in known if k.startswith(name[:4])] or known[:10]
            raise LoihiConvError(f"torchvision has no model {name!r}", f"use one of: {', '.join(close)}")
        if "weights" in args:
            raise LoihiConvError("--model-arg weights=... would download pretrained weights",
                                 "nothing is downloaded: save the state dict once and pass it with --weights")
        return _call(lambda: tvm.get_model(name, weights=None, **args), spec)


@register_source
class OnnxSource(ModelSource):
    kind = "onnx"
    takes_weights = False

    @staticmethod
    def matches(spec: str) -> bool:
        return spec.lower().endswith(".onnx")

    def build(self, spec: str, args: dict[str, Any]) -> nn.Module:
        path = Path(spec)
        if not path.is_file():
            raise LoihiConvError(f"ONNX file {path} does not exist", "check the path")
        if args:
            raise LoihiConvError(f"--model-arg given with the ONNX file {path}", "an ONNX file has no constructor options")
        import onnx
        from onnx2torch import convert

        try:
            proto = onnx.load(str(path))
            onnx.checker.check_model(proto)
        except Exception as e:  # noqa: BLE001 - protobuf/onnx raise many types for a bad file
            raise LoihiConvError(f"{path} is not a valid ONNX model: {type(e).__name__}: {_first_line(e)}",
                                 "export it with torch.onnx.export(model, example_input, path)") from None
        try:
            return convert(proto)
        except Exception as e:  # noqa: BLE001 - onnx2torch: NotImplementedError for unknown ops, ...
            raise LoihiConvError(f"onnx2torch cannot convert {path}: {type(e).__name__}: {_first_line(e)}",
                                 "export with a standard opset (e.g. opset_version=13) and only the layers "
                                 "loihi-conv supports") from None


@register_source
class FileSource(ModelSource):
    kind = "file"

    @staticmethod
    def matches(spec: str) -> bool:
        file_part = spec.rpartition(":")[0]
        return spec.endswith(".py") or file_part.endswith(".py") or "/" in file_part or "\\" in file_part

    def build(self, spec: str, args: dict[str, Any]) -> nn.Module:
        if args:
            raise LoihiConvError(f"--model-arg given with {spec}",
                                 "a path/module.py:Class is built with no arguments; give them defaults, "
                                 "or name an importable factory as pkg.module:factory")
        return zoo.load_user_model(spec)


@register_source
class FactorySource(ModelSource):
    kind = "factory"

    @staticmethod
    def matches(spec: str) -> bool:
        return re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", spec) is not None

    def build(self, spec: str, args: dict[str, Any]) -> nn.Module:
        mod_name, _, attr = spec.partition(":")
        try:
            obj: Any = importlib.import_module(mod_name)
        except Exception as e:  # noqa: BLE001 - whatever importing the user's package raises
            raise LoihiConvError(f"cannot import {mod_name!r}: {type(e).__name__}: {_first_line(e)}",
                                 "install the package or put it on PYTHONPATH; a file is named "
                                 "path/to/module.py:Class") from None
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        if not callable(obj):
            raise LoihiConvError(f"{spec}: {attr} is not a callable in {mod_name}",
                                 "name a class or a function that returns an nn.Module")
        return _call(lambda: obj(**args), spec)


def _call(make: Callable[[], Any], spec: str) -> nn.Module:
    try:
        module = make()
    except TypeError as e:
        raise LoihiConvError(f"building {spec} failed: {e}", "check the --model-arg names and values") from None
    except Exception as e:  # noqa: BLE001 - the user's constructor
        raise LoihiConvError(f"building {spec} failed: {type(e).__name__}: {_first_line(e)}",
                             "check the --model-arg values") from None
    if not isinstance(module, nn.Module):
        raise LoihiConvError(f"{spec} returned a {type(module).__name__}, not an nn.Module",
                             "name a callable that returns an nn.Module")
    return module


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _source(spec: str) -> ModelSource | None:
    return next((cls() for cls in MODEL_SOURCES if cls.matches(spec)), None)


def load_weights(module: nn.Module, weights: str, spec: str) -> nn.Module:
    """Load a state dict file into ``module`` through the zoo's loader (``weights_only``)."""
    wpath = Path(weights)
    if not wpath.is_file():
        raise LoihiConvError(f"weights file {wpath} does not exist", "check the path")
    state = zoo._load_state(wpath)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LoihiConvError(f"{wpath} holds a {type(state).__name__}, not a state_dict",
                             "save it with torch.save(model.state_dict(), path)")
    problems = zoo._state_dict_mismatch(module, state)
    if problems:
        raise LoihiConvError(f"weights {wpath} do not fit {spec}:\n    " + "\n    ".join(problems),
                             "use the weights saved from this exact model (and the same --model-arg values)")
    module.load_state_dict(state)
    return module


@dataclass
class ModelRef:
    module: nn.Module
    name: str
    dataset: str
    input_shape: tuple[int, ...]
    info: dict


def resolve(model: str, weights: str | None = None, dataset: str | None = None,
            progress: bool = True) -> ModelRef:
    """``model`` is a zoo name (trained on first use, then cached) or a user model of one of the
    kinds in the module doc (then ``weights`` names its state dict and ``dataset`` is required);
    a ``ModelSpec`` carries the --model-arg options."""
    source = _source(model)
    if source is not None:
        if dataset is None:
            raise LoihiConvError(f"--dataset is required with a user model ({model})",
                                 f"add --dataset {{{','.join(sorted(data.INFO))}}} or --dataset path/to/data.npz")
        if weights is not None and not source.takes_weights:
            raise LoihiConvError(f"--weights given with {model}", "an ONNX file holds its own weights; drop --weights")
        info = data.dataset_info(dataset)
        if isinstance(source, FileSource) and not getattr(model, "args", None):
            module = zoo.load_user_model(model, weights)  # its own weight loading, unchanged
        else:
            module = source.build(str(model), getattr(model, "args", {}))
            if weights is not None:
                module = load_weights(module, weights, str(model))
        module = module.eval()
        _check_runs_on(module, model, dataset, tuple(info.input_shape))
        return ModelRef(module, str(model), dataset, tuple(info.input_shape), {"source": source.kind})
    if getattr(model, "args", None):
        raise LoihiConvError(f"--model-arg given with the zoo model {model!r}",
                             "zoo models have fixed architectures; drop --model-arg")
    if weights is not None:
        raise LoihiConvError(f"--weights given with the zoo model {model!r}",
                             "zoo models load their own cached weights; pass a user model as "
                             "--model path/module.py:Class to use --weights")
    module, info = zoo.get_model(model, progress=progress)
    if dataset is not None and dataset != info["dataset"]:
        raise LoihiConvError(f"zoo model {model!r} is trained on {info['dataset']}, not {dataset}",
                             f"drop --dataset or pass --dataset {info['dataset']}")
    return ModelRef(module, model, info["dataset"], tuple(info["input_shape"]), info)


def _check_runs_on(module: nn.Module, spec: str, dataset: str, input_shape: tuple[int, ...]) -> None:
    """Run the user model once on a zero image of the dataset's shape (1, C, H, W), so a model
    built for another input size fails here, before any dataset download or calibration."""
    try:
        with torch.no_grad():
            module(torch.zeros((1,) + input_shape))
    except Exception as e:  # noqa: BLE001 - whatever the user's forward raises
        detail = (str(e).strip().splitlines() or [""])[0]
        shapes = ", ".join(f"{n}: {tuple(data.dataset_info(n).input_shape)}" for n in sorted(data.INFO))
        raise LoihiConvError(f"{spec} fails on one {dataset} image of shape {(1,) + input_shape}: "
                             f"{type(e).__name__}: {detail}",
                             f"pass the --dataset the model was built for ({shapes}), or fix its "
                             "forward") from None
