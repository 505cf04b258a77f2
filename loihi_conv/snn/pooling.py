"""Spiking max-pooling schemes for the float SNN simulator, registered by name.

In an SNN a ``MaxPool2d`` node sees spike values (``spikes * theta``, ANN units) one step at a
time. Taking the max of each step's spikes (what a stateless max-pool does) passes a spike
whenever *any* neuron of the window spikes, so the output rate is the rate of the union of
spike trains -- an over-estimate of the max rate (Rueckauer et al. 2016 §3.6; SpiCalib §3.2).
A scheme keeps per-batch state and turns the window's spike stream into an output stream whose
rate is the max input rate.

Layouts: every tensor is (N, C, H, W) in PyTorch order -- the scheme's input is the MaxPool2d
node's input at one step, its output the node's output at that step, (N, C, H', W') exactly as
``F.max_pool2d`` (kernel, stride, padding, ceil mode) shapes it.

Which scheme a graph uses: ``graph.meta["recipe"]["max_pool"]`` (``Recipe.max_pool``), default
``DEFAULT_SCHEME``.

Fixed point (``loihi_conv.fixed.quantize.blocks``): ``avg`` is linear and folds into the next conv/dense
synapse (``as_linear``), so it exports to NetX/Lava; mli, rate-gate and spike-max run as a
``qir.SpikePool`` stage (``stage``) on the next synapse's input, in the bit-exact emulator only
(NetX has no spiking max-pool; the writer refuses them). The integer mli and spike-max compute
exactly what the float ones do in threshold units; the integer rate gate has the same decay
(1 - 2^-3) with floor rounding, so near-ties may gate differently (qir module doc).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from loihi_conv.base.limits import RATE_DECAY_SHIFT
from loihi_conv.base.registry import lookup, registrar
from loihi_conv.frontend import ir
from loihi_conv.frontend.pools import max_pools_as_relu_trees

Tensor = torch.Tensor
State = dict[str, Tensor]

POOLING_SCHEMES: dict[str, type["PoolScheme"]] = {}
DEFAULT_SCHEME = "mli"


register_pooling = registrar(POOLING_SCHEMES, "spiking max-pool scheme (``Recipe.max_pool``)")


def get_pooling(name: str) -> "PoolScheme":
    """The registered scheme called ``name``; a LoihiConvError lists the known names otherwise."""
    return lookup(POOLING_SCHEMES, name, "max-pool scheme")()


def scheme_name(graph: ir.Graph) -> str:
    """The max-pool scheme a graph asks for: its recipe's ``max_pool`` or ``DEFAULT_SCHEME``."""
    return (graph.meta.get("recipe") or {}).get("max_pool", DEFAULT_SCHEME)


def _pool(node: ir.MaxPool2d, x: Tensor, **kw) -> Tensor:
    return F.max_pool2d(x, node.kernel_size, node.stride, node.padding, ceil_mode=node.ceil_mode, **kw)


class PoolScheme:
    """``init_state`` once per batch from the first input, then ``step`` every step.

    Fixed-point half: ``stage`` names the ``qir.SpikePool`` scheme that runs it on a synapse's
    input, ``as_linear`` gives a linear node equal to it (folded like any synapse) or None.
    """

    name: ClassVar[str] = ""
    stage: ClassVar[str | None] = None

    def as_linear(self, node: ir.MaxPool2d) -> ir.Node | None:
        return None

    def rewrite(self, graph: ir.Graph) -> ir.Graph:
        """The float IR conversion starts from (a scheme may replace the MaxPool2d nodes)."""
        return graph

    def init_state(self, node: ir.MaxPool2d, x: Tensor) -> State:
        return {}

    def step(self, node: ir.MaxPool2d, state: State, x: Tensor) -> Tensor:
        raise NotImplementedError


@register_pooling("spike-max")
class SpikeMax(PoolScheme):
    """Stateless max of each step's spike values: the ANN op applied to spikes. Biased high (its
    rate is that of the union of the window's spike trains); kept as a baseline only."""

    stage = "spike-max"

    def step(self, node: ir.MaxPool2d, state: State, x: Tensor) -> Tensor:
        return _pool(node, x)


@register_pooling("avg")
class AvgReplacement(PoolScheme):
    """The usual baseline of early conversions (Cao et al. 2015; Diehl et al. 2015): max-pooling
    replaced by average pooling of the spikes. Exact for the window's mean rate, so it loses
    whatever the max and the mean differ by -- the comparison point for the spiking max-pools.
    Padding counts as zero input (``count_include_pad``), as a padded spiking window would.
    Linear: the quantizer folds it as ``as_linear``'s AvgPool2d (the same op, ``ops.apply``)."""

    def as_linear(self, node: ir.MaxPool2d) -> ir.AvgPool2d:
        return ir.AvgPool2d(node.name, node.inputs, node.shape, kernel_size=node.kernel_size,
                            stride=node.stride, padding=node.padding, ceil_mode=node.ceil_mode,
                            count_include_pad=True)

    def step(self, node: ir.MaxPool2d, state: State, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, node.kernel_size, node.stride, node.padding, ceil_mode=node.ceil_mode,
                            count_include_pad=True)


@register_pooling("relu-tree")
class ReLUTree(PoolScheme):
    """Max-pooling as ReLU layers (``frontend.pools.max_pools_as_relu_trees``): max(a, b) =
    relu(a - b) + relu(b) for b >= 0, paired over the window (2 levels for 2x2). The ANN is
    unchanged and no MaxPool2d is left, so a target whose neurons are ReLUs (sdnn) pools exactly,
    with standard NetX grouped convolutions; spiking targets run the tree on rates (approximate)."""

    def rewrite(self, graph: ir.Graph) -> ir.Graph:
        return max_pools_as_relu_trees(graph)

    def step(self, node: ir.MaxPool2d, state: State, x: Tensor) -> Tensor:
        raise AssertionError("relu-tree leaves no MaxPool2d to simulate")


@register_pooling("rate-gate")
class RateGate(PoolScheme):
    """Gated max-pool (Rueckauer et al. 2016 §3.6): each output unit passes only the spikes of the
    window's neuron with the highest estimated firing rate, the estimate an exponentially
    weighted average ``r(t) = decay * r(t-1) + (1 - decay) * x(t)`` of the input (ANN units).
    The paper gives no decay; 7/8 = 1 - 2^-3 (an ~8-step memory) is a choice, not tuned: the
    fixed-point stage's shift (``base.limits.RATE_DECAY_SHIFT``), so float and integer gates have the same
    time constant (they differ only by the integer floor, i.e. on near-ties). On mnist_cnn_maxpool
    (1000 test images, T = 8..128) 0.9 and 0.875 give the same accuracy within 0.2 points.
    Overlapping windows and ceil mode come for free from ``F.max_pool2d``'s argmax indices
    (first index on ties). Output values are the passed neuron's spikes, so rates stay in units
    of one neuron; a switch of the gate can still pass or drop a spike (the scheme is approximate).
    """

    stage = "rate-gate"
    decay: ClassVar[float] = 1.0 - 2.0 ** -RATE_DECAY_SHIFT

    def init_state(self, node: ir.MaxPool2d, x: Tensor) -> State:
        return {"rate": torch.zeros_like(x)}

    def step(self, node: ir.MaxPool2d, state: State, x: Tensor) -> Tensor:
        rate = state["rate"]
        rate.mul_(self.decay).add_(x, alpha=1.0 - self.decay)
        _, idx = _pool(node, rate, return_indices=True)  # idx into each (n, c) plane's H*W
        out = x.flatten(2).gather(2, idx.flatten(2))
        return out.view(idx.shape)


@register_pooling("mli")
class MLIPooling(PoolScheme):
    """MLIPooling (SpiCalib §3.4; LIPooling of Li & Zeng 2022): every pooling block gets its own
    copy of its neurons (so overlapping windows, kernel != stride, do not interfere) and
    lateral inhibition within the block:

    ``u_bj(t) = u_bj(t-1) + x_j(t)``, ``o_b(t) = max_j u_bj(t)``, ``u_bj(t) -= o_b(t)``.

    With ``C_j(t)`` the cumulative input, ``u_bj = C_j - O_b(t-1)``, so the cumulative output is
    ``O_b(t) = max_j C_j(t)``: the block sends exactly the max of its neurons' cumulative input,
    i.e. ``max(rate) * t`` -- lossless at any T. That identity is what is computed here (one
    ``max_pool2d`` of ``C`` per step instead of per-block copies). Ceil mode: the paper pads
    right/bottom with zeros; ``F.max_pool2d`` ignores the missing positions, the same thing
    whenever ``C >= 0`` (spiking inputs; a buffered IF's net count never goes negative).
    Outputs are whole threshold units and never exceed the largest input of the step
    (``max_j C_j(t) - max_j C_j(t-1) <= max_j x_j(t)``): 0/1 spikes stay 0/1, graded inputs of up
    to U units give at most U.
    """

    stage = "mli"

    def init_state(self, node: ir.MaxPool2d, x: Tensor) -> State:
        return {"cum": torch.zeros_like(x), "sent": torch.zeros_like(_pool(node, x))}

    def step(self, node: ir.MaxPool2d, state: State, x: Tensor) -> Tensor:
        state["cum"].add_(x)
        total = _pool(node, state["cum"])
        out = total - state["sent"]
        state["sent"] = total
        return out
