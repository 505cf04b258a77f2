"""QReLU quantization-aware training (HPC paper, §3.2 and §3.4, eqs. 9-11 and 16) and its
conversion with zero coding error.

QReLU (eq. 16, the multi-bit form of eq. 9) is the ANN activation an IF neuron computes. With a
layer's learnable clipping level lambda (``lambda^b = lambda * S_max`` in eq. 16; simply
"lambda" here) and representation power ``P = T * S_max``:

    QReLU(x) = lambda / P * clip(floor(P * x / lambda), 0, P)

i.e. 0 for x <= 0, lambda for x >= lambda, else the floor on a grid of lambda / P. The printed
eqs. 9 and 16 drop the factor lambda / P in front of the floor (typo: without it the middle case
would not meet the lambda of the clipped case at x = lambda).

Why floor (the paper's choice). An IF neuron with reset by subtraction, '>=' threshold and
v(0) = 0 driven by a constant current z for T steps fires exactly
``clip(floor(T z / theta), 0, T * S_max)`` threshold units (HPC eqs. 4, 7, 8). With
``theta = lambda / S_max`` (eq. 16) that is ``floor(P z / lambda)``: the QReLU level. So the
paper's floor is exact with v(0) = 0 (Recipe ``v_init = 0``, the default); the "round" variant
offered here, ``floor(P x / lambda + 1/2)``, is exact only with v(0) = theta / 2
(``v_init = 0.5``), and the "qrelu" normalizer refuses a recipe whose v_init does not match.
Exactness holds for the first neuron layer, whose input (the image) is constant; deeper layers
receive spike trains, where over/under-firing (the paper's "inference error", §3.1.2) remains.
Multi-bit: ``if-multibit`` spikes are powers of two (eq. 15), so the count is exactly the level
for S_max <= 2 only (a 3-unit step becomes a 2-unit spike plus carried charge for S_max = 4).

Gradients (eqs. 10, 11; PACT with a straight-through estimator for the floor):
``d/dx = 1 if 0 < x < lambda else 0``, ``d/dlambda = 1 if x >= lambda else 0``.
lambda is one scalar per layer, as in the paper (the weight mapping ``lambda_i / lambda_j`` of
§3.1 is per layer).

Conversion. ``QReLU`` traces (``trace.MODULES``) to ``QReLUNode``, an ``ir.ReLU`` that keeps
lambda, T, S_max and the rounding; its ANN op (``ops.apply``) is the quantized activation, so the
float IR computes exactly the QReLU network. The "qrelu" normalizer sets each neuron's threshold
from lambda instead of from activation statistics: ``normalize.to_snn`` then applies the
``1/S_max`` of multi-bit models, giving ``theta = lambda / S_max`` (eq. 16).

Layouts: activations (N, C, H, W) or (N, F), images float32 (N, C, H, W) in [0, 1], labels
int64 (N,); lambda is a 0-dim tensor.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from loihi_conv import ir, ops
from loihi_conv.errors import LoihiConvError
from loihi_conv.neurons import max_units, threshold_scale
from loihi_conv.normalize import Normalizer, register_normalizer
from loihi_conv.observe import make_observer
from loihi_conv.trace import MODULES

Tensor = torch.Tensor

__all__ = ["QReLU", "QReLUNode", "QReLUNormalizer", "ROUNDINGS", "V_INIT", "check_finetune_args", "finetune",
           "qat_recipe", "qrelu", "qrelu_levels", "qrelu_model", "qrelu_modules", "save_finetuned"]

# The rounding of P*x/lambda, and the initial potential (fraction of theta) under which an IF
# neuron with reset by subtraction reproduces it exactly for a constant input.
ROUNDINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "floor": torch.floor,                        # HPC eqs. 9, 16
    "round": lambda t: torch.floor(t + 0.5),     # nearest, ties up (calibration paper eq. 17)
}
V_INIT: dict[str, float] = {"floor": 0.0, "round": 0.5}
_MIN_CLIP = 1e-6  # lambda is kept above this in the forward pass (a step size of 0 is undefined)


def _check_args(timesteps: Any, s_max: Any, rounding: Any) -> None:
    for name, value in (("timesteps", timesteps), ("s_max", s_max)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LoihiConvError(f"QReLU {name}={value!r} must be a positive integer", f"pass e.g. {name}=8"
                                 if name == "timesteps" else "pass s_max=1 (binary spikes) or 2")
    if s_max & (s_max - 1):
        raise LoihiConvError(f"QReLU s_max={s_max} is not a power of two (HPC eq. 15: spikes are 2^n)",
                             "pass s_max=1, 2 or 4")
    if rounding not in ROUNDINGS:
        raise LoihiConvError(f"unknown QReLU rounding {rounding!r}", f"use one of: {', '.join(ROUNDINGS)}")


def qrelu_levels(x: Tensor, clip: Tensor, levels: int, rounding: str = "floor") -> Tensor:
    """The integer level ``clip(round(levels * x / clip), 0, levels)`` of eq. 16 (float dtype).
    ``clip`` is 0-dim (or broadcasts against x)."""
    return ROUNDINGS[rounding](x * levels / clip).clamp_(0, levels)


def qrelu(x: Tensor, clip: Tensor, levels: int, rounding: str = "floor") -> Tensor:
    """QReLU forward (HPC eq. 16): ``clip / levels * level``, no gradient (see ``QReLU``)."""
    return qrelu_levels(x, clip, levels, rounding) * (clip / levels)


class _QReLUFunction(torch.autograd.Function):
    """Quantized forward, PACT/STE backward (HPC eqs. 10, 11)."""

    @staticmethod
    def forward(ctx, x: Tensor, clip: Tensor, levels: int, rounding: str) -> Tensor:
        ctx.save_for_backward(x, clip)
        return qrelu(x, clip.clamp_min(_MIN_CLIP), levels, rounding)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, clip = ctx.saved_tensors
        grad_x = grad * ((x > 0) & (x < clip))                    # eq. 11
        grad_clip = (grad * (x >= clip)).sum().reshape(clip.shape)  # eq. 10
        return grad_x, grad_clip, None, None


class QReLU(nn.Module):
    """Quantized ReLU (HPC eq. 16) with a learnable per-layer clipping level ``clip`` (lambda).

    Output ``clip / P * clip(floor(P x / clip), 0, P)`` with ``P = timesteps * s_max`` levels;
    gradients by eqs. 10-11 (PACT, straight-through floor). ``rounding="round"`` rounds to the
    nearest level instead (then convert with v_init=0.5). ``passthrough=True`` makes it a plain
    ReLU (used while calibrating the initial clip).
    """

    def __init__(self, timesteps: int, s_max: int = 1, clip: float = 1.0, rounding: str = "floor"):
        super().__init__()
        _check_args(timesteps, s_max, rounding)
        if not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
            raise LoihiConvError(f"QReLU clip={clip!r} must be a positive number", "pass e.g. clip=1.0")
        self.timesteps, self.s_max, self.rounding = int(timesteps), int(s_max), rounding
        self.clip = nn.Parameter(torch.tensor(float(clip)))
        self.passthrough = False

    @property
    def levels(self) -> int:
        """Representation power P = T * S_max (HPC eq. 16)."""
        return self.timesteps * self.s_max

    def quantize(self, x: Tensor) -> Tensor:
        """The integer levels (int64, x's shape) the output is ``clip / P`` times."""
        with torch.no_grad():
            return qrelu_levels(x, self.clip.clamp_min(_MIN_CLIP), self.levels, self.rounding).long()

    def forward(self, x: Tensor) -> Tensor:
        if self.passthrough:
            return F.relu(x)
        return _QReLUFunction.apply(x, self.clip, self.levels, self.rounding)

    def extra_repr(self) -> str:
        return (f"timesteps={self.timesteps}, s_max={self.s_max}, levels={self.levels}, "
                f"clip={float(self.clip):.4g}, rounding={self.rounding!r}")


def qrelu_modules(model: nn.Module) -> list[tuple[str, QReLU]]:
    """``(qualified name, module)`` of every QReLU in ``model``, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QReLU)]


# ---- conversion: trace handler, ANN op, normalizer ----------------------------------------------
@dataclass(eq=False)
class QReLUNode(ir.ReLU):
    """A traced ``QReLU``: an ``ir.ReLU`` (so every stage converts it like one) that keeps the
    trained ``clip`` (0-dim lambda), ``timesteps``, ``s_max`` and ``rounding``."""

    clip: Tensor = None
    timesteps: int = 1
    s_max: int = 1
    rounding: str = "floor"

    @property
    def levels(self) -> int:
        return self.timesteps * self.s_max


def _trace_qrelu(cx, node: fx.Node) -> QReLUNode:
    """``trace.MODULES`` handler: a QReLU module call -> ``QReLUNode``."""
    m = cx.module(node)
    clip = m.clip.detach().clone().float().cpu().clamp_min(_MIN_CLIP)
    (x,) = (*node.args, *node.kwargs.values())  # forward(x) has one argument, however it is passed
    return QReLUNode(cx.name(node), (cx.tensor(x),), clip=clip, timesteps=m.timesteps,
                     s_max=m.s_max, rounding=m.rounding)


MODULES[QReLU] = _trace_qrelu

@ops.apply.register
def _(node: QReLUNode, x: Tensor) -> Tensor:
    return qrelu(x, node.clip, node.levels, node.rounding)


@register_normalizer("qrelu")
class QReLUNormalizer(Normalizer):
    """Thresholds from the trained QReLU clipping levels (HPC eq. 16): every QReLU's lambda,
    for every channel (lambda is per layer, so ``granularity`` changes nothing). ``to_snn``
    divides by S_max for multi-bit neurons: ``theta = lambda / S_max``. Checks that the recipe's
    neuron sends the S_max units per step the QReLU was trained for, and that v_init matches its
    rounding (module doc), since otherwise the coding error is back.
    """

    options = ("granularity", "neuron_model", "neuron_params", "v_init", "clip_round")
    key = "qrelu"

    def __init__(self, granularity: str = "channel", neuron_model: str = "if-soft",
                 neuron_params: dict | None = None, v_init: float = 0.0, clip_round: bool = False):
        super().__init__(granularity)
        self.neuron_model, self.neuron_params = neuron_model, dict(neuron_params or {})
        self.v_init, self.clip_round = float(v_init), bool(clip_round)

    def observers(self):
        return {"max": ("max", {})}  # only for the output probe, which has no lambda

    def thresholds(self, stats) -> dict[str, Tensor]:
        from loihi_conv.outputs import THRESHOLD_PROBE

        relus = list(stats.observers["post"])
        probes = [relu for relu in relus if relu.endswith(THRESHOLD_PROBE)]
        found = {relu: stats.graph[relu] for relu in relus if relu not in probes}
        plain = [relu for relu, node in found.items() if not isinstance(node, QReLUNode)]
        if plain:
            raise LoihiConvError(
                f"normalizer 'qrelu' needs QReLU activations, but {', '.join(plain)} "
                f"{'is a plain ReLU' if len(plain) == 1 else 'are plain ReLUs'}",
                "fine-tune the model with QReLU first (loihi-conv finetune-qrelu, or "
                "loihi_conv.qat.finetune), or use normalizer 'percentile'")
        out = {}
        for relu, node in found.items():
            self._check(relu, node)
            out[relu] = node.clip.reshape(1).expand(node.shape[0]).clone()  # lambda per layer
        for relu in probes:  # the output has no QReLU: max-norm (Diehl et al. 2015)
            top = stats.layer(relu, "max").clamp_min(_MIN_CLIP)
            out[relu] = top.reshape(1).expand(stats.graph[relu].shape[0]).clone()
        return out

    def _check(self, relu: str, node: QReLUNode) -> None:
        probe = ir.Neuron("probe", (), model=self.neuron_model, params=self.neuron_params)
        units, scale = max_units(probe), threshold_scale(self.neuron_model, self.neuron_params)
        if units != node.s_max or not math.isclose(scale * node.s_max, 1.0):
            fix = ("use neuron_model 'if-soft' (--neuron if-soft)" if node.s_max == 1 else
                   f"use neuron_model 'if-multibit' with neuron_params {{s_max = {node.s_max}}} (a recipe "
                   f"TOML: neuron_model = \"if-multibit\" and [neuron_params] s_max = {node.s_max})")
            raise LoihiConvError(f"QReLU '{relu}' was trained for spikes of up to S_max={node.s_max} units, but "
                                 f"neuron model {self.neuron_model!r} {self.neuron_params or ''} sends up to "
                                 f"{units} per step at threshold lambda*{scale:g}", fix)
        want = V_INIT[node.rounding]
        if self.v_init != want or self.clip_round:
            got = f"v_init={self.v_init:g}" + (" with clip_round" if self.clip_round else "")
            raise LoihiConvError(f"QReLU '{relu}' rounds by {node.rounding}, which IF neurons reproduce only from "
                                 f"v(0) = {want:g} * threshold; the recipe has {got}",
                                 f"set v_init={want:g} (--v-init {want:g}) and clip_round=false")


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
    _check_args(timesteps, s_max, rounding)
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
    from loihi_conv.data import load_dataset

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
    _check_args(timesteps, s_max, rounding)
    _check_training(epochs, lr, batch_size, max_batches, augment)


def _check_training(epochs: Any, lr: Any, batch_size: Any, max_batches: Any, augment: Any) -> None:
    from loihi_conv.train import AUGMENTS

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
    from loihi_conv.train import AUGMENTS, OPTIMIZERS, SCHEDULES, TrainConfig, _show_progress, deterministic

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


# ---- saving for the CLI -------------------------------------------------------------------------
_MODEL_FILE = '''\
"""{title}

Written by `loihi-conv finetune-qrelu`. The weights are {weights}, the matching conversion recipe
{recipe}. Evaluate (float SNN) or convert (NetX) with:

    loihi-conv evaluate --model {py}:QReLUModel --weights {weights} --dataset {dataset} --recipe {recipe} -T {T}
    loihi-conv convert --model {py}:QReLUModel --weights {weights} --dataset {dataset} --recipe {recipe} \\
        --target if-soft -T {T} --out model.net
"""
import torch

from loihi_conv.qat import qrelu_model
from loihi_conv.zoo import {loader}


class QReLUModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = qrelu_model({loader}({source!r}), timesteps={T}, s_max={S}, rounding={rounding!r})

    def forward(self, x):
        return self.net(x)
'''


def qat_recipe(timesteps: int, s_max: int = 1, rounding: str = "floor"):
    """The conversion Recipe matching a QReLU network: normalizer "qrelu", if-soft (S_max=1) or
    if-multibit (S_max>1) neurons with v_init for the rounding, readout window T."""
    from loihi_conv.recipe import Recipe

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
    from loihi_conv.data import atomic_write  # atomic, with the usual file mode

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
