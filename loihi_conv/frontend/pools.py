"""Merge a max-pool that reads only another max-pool into one: ``max(max(x))`` over nested windows
is the max over their union (GoogLeNet: a stem max-pool, then an Inception branch's 3x3/1 pool).

Why: the fixed-point spiking max-pool is a stage between a population and a synapse, so two pools
in a row cannot be placed. The merged pool is exact when, per axis, every output's union of input
positions equals one pool's window (checked on index sets, not on data: ``_windows``), and the
ANN is then unchanged (``ops.forward`` before == after).
"""
from __future__ import annotations

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops

Tensor = torch.Tensor


def _out_size(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    span = n + 2 * p - k
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + p:  # PyTorch: the last window must start inside
        o -= 1
    return o


def _windows(n: int, k: int, s: int, p: int, ceil: bool) -> list[frozenset[int]]:
    return [frozenset(range(max(0, j * s - p), min(n, j * s - p + k))) for j in range(_out_size(n, k, s, p, ceil))]


def _merged(a: ir.MaxPool2d, b: ir.MaxPool2d, hw: tuple[int, int]) -> ir.MaxPool2d | None:
    """One MaxPool2d equal to b(a(x)) on inputs of spatial size ``hw``, or None."""
    ks, ss, ps, modes = [], [], [], {False, True}
    for d, n in enumerate(hw):
        ka, sa, pa = a.kernel_size[d], a.stride[d], a.padding[d]
        kb, sb, pb = b.kernel_size[d], b.stride[d], b.padding[d]
        first = _windows(n, ka, sa, pa, a.ceil_mode)
        want = [frozenset().union(*(first[i] for i in w)) for w in _windows(len(first), kb, sb, pb, b.ceil_mode)]
        k, s, p = (kb - 1) * sa + ka, sa * sb, pa + pb * sa
        if 2 * p > k:  # PyTorch's (and the spiking stage's) padding rule
            return None
        modes &= {c for c in (False, True) if _windows(n, k, s, p, c) == want}
        ks.append(k), ss.append(s), ps.append(p)
    if not modes:
        return None
    return ir.MaxPool2d(b.name, a.inputs, b.shape, kernel_size=tuple(ks), stride=tuple(ss), padding=tuple(ps),
                        ceil_mode=min(modes))


def merge_max_pools(graph: ir.Graph) -> ir.Graph:
    """A new graph where every MaxPool2d fed by another MaxPool2d reads that pool's input through
    one merged pool when that is exact (the first pool stays while others read it); needs shapes."""
    out = graph.copy()
    for b in list(out.of_type(ir.MaxPool2d)):
        a = out.nodes.get(b.inputs[0])
        if not isinstance(a, ir.MaxPool2d):
            continue
        merged = _merged(a, b, tuple(out[a.inputs[0]].shape[1:]))
        if merged is not None:
            out.replace(b.name, merged)
            if not out.users(a.name) and out.output != a.name:
                del out.nodes[a.name]
    return out


# ---- max-pools as ReLU trees: exact on non-negative inputs, in conv + ReLU layers ---------------
def _tree(n: int, signed: bool = False) -> list[Tensor]:
    """Neuron levels computing the max of ``n`` values with ReLUs: each level pairs its values
    (a, b) into neurons relu(a - b) and relu(b) -- max(a, b) is their sum when b >= 0 -- plus
    relu(-b) for ``signed`` values (max(a, b) = relu(a - b) + relu(b) - relu(-b)); an odd value
    passes as relu(v) (and relu(-v)). Returns each level's (neurons, previous units) matrix; level
    0's units are the window's elements, the last entry the linear read-out of the max."""
    levels, values = [], torch.eye(n, dtype=torch.float64)  # values over the previous level's units
    while values.shape[0] > 1:
        rows, nxt = [], []
        for i in range(0, values.shape[0], 2):
            pair = values[i:i + 2]
            first = len(rows)
            rows += [pair[0] - pair[1], pair[1]] if len(pair) == 2 else [pair[0]]
            signs = [1.0] * (len(rows) - first)
            if signed:
                rows.append(-pair[-1])
                signs.append(-1.0)
            nxt.append(list(zip(range(first, len(rows)), signs)))
        levels.append(torch.stack(rows))
        values = torch.zeros(len(nxt), len(rows), dtype=torch.float64)
        for j, units in enumerate(nxt):
            for unit, sign in units:
                values[j, unit] = sign
    return levels + [values]


def _relu_tree(pool: ir.MaxPool2d, channels: int, signed: bool) -> list[ir.Node]:
    """The nodes replacing ``pool``: grouped convs with ReLUs, then a linear grouped 1x1 conv named
    like the pool (its users stay wired to it)."""
    kh, kw = pool.kernel_size
    mats = _tree(kh * kw, signed)
    nodes, src, c = [], pool.inputs[0], channels
    for k, m in enumerate(mats):
        last = k == len(mats) - 1
        if k == 0:  # gather the window: one kernel per neuron over the window's elements
            w = m.reshape(m.shape[0], 1, kh, kw).repeat(c, 1, 1, 1)
            conv = {"stride": tuple(pool.stride), "padding": tuple(pool.padding)}
        else:
            w = m.reshape(m.shape[0], m.shape[1], 1, 1).repeat(c, 1, 1, 1)
            conv = {}
        name = pool.name if last else f"{pool.name}.tree{k}"
        nodes.append(ir.Conv2d(name if last else f"{name}.conv", (src,), weight=w.float(), bias=None,
                               groups=c, **conv))
        if not last:
            nodes.append(ir.ReLU(name, (f"{name}.conv",)))
            src = name
    return nodes


def max_pools_as_relu_trees(graph: ir.Graph) -> ir.Graph:
    """A new graph (shapes inferred) where every MaxPool2d is a tree of grouped
    conv + ReLU layers computing the same max (``_tree``: ceil(log2(window)) ReLU levels). The ANN
    is unchanged; a target whose neurons are ReLUs (sdnn) then runs max-pooling exactly, at the
    cost of those levels' latency and neurons (half as many again when the pool does not read a
    ReLU and its input can be negative). Refuses a pool it cannot rewrite exactly."""
    graph = ops.infer_shapes(graph.copy())
    nodes: dict[str, ir.Node] = {}
    for node in graph:
        if not isinstance(node, ir.MaxPool2d):
            nodes[node.name] = node
            continue
        src = graph[node.inputs[0]]
        signed = not isinstance(src, ir.ReLU)  # values of either sign: relu(-b) carries b < 0
        if signed and any(node.padding):
            raise LoihiConvError(f"max_pool='relu-tree': MaxPool2d '{node.name}' pads '{src.name}', whose values "
                                 "can be negative (a max-pool pads with -inf, a convolution with 0)",
                                 "use max_pool='avg', or put the max-pool after the ReLU")
        dims = zip(src.shape[1:], node.kernel_size, node.stride, node.padding)
        if node.ceil_mode and any(_out_size(n, k, s, p, True) != _out_size(n, k, s, p, False) for n, k, s, p in dims):
            raise LoihiConvError(f"max_pool='relu-tree': MaxPool2d '{node.name}' uses ceil_mode with a partial "
                                 "last window, which a convolution cannot express",
                                 "use max_pool='avg' or a spiking max-pool scheme")
        for new in _relu_tree(node, src.shape[0], signed):
            nodes[new.name] = new
    return ops.infer_shapes(ir.Graph(nodes, graph.output, dict(graph.meta)))
