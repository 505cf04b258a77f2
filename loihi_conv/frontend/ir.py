"""The float IR: a small typed graph that every stage of loihi-conv reads and writes.

Layout conventions (the IR's contract):
* activations are PyTorch NCHW (or NC for vectors); node ``shape`` excludes the batch dim;
* weights are PyTorch layouts: Conv2d (Co, Ci/groups, kH, kW), Linear (Nout, Nin);
* per-channel vectors (bias, threshold) have length C of the node's output.

The graph is plain data (NIR-style): one dataclass per primitive, nodes stored in topological
order, edges as input names. Behaviour lives elsewhere and dispatches on the node type
(``loihi_conv.frontend.ops`` for the ANN forward, ``loihi_conv.snn.simulate`` for the float SNN).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

import torch

Tensor = torch.Tensor
Pair = tuple[int, int]


@dataclass(eq=False)
class Node:
    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...] = ()  # output shape without batch, filled by shape inference


@dataclass(eq=False)
class Input(Node):
    """Graph input. The first synapse receives the analog (direct) input every step."""


@dataclass(eq=False)
class Conv2d(Node):
    weight: Tensor = None
    bias: Tensor | None = None
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1


@dataclass(eq=False)
class Linear(Node):
    weight: Tensor = None
    bias: Tensor | None = None


@dataclass(eq=False)
class BatchNorm(Node):
    """Eval-mode batch norm; only exists between tracing and BN folding."""
    weight: Tensor = None
    bias: Tensor = None
    running_mean: Tensor = None
    running_var: Tensor = None
    eps: float = 1e-5


@dataclass(eq=False)
class AvgPool2d(Node):
    kernel_size: Pair = (2, 2)
    stride: Pair = (2, 2)
    padding: Pair = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True


@dataclass(eq=False)
class MaxPool2d(Node):
    kernel_size: Pair = (2, 2)
    stride: Pair = (2, 2)
    padding: Pair = (0, 0)
    ceil_mode: bool = False


@dataclass(eq=False)
class Flatten(Node):
    """Flatten (C,H,W) -> (C*H*W,) in PyTorch C order."""


@dataclass(eq=False)
class Add(Node):
    """Elementwise sum of its inputs (residual join)."""


@dataclass(eq=False)
class ReLU(Node):
    """ANN activation. Conversion replaces each ReLU by a spiking ``Neuron``."""


@dataclass(eq=False)
class ClippedReLU(ReLU):
    """min(max(x, 0), max_value): ReLU6, hardtanh(x, 0, a), clamp(x, 0, a). What an IF neuron
    computes anyway: conversion caps the neuron's threshold at ``max_value``."""
    max_value: float = 6.0


@dataclass(eq=False)
class Concat(Node):
    """Channel concatenation (``torch.cat(xs, dim=1)``) of its inputs, in input order."""


@dataclass(eq=False)
class Upsample(Node):
    """Nearest-neighbour upsampling by integer factors ``scale`` (sH, sW)."""
    scale: Pair = (2, 2)


@dataclass(eq=False)
class ConvTranspose2d(Node):
    """Transposed convolution; weight in PyTorch layout (Ci, Co/groups, kH, kW)."""
    weight: Tensor = None
    bias: Tensor | None = None
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    output_padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1


@dataclass(eq=False)
class AdaptiveAvgPool2d(Node):
    """Adaptive average pool whose output does not divide the input (else tracing emits a fixed
    ``AvgPool2d``), e.g. a 1x1 map replicated to 7x7: a linear map, folded as a dense synapse."""
    output_size: Pair = (1, 1)


@dataclass(eq=False)
class Neuron(Node):
    """A spiking population replacing one ReLU.

    ``model`` names a registered neuron model (``loihi_conv.snn.neurons``). Spikes carry amplitude
    ``threshold`` (per channel), so ``count * threshold / T`` estimates the ANN activation clipped
    at ``threshold`` and downstream weights stay in ANN units.
    ``v_init`` is the initial membrane potential as a fraction of the threshold (per channel).
    ``params`` holds model-specific options (e.g. clamp delay, burst size).
    """
    model: str = "if-soft"
    threshold: Tensor = None
    v_init: Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)


SYNAPSES = (Conv2d, Linear)


@dataclass(eq=False)
class Graph:
    """Nodes in topological order; ``output`` names the readout node (a synapse, no ReLU)."""
    nodes: dict[str, Node]
    output: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes.values()))

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    @property
    def input(self) -> Input:
        (node,) = [n for n in self.nodes.values() if isinstance(n, Input)]
        return node

    def users(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if name in n.inputs]

    def of_type(self, *types: type) -> list[Node]:
        return [n for n in self.nodes.values() if isinstance(n, types)]

    def remove(self, name: str) -> None:
        """Drop a single-input node, rewiring its users to its input."""
        node = self.nodes.pop(name)
        (src,) = node.inputs
        for user in self.nodes.values():
            user.inputs = tuple(src if i == name else i for i in user.inputs)
        if self.output == name:
            self.output = src

    def replace(self, name: str, new: Node) -> None:
        """Swap a node in place, keeping order and edges (``new.name`` must equal ``name``)."""
        assert new.name == name
        self.nodes[name] = new

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    def summary(self) -> str:
        rows = []
        for n in self.nodes.values():
            extra = ""
            if isinstance(n, Neuron):
                th = n.threshold
                extra = f" model={n.model} th=[{th.min():.3g},{th.max():.3g}]"
            elif isinstance(n, SYNAPSES):
                extra = f" w{tuple(n.weight.shape)}"
            rows.append(f"{n.name:24s} {type(n).__name__:10s} {str(n.shape):18s} <- {', '.join(n.inputs)}{extra}")
        return "\n".join(rows)


def clone_node(node: Node, **changes: Any) -> Node:
    """Shallow copy of a node with some fields changed (tensors are shared, not copied)."""
    kw = {f.name: getattr(node, f.name) for f in fields(node)}
    kw.update(changes)
    return type(node)(**kw)
