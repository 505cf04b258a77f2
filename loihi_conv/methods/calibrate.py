"""Post-conversion SNN edits: ClipRound bias, voltage clamping, and the calibration paper's
layer-wise parameter calibration (LCP: bias; ACP: initial potential).

All functions take an SNN IR graph (``ir.Neuron`` nodes) and return a modified copy. Layouts:
calibration inputs x are (N, *input shape); per-channel vectors (C,); per-neuron potentials
(C, H, W) or (F,) -- a Neuron's ``shape``.

Export: bias and per-channel ``v_init`` changes are representable by the ``if-soft`` target
(SoftIF has per-channel vth, v_init and bias); per-neuron ``params["v0"]`` (ACP with
granularity "neuron") and ``params["clamp_steps"]`` are float-SNN only; ``cuba`` starts at v=0
and so drops every v(0) change (biases still export).
"""
from __future__ import annotations

from typing import Callable

import torch

from loihi_conv import ir, ops
from loihi_conv.errors import LoihiConvError
from loihi_conv.simulate import levels, simulate

Tensor = torch.Tensor


def feeding_synapse(graph: ir.Graph, neuron: ir.Neuron) -> ir.Conv2d | ir.Linear:
    """The synapse whose bias is the neuron's constant input current: its direct input, or the
    first synapse into an ``Add`` that feeds it (a bias on one branch shifts the sum)."""
    src = graph[neuron.inputs[0]]
    if isinstance(src, ir.SYNAPSES):
        return src
    for name in getattr(src, "inputs", ()) if isinstance(src, ir.Add) else ():
        if isinstance(graph[name], ir.SYNAPSES):
            return graph[name]
    raise LoihiConvError(f"neuron {neuron.name} is fed by {type(src).__name__} {src.name}, not by a synapse, "
                         "so its bias cannot be adjusted",
                         "put the ReLU right after a Conv2d/Linear (or an Add of one) in the model")


def add_bias(graph: ir.Graph, neuron: ir.Neuron, delta: Tensor) -> None:
    """In place: add the (C,) current ``delta`` (ANN units) to the neuron's feeding synapse bias."""
    syn = feeding_synapse(graph, neuron)
    bias = syn.bias if syn.bias is not None else torch.zeros(syn.weight.shape[0])
    graph.replace(syn.name, ir.clone_node(syn, bias=bias + delta.to(bias.dtype)))


def clip_round_bias(snn: ir.Graph, T: int) -> ir.Graph:
    """Calibration paper §4.3, after eq. (17): adding ``Vth/(2T)`` to the bias turns the IF
    neuron's ClipFloor (eq. 10) into ClipRound (eq. 17) for a readout window T -- the
    "unbiased quantization" of the RetinaNet paper done through the bias instead of v(0)=Vth/2."""
    snn = snn.copy()
    for n in snn.of_type(ir.Neuron):
        add_bias(snn, n, n.threshold / (2 * T))
    return snn


def clamp(snn: ir.Graph, d: int) -> ir.Graph:
    """Voltage clamping (Rueckauer et al. 2016, as used by the RetinaNet paper §II): layer l is
    held at its initial potential -- no integration, no spikes -- for its first ``N(l) = d * l``
    steps, l = synapse hops from the input (first hidden layer l = 1). Stored as
    ``params["clamp_steps"]``, honoured by the float simulator for every neuron model."""
    snn = snn.copy()
    lv = levels(snn)
    for n in snn.of_type(ir.Neuron):
        snn.replace(n.name, ir.clone_node(n, params={**n.params, "clamp_steps": int(d) * lv[n.name]}))
    return snn


# ---- layer-wise calibration ------------------------------------------------------------------
def layer_errors(snn: ir.Graph, ann: ir.Graph, x: Tensor, T: int, delay: int, name: str) -> tuple[Tensor, int]:
    """Conversion error ``e = x_ANN - s_SNN`` of Neuron ``name`` on inputs x, (N, *neuron shape),
    with ``s_SNN`` = spike count * threshold / window (the window: the steps on which the
    population received input, T without delay); also returns that window."""
    _, acts = ops.forward(ann, x, record=True)
    res = simulate(snn, x, [T], delay=delay, record="neuron")
    return acts[name] - res.activations(T)[name], res.window(T, name)


def _reduce_channel(e: Tensor) -> Tensor:
    """Calibration paper eq. (19): per-channel mean over the batch and spatial positions, (C,)."""
    return e.transpose(0, 1).reshape(e.shape[1], -1).mean(dim=1)


def _lcp(snn: ir.Graph, node: ir.Neuron, e: Tensor, window: int, granularity: str) -> None:
    """Calibration paper eq. (20), LCP: ``b_c := b_c + mu_c(e)``."""
    add_bias(snn, node, _reduce_channel(e))


def _potential(snn: ir.Graph, node: ir.Neuron, e: Tensor, window: int, granularity: str) -> None:
    """Calibration paper eq. (22), ACP potential calibration: ``v(0) := T * e`` (T = the
    population's input window). granularity "neuron": per neuron, batch-mean e (the paper:
    "does not need the spatial mean"), in ``params["v0"]``; "channel": per-channel mean folded
    into ``v_init`` (a fraction of the threshold), exportable to if-soft."""
    if granularity == "neuron":
        v0 = window * e.mean(dim=0)
        old = node.params.get("v0")
        new = ir.clone_node(node, params={**node.params, "v0": v0 if old is None else old + v0})
    else:
        v_init = node.v_init if node.v_init is not None else torch.zeros_like(node.threshold)
        new = ir.clone_node(node, v_init=v_init + window * _reduce_channel(e) / node.threshold)
    snn.replace(node.name, new)


CALIBRATIONS: dict[str, Callable[..., None]] = {"lcp": _lcp, "acp": _potential}


def calibrate(snn: ir.Graph, ann: ir.Graph, x: Tensor, T: int, methods: tuple[str, ...] = ("lcp",),
              delay: int = 1, granularity: str = "neuron") -> ir.Graph:
    """Calibration paper Algorithm 2, layer by layer from the input: for every Neuron, simulate
    the (already partly calibrated) SNN on the batch x (N, *input shape) for T, compute
    ``e = x_ANN - s_SNN`` and apply each of ``methods`` ("lcp": bias, eq. 20; "acp": potential,
    eq. 22), re-measuring e before each. ``ann`` is the float ANN graph (ReLUs) the SNN came from."""
    unknown = [m for m in methods if m not in CALIBRATIONS]
    if unknown:
        raise LoihiConvError(f"unknown calibration(s) {unknown}", f"use: {', '.join(CALIBRATIONS)}")
    snn = snn.copy()
    for name in [n.name for n in snn.of_type(ir.Neuron)]:
        for m in methods:
            e, window = layer_errors(snn, ann, x, T, delay, name)
            CALIBRATIONS[m](snn, snn[name], e, window, granularity)
    return snn
