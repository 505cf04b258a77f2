"""Efficiency numbers of a float SNN run: firing rates, synaptic operations, energy ratio.

HPC paper §4.2, eq. (17): ``operation ratio = #(additions in SNN) / #(FLOPs in ANN)``, with a
multiply costing 4 additions (Horowitz). Counting:
* ANN: every synapse (Conv2d/Linear) MAC = 1 multiply + 1 add = 5 add-units.
* SNN: every spike triggers one accumulate (1 add-unit) per synaptic target, counted exactly by
  pushing the recorded spike counts through the graph with all weights set to 1 (a summing
  average pool: each source position reaches the targets its merged pool+conv synapse reaches).
  Synapses reading the analog input (direct input) do their full MACs on every step run.
Layouts: counts (N, C, H, W) per neuron, as recorded by ``simulate(..., record="neuron")``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatch

import torch
import torch.nn.functional as F

from loihi_conv.frontend import ir, ops
from loihi_conv.snn.simulate import SimResult

Tensor = torch.Tensor
MUL_COST = 4.0  # energy of a multiply in additions (HPC paper §4.2, Horowitz 2014)


@singledispatch
def _ones_op(node: ir.Node, *xs: Tensor) -> Tensor:
    """The node's op with every weight 1 and no bias: outputs count connections."""
    return ops.apply(node, *xs)


@_ones_op.register
def _(node: ir.Conv2d, x: Tensor) -> Tensor:
    return F.conv2d(x, torch.ones_like(node.weight), None, node.stride, node.padding, node.dilation, node.groups)


@_ones_op.register
def _(node: ir.Linear, x: Tensor) -> Tensor:
    return F.linear(x, torch.ones_like(node.weight))


@_ones_op.register
def _(node: ir.AvgPool2d, x: Tensor) -> Tensor:
    k = node.kernel_size[0] * node.kernel_size[1]
    return ops.apply(node, x) * k


@_ones_op.register
def _(node: ir.Neuron, x: Tensor) -> Tensor:
    return x


def _synapse_ops(graph: ir.Graph, values: dict[str, Tensor], x: Tensor) -> dict[str, float]:
    """Sum over each synapse's output of the all-ones network fed with ``values`` at the sources
    (Neuron names -> counts, the Input -> x). Per synapse name, summed over the batch."""
    acts: dict[str, Tensor] = {}
    out = {}
    for node in graph:
        if isinstance(node, ir.Input):
            acts[node.name] = x
        elif node.name in values:
            acts[node.name] = values[node.name]
        else:
            acts[node.name] = _ones_op(node, *[acts[i] for i in node.inputs])
        if isinstance(node, ir.SYNAPSES):
            out[node.name] = float(acts[node.name].sum())
    return out


@dataclass
class Efficiency:
    """Per-sample numbers for readout window T (steps run = T, or T + depth with delay)."""
    T: int
    steps: int
    firing_rates: dict[str, float] = field(default_factory=dict)  # spikes / neuron / step
    ann_macs: float = 0.0
    snn_synops: float = 0.0       # spike-triggered accumulates
    snn_input_macs: float = 0.0   # direct-input MACs over all steps
    op_ratio: float = 0.0         # (synops + input MACs) / ANN MACs
    energy_ratio: float = 0.0     # SNN / ANN energy, multiply = 4 additions


@torch.no_grad()
def efficiency(graph: ir.Graph, result: SimResult, T: int) -> Efficiency:
    """Efficiency of the SNN ``graph`` from a ``simulate(..., record="neuron")`` ``result``."""
    if result.record != "neuron":
        raise ValueError("efficiency needs per-neuron counts: simulate(..., record='neuron')")
    counts = result.counts[T]
    n = next(iter(counts.values())).shape[0]
    shape = (1,) + tuple(graph.input.shape)
    zeros = {k: torch.zeros((1,) + tuple(graph[k].shape)) for k in counts}
    ones_in = torch.ones(shape)
    # ANN MACs: ones everywhere (input and every activation).
    ann = _synapse_ops(graph, {k: torch.ones_like(v) for k, v in zeros.items()}, ones_in)
    input_only = _synapse_ops(graph, zeros, ones_in)                   # synapses reading x
    spikes = _synapse_ops(graph, counts, torch.zeros((n,) + shape[1:]))  # spike-driven
    steps = result.steps(T)
    eff = Efficiency(T, steps)
    eff.ann_macs = sum(ann.values())
    eff.snn_input_macs = sum(input_only.values()) * steps
    eff.snn_synops = sum(spikes.values()) / n
    eff.firing_rates = {k: float(r.mean()) for k, r in result.rates(T).items()}
    eff.op_ratio = (eff.snn_synops + eff.snn_input_macs) / eff.ann_macs
    e_ann = eff.ann_macs * (MUL_COST + 1)
    e_snn = eff.snn_synops + eff.snn_input_macs * (MUL_COST + 1)
    eff.energy_ratio = e_snn / e_ann
    return eff
