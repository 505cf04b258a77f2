"""Fold eval-mode BatchNorm into the preceding Conv2d/Linear (``prepare`` runs it after tracing).

Layouts: synapse weights in PyTorch layout, output channel first (Conv2d (Co, Ci/groups, kH, kW),
Linear (Nout, Nin)); BN vectors are per output channel (Co,).
"""
from __future__ import annotations

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops

__all__ = ["fold_problem", "fold_batchnorm"]


def fold_problem(graph: ir.Graph, bn: ir.BatchNorm) -> str | None:
    """Why ``bn`` cannot be folded into its input node, or None if it can.

    Folding needs the BN's input to be a Conv2d/Linear whose only user is the BN (otherwise the
    other users would see the BN-scaled output).
    """
    src = graph.nodes.get(bn.inputs[0])
    if not isinstance(src, ir.SYNAPSES):
        return f"its input is a {type(src).__name__}, not a Conv2d/Linear"
    users = len(graph.users(src.name)) + (graph.output == src.name)
    if users != 1:
        return f"its {type(src).__name__} '{src.name}' has {users} users; the BatchNorm must be the only one"
    return None


def _folded(syn: ir.Conv2d | ir.Linear, bn: ir.BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """BN folded into the synapse, exactly (Rueckauer et al. 2017 §3.3; Li et al., Eq. 25).

    s = γ/√(σ²+ε) per output channel; W' = W·s, b' = (b − μ)·s + β. Computed in float64, stored
    as float32.
    """
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = syn.weight.double() * scale.reshape((-1,) + (1,) * (syn.weight.dim() - 1))
    b = syn.bias.double() if syn.bias is not None else torch.zeros_like(scale)
    b = (b - bn.running_mean.double()) * scale + bn.bias.double()
    return w.float(), b.float()


def _affine(bn: ir.BatchNorm) -> ir.Node:
    """A BatchNorm that has no synapse of its own to fold into (after a concatenation, a pool or a
    ReLU: DenseNet, pre-activation nets) as the per-channel affine map it is: a depthwise 1x1
    Conv2d (a diagonal Linear on vectors), which the quantizer composes into the next synapse."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    c = scale.numel()
    if len(bn.shape) == 1:
        return ir.Linear(bn.name, bn.inputs, bn.shape, weight=torch.diag(scale).float(), bias=shift.float())
    if len(bn.shape) != 3:
        raise LoihiConvError(f"BatchNorm '{bn.name}' on a {bn.shape} tensor", "use BatchNorm1d/2d on (C,) or (C, H, W)")
    return ir.Conv2d(bn.name, bn.inputs, bn.shape, weight=scale.float().reshape(c, 1, 1, 1), bias=shift.float(),
                     groups=c)


def fold_batchnorm(graph: ir.Graph) -> ir.Graph:
    """A new graph with every BatchNorm folded into its Conv2d/Linear (``graph`` is not changed).

    The synapse keeps its name; the BN's users read the synapse instead. A BatchNorm that cannot
    be folded (``fold_problem``) becomes its own affine synapse node (``_affine``).
    """
    out = graph.copy()
    if any(not bn.shape for bn in out.of_type(ir.BatchNorm)):
        ops.infer_shapes(out)
    for bn in out.of_type(ir.BatchNorm):
        if fold_problem(out, bn):
            out.replace(bn.name, _affine(bn))
            continue
        syn = out[bn.inputs[0]]
        weight, bias = _folded(syn, bn)
        out.replace(syn.name, ir.clone_node(syn, weight=weight, bias=bias))
        out.remove(bn.name)
    return out
