"""A fine-tuned QReLU model on disk: its weights, a model file that rebuilds it through
``loihi_conv.api`` (so it survives internal moves), the conversion recipe that gives zero coding
error (normalizer "qrelu", v_init for its rounding) and its metadata."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.files import atomic_write
from loihi_conv.convert import Recipe
from loihi_conv.frontend.qrelu import V_INIT, qrelu_modules

__all__ = ["qat_recipe", "save_finetuned"]

_MODEL_FILE = '''\
"""{title}

Written by `loihi-conv finetune-qrelu`. The weights are {weights}, the matching conversion recipe
{recipe}. Evaluate (float SNN) or convert (NetX) with:

    loihi-conv evaluate --model {py}:QReLUModel --weights {weights} --dataset {dataset} --recipe {recipe} -T {T}
    loihi-conv convert --model {py}:QReLUModel --weights {weights} --dataset {dataset} --recipe {recipe} \\
        --target if-soft -T {T} --out model.net
"""
import torch

from loihi_conv import api


class QReLUModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = api.qrelu_model(api.{loader}({source!r}), timesteps={T}, s_max={S}, rounding={rounding!r})

    def forward(self, x):
        return self.net(x)
'''


def qat_recipe(timesteps: int, s_max: int = 1, rounding: str = "floor"):
    """The conversion Recipe matching a QReLU network: normalizer "qrelu", if-soft (S_max=1) or
    if-multibit (S_max>1) neurons with v_init for the rounding, readout window T."""

    neuron = {"neuron_model": "if-soft", "neuron_params": {}} if s_max == 1 else \
        {"neuron_model": "if-multibit", "neuron_params": {"s_max": s_max}}
    return Recipe(normalizer="qrelu", v_init=V_INIT[rounding], timesteps=(timesteps,), **neuron)


def save_finetuned(model: nn.Module, source: str, path: str | Path, dataset: str,
                   info: dict | None = None) -> dict[str, Path]:
    """Write a fine-tuned QReLU ``model`` so ``--model FILE.py:QReLUModel --weights FILE.pt`` loads it.

    ``source`` is what the model was built from: a zoo name or ``path/module.py:Class``.
    Writes ``path`` (.pt state dict of ``QReLUModel``: the model's keys under ``net.``), the
    model class next to it (.py), the matching recipe (.toml) and ``info`` plus T, S_max and
    lambdas (.json). Returns the paths by role: weights, model_file, recipe, info.
    """
    mods = qrelu_modules(model)
    if not mods:
        raise LoihiConvError(f"{type(model).__name__} has no QReLU", "fine-tune it first with finetune()")
    first = mods[0][1]
    T, S, rounding = first.timesteps, first.s_max, first.rounding
    pt = Path(path)
    if pt.suffix != ".pt":
        raise LoihiConvError(f"--out {pt} must end in .pt (the state dict)",
                             f"pass e.g. --out {pt.with_suffix('.pt').name}")
    paths = {"weights": pt, "model_file": pt.with_suffix(".py"), "recipe": pt.with_suffix(".toml"),
             "info": pt.with_suffix(".json")}
    if ":" in source or source.endswith(".py"):
        file_part, _, cls = source.rpartition(":")
        loader, source = "load_user_model", f"{Path(file_part).resolve()}:{cls}"
    else:
        loader = "build_model"
    title = f"{source.rsplit('/', 1)[-1]} with QReLU activations (HPC eq. 16: T={T}, S_max={S}, {rounding})"
    code = _MODEL_FILE.format(title=title, weights=pt.name, recipe=paths["recipe"].name, py=paths["model_file"].name,
                              dataset=dataset, T=T, S=S, rounding=rounding, loader=loader, source=source)
    state = {f"net.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {**(info or {}), "source": source, "dataset": dataset, "timesteps": T, "s_max": S, "rounding": rounding,
            "levels": T * S, "clips": {n: float(m.clip) for n, m in mods}, "torch": torch.__version__}
    atomic_write(paths["model_file"], lambda p: p.write_text(code))
    atomic_write(pt, lambda p: torch.save(state, p))
    atomic_write(paths["recipe"], lambda p: qat_recipe(T, S, rounding).to_toml(p))
    atomic_write(paths["info"], lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return paths
