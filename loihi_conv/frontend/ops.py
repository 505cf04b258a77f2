"""ANN (float, non-spiking) forward pass over the IR: one function per node type.

``apply(node, *inputs)`` is the stateless float op of a node; the float SNN simulator reuses it
for every non-neuron node, so ANN and SNN share the exact same linear algebra.
"""
from __future__ import annotations

from functools import singledispatch

import torch
import torch.nn.functional as F

from loihi_conv.frontend import ir


@singledispatch
def apply(node: ir.Node, *xs: torch.Tensor) -> torch.Tensor:
    raise TypeError(f"no float op for IR node type {type(node).__name__} ({node.name})")


@apply.register
def _(node: ir.Input, x: torch.Tensor) -> torch.Tensor:
    return x


@apply.register
def _(node: ir.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, node.weight, node.bias, node.stride, node.padding, node.dilation, node.groups)


@apply.register
def _(node: ir.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, node.weight, node.bias)


@apply.register
def _(node: ir.BatchNorm, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, node.running_mean, node.running_var, node.weight, node.bias, False, 0.0, node.eps)


@apply.register
def _(node: ir.AvgPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, node.kernel_size, node.stride, node.padding, node.ceil_mode, node.count_include_pad)


@apply.register
def _(node: ir.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, node.kernel_size, node.stride, node.padding, ceil_mode=node.ceil_mode)


@apply.register
def _(node: ir.Flatten, x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


@apply.register
def _(node: ir.Add, *xs: torch.Tensor) -> torch.Tensor:
    return torch.stack(xs).sum(0)


@apply.register
def _(node: ir.ReLU, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x)


@apply.register
def _(node: ir.ClippedReLU, x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0.0, max=float(node.max_value))


@apply.register
def _(node: ir.Concat, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, dim=1)


@apply.register
def _(node: ir.Upsample, x: torch.Tensor) -> torch.Tensor:
    sh, sw = node.scale
    return x.repeat_interleave(sh, dim=2).repeat_interleave(sw, dim=3)


@apply.register
def _(node: ir.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv_transpose2d(x, node.weight, node.bias, node.stride, node.padding, node.output_padding,
                              node.groups, node.dilation)


@apply.register
def _(node: ir.AdaptiveAvgPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, node.output_size)


@apply.register
def _(node: ir.Neuron, x: torch.Tensor) -> torch.Tensor:
    # The ANN view of a spiking population: the rate it approximates, ReLU clipped at threshold.
    th = node.threshold.reshape((1, -1) + (1,) * (x.dim() - 2))
    return torch.minimum(F.relu(x), th)


@torch.no_grad()
def forward(graph: ir.Graph, x: torch.Tensor, record: bool = False):
    """Run the graph on a batch ``x`` (N, *input shape).

    Returns the output, or ``(output, acts)`` with every node's activation when ``record``.
    """
    acts: dict[str, torch.Tensor] = {}
    for node in graph:
        ins = [x] if isinstance(node, ir.Input) else [acts[i] for i in node.inputs]
        acts[node.name] = apply(node, *ins)
    out = acts[graph.output]
    return (out, acts) if record else out


def infer_shapes(graph: ir.Graph) -> ir.Graph:
    """Fill every node's ``shape`` (without batch) by running one zero sample."""
    x = torch.zeros((1,) + tuple(graph.input.shape))
    _, acts = forward(graph, x, record=True)
    for node in graph:
        node.shape = tuple(acts[node.name].shape[1:])
    return graph
