"""Push per-channel ops through channel concatenations: ``op(cat(a, b)) == cat(op(a), op(b))``.

Why: between two spiking populations the quantizer folds every path into one synapse. A ReLU,
BatchNorm or max-pool applied to a concatenation would make one population (or one pooled
source) of all concatenated channels, fed by one synapse per concatenated input whose weights
are zero outside that input's channels (DenseNet: ~10^8 zeros). Split per input, each piece is
its own population with its own per-channel thresholds, and the concatenation ends up right
before the next Conv2d/Linear, where it only selects that synapse's input channels (no zeros).
Per-channel ops commute with the channel concatenation, so the network computes exactly the
same function (``ops.forward`` before == after). Each op kind registers how to cut it (``piece``).
"""
from __future__ import annotations

from functools import singledispatch

from loihi_conv.frontend import ir


@singledispatch
def piece(node: ir.Node, name: str, src: str, lo: int, hi: int) -> ir.Node | None:
    """``node`` restricted to channels lo:hi, reading ``src``; None: not a per-channel op."""
    return None


@piece.register(ir.ReLU)  # and ClippedReLU: same fields, other input
@piece.register(ir.MaxPool2d)
def _(node, name, src, lo, hi):
    return ir.clone_node(node, name=name, inputs=(src,), shape=())


@piece.register
def _(node: ir.BatchNorm, name, src, lo, hi):
    cut = {f: getattr(node, f)[lo:hi] for f in ("weight", "bias", "running_mean", "running_var")}
    return ir.clone_node(node, name=name, inputs=(src,), shape=(), **cut)


def push_through_concat(graph: ir.Graph) -> ir.Graph:
    """A new graph where every per-channel op fed by a ``Concat`` is split per concatenated input,
    repeatedly (BN -> ReLU -> max-pool chains all move), the op's name now naming the ``Concat``
    of its pieces. Needs shapes (channel counts of the concatenated inputs)."""
    out = graph.copy()
    changed = True
    while changed:
        changed = False
        order: dict[str, ir.Node] = {}
        for node in out:
            src = out[node.inputs[0]] if len(node.inputs) == 1 else None
            parts = _split(node, src, out) if isinstance(src, ir.Concat) else None
            if parts is None:
                order[node.name] = node
                continue
            for p in parts:
                order[p.name] = p
            order[node.name] = ir.Concat(node.name, tuple(p.name for p in parts), node.shape)
            changed = True
        out.nodes = order
        for cat in [n for n in out.of_type(ir.Concat) if not out.users(n.name) and out.output != n.name]:
            del out.nodes[cat.name]  # a concatenation whose every user was split
    return out


def _split(node: ir.Node, cat: ir.Concat, graph: ir.Graph) -> list[ir.Node] | None:
    parts, lo = [], 0
    for i, src in enumerate(cat.inputs):
        hi = lo + graph[src].shape[0]
        p = piece(node, f"{node.name}_part{i}", src, lo, hi)
        if p is None:
            return None
        p.shape = (hi - lo,) + tuple(node.shape[1:])  # per-channel ops keep the spatial shape
        parts.append(p)
        lo = hi
    return parts
