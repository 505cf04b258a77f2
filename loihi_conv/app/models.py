"""Resolve what the user names on the command line into a model, its dataset and input shape."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from loihi_conv.app import data, zoo
from loihi_conv.base.errors import LoihiConvError


@dataclass
class ModelRef:
    module: nn.Module
    name: str
    dataset: str
    input_shape: tuple[int, ...]
    info: dict


def resolve(model: str, weights: str | None = None, dataset: str | None = None,
            progress: bool = True) -> ModelRef:
    """``model`` is a zoo name (trained on first use, then cached) or ``path/module.py:Class``
    (then ``weights`` names its state dict and ``dataset`` is required)."""
    if ":" in model or model.endswith(".py"):
        if dataset is None:
            raise LoihiConvError(f"--dataset is required with a user model ({model})",
                                 f"add --dataset {{{','.join(sorted(data.INFO))}}} or --dataset path/to/data.npz")
        info = data.dataset_info(dataset)
        module = zoo.load_user_model(model, weights).eval()
        _check_runs_on(module, model, dataset, tuple(info.input_shape))
        return ModelRef(module, model, dataset, tuple(info.input_shape), {})
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
