"""The QReLU activation (HPC paper, §3.2 and §3.4, eqs. 9-11 and 16): the ANN activation an
IF neuron computes, its trace handler and its float-IR op. Its normalizer is
``convert.methods.qrelu_normalizer``; fine-tuning a model with it is ``app.qat``.

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

Conversion. ``QReLU`` traces (``tracing.MODULES``) to ``QReLUNode``, an ``ir.ReLU`` that keeps
lambda, T, S_max and the rounding; its ANN op (``ops.apply``) is the quantized activation, so the
float IR computes exactly the QReLU network. The "qrelu" normalizer sets each neuron's threshold
from lambda instead of from activation statistics: ``normalize.to_snn`` then applies the
``1/S_max`` of multi-bit models, giving ``theta = lambda / S_max`` (eq. 16).

Layouts: activations (N, C, H, W) or (N, F), images float32 (N, C, H, W) in [0, 1], labels
int64 (N,); lambda is a 0-dim tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops
from loihi_conv.frontend.tracing import MODULES

Tensor = torch.Tensor

__all__ = ["MIN_CLIP", "QReLU", "QReLUNode", "ROUNDINGS", "V_INIT", "check_args", "qrelu", "qrelu_levels",
           "qrelu_modules"]

# The rounding of P*x/lambda, and the initial potential (fraction of theta) under which an IF
# neuron with reset by subtraction reproduces it exactly for a constant input.
ROUNDINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "floor": torch.floor,                        # HPC eqs. 9, 16
    "round": lambda t: torch.floor(t + 0.5),     # nearest, ties up (calibration paper eq. 17)
}
V_INIT: dict[str, float] = {"floor": 0.0, "round": 0.5}
MIN_CLIP = 1e-6  # lambda is kept above this in the forward pass (a step size of 0 is undefined)


def check_args(timesteps: Any, s_max: Any, rounding: Any) -> None:
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
        return qrelu(x, clip.clamp_min(MIN_CLIP), levels, rounding)

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
        check_args(timesteps, s_max, rounding)
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
            return qrelu_levels(x, self.clip.clamp_min(MIN_CLIP), self.levels, self.rounding).long()

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
    """``tracing.MODULES`` handler: a QReLU module call -> ``QReLUNode``."""
    m = cx.module(node)
    clip = m.clip.detach().clone().float().cpu().clamp_min(MIN_CLIP)
    (x,) = (*node.args, *node.kwargs.values())  # forward(x) has one argument, however it is passed
    return QReLUNode(cx.name(node), (cx.tensor(x),), clip=clip, timesteps=m.timesteps,
                     s_max=m.s_max, rounding=m.rounding)


MODULES[QReLU] = _trace_qrelu

@ops.apply.register
def _(node: QReLUNode, x: Tensor) -> Tensor:
    return qrelu(x, node.clip, node.levels, node.rounding)
