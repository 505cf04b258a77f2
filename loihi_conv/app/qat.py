"""QReLU quantization-aware training (HPC paper, §3.2): replace a trained model's ReLUs by
``frontend.qrelu.QReLU`` (lambda initialised from activation percentiles) and fine-tune it.
The activation and its theory: ``frontend.qrelu``; saving the result with the recipe that
converts it with zero coding error: ``app.qat_checkpoint``.

Layouts: images float32 (N, C, H, W) in [0, 1], labels int64 (N,); lambda is a 0-dim tensor.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.observe import make_observer
from loihi_conv.frontend.qrelu import QReLU, check_args, qrelu_modules

Tensor = torch.Tensor

__all__ = ["check_finetune_args", "finetune", "qrelu_model"]


# ---- building a QReLU model ---------------------------------------------------------------------
_FUNCTIONAL_RELUS = {("call_function", F.relu), ("call_function", torch.relu), ("call_function", F.relu_),
                     ("call_function", torch.relu_), ("call_method", "relu"), ("call_method", "relu_")}


class _LeafTracer(fx.Tracer):
    """QReLU stays one call_module node (fx traces into non-torch.nn modules by default)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QReLU) or super().is_leaf_module(m, qualname)


def _replace_module_relus(model: nn.Module, make: Callable[[], QReLU]) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, name, make())


def _replace_functional_relus(model: nn.Module, make: Callable[[], QReLU]) -> nn.Module:
    """``model`` itself when its forward calls no functional ReLU, else an fx.GraphModule in
    which each ``F.relu``/``torch.relu``/``x.relu()`` call is a QReLU submodule ``qrelu<i>``."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as e:  # fx raises many types from inside the user's forward
        raise LoihiConvError(f"torch.fx cannot trace {type(model).__name__} to replace its functional ReLUs: "
                             f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}",
                             "remove data-dependent control flow from forward (conversion needs the "
                             "same)") from e
    calls = [n for n in graph.nodes if (n.op, n.target) in _FUNCTIONAL_RELUS]
    if not calls:
        return model
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    for i, node in enumerate(calls):
        name = f"qrelu{i}"
        gm.add_submodule(name, make())
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0] if node.args else node.kwargs["input"],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.recompile()
    return gm


@torch.no_grad()
def _init_clips(model: nn.Module, calib: Tensor, percentile: float, batch_size: int = 256) -> None:
    """Set every QReLU's lambda to the ``percentile`` of its float ReLU output (positive values,
    layer-wise) on ``calib`` (N, *input shape), every QReLU a plain ReLU meanwhile."""
    if not isinstance(calib, Tensor) or calib.dim() < 2 or calib.shape[0] == 0:
        raise LoihiConvError(f"calibration data must be a non-empty tensor (N, C, H, W), got "
                             f"{tuple(calib.shape) if isinstance(calib, Tensor) else type(calib).__name__}",
                             "pass a few hundred training images")
    mods = qrelu_modules(model)
    obs = {name: make_observer("percentile", calib.shape[0], p=percentile, nonzero=True) for name, _ in mods}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: obs[name].update(out)) for name, m in mods]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for _, m in mods:
            m.passthrough = True
        model.eval()
        for xb in calib.float().split(batch_size):
            model(xb)
    finally:
        for h in hooks:
            h.remove()
        for _, m in mods:
            m.passthrough = False
        for m, mode in modes:
            m.training = mode
    for name, m in mods:
        lam = float(obs[name].layer())
        m.clip.fill_(lam if lam > 0 else 1.0)  # a layer silent on the calibration data keeps 1


def qrelu_model(model: nn.Module, timesteps: int, s_max: int = 1, calib: Tensor | None = None,
                percentile: float = 99.0, rounding: str = "floor", clip: float = 1.0) -> nn.Module:
    """A copy of ``model`` with every ReLU -- ``nn.ReLU`` modules and ``F.relu``/``torch.relu``/
    ``x.relu()`` calls -- replaced by a ``QReLU(timesteps, s_max, rounding=rounding)``.

    lambda starts at the ``percentile`` of each ReLU's output on the calibration images ``calib``
    (N, *input shape), positive values, over the whole layer; at ``clip`` without ``calib``.
    The default 99 is the percentile HPC §4.3 uses for its non-QReLU scale factors; with few
    levels (T = 8) a low clip is the better start (fmnist_vgg before fine-tuning, 2000 test
    images: 86% at p=99, 76% at p=99.9, 58% at p=99.99).
    The copy keeps the model's class when its ReLUs are all modules; functional ReLUs make it an
    ``fx.GraphModule`` (same parameter names, plus ``qrelu<i>`` submodules). ``model`` is unchanged.
    """
    check_args(timesteps, s_max, rounding)
    if qrelu_modules(model):
        raise LoihiConvError(f"{type(model).__name__} already has QReLU activations",
                             "pass the float model, or fine-tune this one directly with finetune()")
    make = lambda: QReLU(timesteps, s_max, clip, rounding)  # noqa: E731
    out = copy.deepcopy(model)
    _replace_module_relus(out, make)
    out = _replace_functional_relus(out, make)
    if not qrelu_modules(out):
        raise LoihiConvError(f"{type(model).__name__} has no ReLU to quantize",
                             "QReLU replaces nn.ReLU / F.relu activations; pass a ReLU network")
    if calib is not None:
        _init_clips(out, calib, percentile)
    return out


# ---- fine-tuning ----------------------------------------------------------------------------------
def _training_data(dataset: str | tuple) -> tuple[Tensor, Tensor]:
    from loihi_conv.app.data import load_dataset

    if isinstance(dataset, str):
        return load_dataset(dataset, "train")
    if (isinstance(dataset, (tuple, list)) and len(dataset) == 2 and all(isinstance(t, Tensor) for t in dataset)
            and dataset[0].dim() >= 2 and dataset[0].shape[0] == dataset[1].shape[0] > 0):
        return dataset[0].float(), dataset[1].long()
    raise LoihiConvError("the fine-tuning data must be a dataset name or a pair (images (N, C, H, W), labels (N,))",
                         "pass e.g. 'fashion-mnist' or (x, y) tensors with the same N > 0")


def check_finetune_args(timesteps: Any, s_max: Any = 1, rounding: Any = "floor", epochs: Any = 1, lr: Any = 2e-4,
                        batch_size: Any = 128, max_batches: Any = None, augment: Any = "flip") -> None:
    """Raise LoihiConvError for the first bad ``finetune`` argument (before any data is loaded)."""
    check_args(timesteps, s_max, rounding)
    _check_training(epochs, lr, batch_size, max_batches, augment)


def _check_training(epochs: Any, lr: Any, batch_size: Any, max_batches: Any, augment: Any) -> None:
    from loihi_conv.app.train import AUGMENTS

    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not positive_int(value):
            raise LoihiConvError(f"{name}={value!r} must be a positive integer", f"pass e.g. {name}=1")
    if max_batches is not None and not positive_int(max_batches):
        raise LoihiConvError(f"max_batches={max_batches!r} must be a positive integer or None",
                             "pass e.g. max_batches=100, or None for whole epochs")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise LoihiConvError(f"lr={lr!r} must be a positive number", "pass e.g. lr=2e-4")
    if augment not in AUGMENTS:
        raise LoihiConvError(f"unknown augment {augment!r}", f"use one of: {', '.join(AUGMENTS)}")


def _freeze_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def finetune(model: nn.Module, dataset: str | tuple[Tensor, Tensor], timesteps: int, s_max: int = 1,
             epochs: int = 1, lr: float = 2e-4, batch_size: int = 128, seed: int = 0,
             weight_decay: float = 5e-4, augment: str = "flip", percentile: float = 99.0,
             calib_size: int = 1024, rounding: str = "floor", max_batches: int | None = None,
             freeze_bn: bool = True, progress: bool = True) -> nn.Module:
    """QReLU quantization-aware fine-tuning of a trained ReLU ``model`` (HPC §3.2): returns a
    QReLU copy (``qrelu_model``; lambda initialised from the ``percentile`` on ``calib_size``
    seeded random training images) trained for ``epochs`` (at most ``max_batches`` batches) on
    ``dataset`` -- a name (its train split) or ``(x, y)`` tensors, x (N, C, H, W) in [0, 1].

    AdamW at ``lr`` with a cosine decay, cross-entropy, ``augment`` from ``train.AUGMENTS``;
    seeded and deterministic (``train.deterministic``). ``freeze_bn`` keeps BatchNorm in eval
    mode (running statistics fixed), so the network trained is the one that will be folded and
    converted. A model that already has QReLUs (same T, S_max) is fine-tuned further as is.
    Returns the model in eval mode; ``model`` itself is unchanged.
    """
    from loihi_conv.app.train import AUGMENTS, OPTIMIZERS, SCHEDULES, TrainConfig, _show_progress, deterministic

    check_finetune_args(timesteps, s_max, rounding, epochs, lr, batch_size, max_batches, augment)
    x, y = _training_data(dataset)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=float(lr), optimizer="adam",
                         schedule="cosine", weight_decay=weight_decay, augment=augment, seed=seed)
    per_epoch = -(-len(x) // batch_size)
    total = epochs * per_epoch if max_batches is None else min(max_batches, epochs * per_epoch)
    with deterministic(seed):
        gen = torch.Generator().manual_seed(seed)
        net = _qrelu_copy(model, timesteps, s_max, rounding, x[torch.randperm(len(x), generator=gen)[:calib_size]],
                          percentile)
        opt = OPTIMIZERS[config.optimizer](net, config)
        sched = SCHEDULES[config.schedule](opt, config, total)
        net.train()
        if freeze_bn:
            _freeze_batchnorm(net)
        done = 0
        with tqdm(total=total, disable=not _show_progress(progress), desc=f"QReLU fine-tune T={timesteps}",
                  unit="batch") as bar:
            for epoch in range(epochs):
                order = torch.randperm(len(x), generator=gen)
                for start in range(0, len(x), batch_size):
                    if done == total:
                        break
                    idx = order[start:start + batch_size]
                    loss = F.cross_entropy(net(AUGMENTS[augment](x[idx], gen)), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    done += 1
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
    return net.eval()


def _qrelu_copy(model: nn.Module, timesteps: int, s_max: int, rounding: str, calib: Tensor,
                percentile: float) -> nn.Module:
    """``qrelu_model`` of a float model; a deep copy of a model that already has matching QReLUs."""
    have = qrelu_modules(model)
    if not have:
        return qrelu_model(model, timesteps, s_max, calib, percentile, rounding)
    wrong = [n for n, m in have if (m.timesteps, m.s_max, m.rounding) != (timesteps, s_max, rounding)]
    if wrong:
        m = dict(have)[wrong[0]]
        raise LoihiConvError(f"QReLU '{wrong[0]}' has T={m.timesteps}, S_max={m.s_max}, rounding={m.rounding!r}, "
                             f"not the requested T={timesteps}, S_max={s_max}, rounding={rounding!r}",
                             "fine-tune the float model instead, or request the model's own T and S_max")
    return copy.deepcopy(model)
