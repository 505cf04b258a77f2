"""Merge a max-pool that reads only another max-pool into one: ``max(max(x))`` over nested windows
is the max over their union (GoogLeNet: a stem max-pool, then an Inception branch's 3x3/1 pool).

Why: the fixed-point spiking max-pool is a stage between a population and a synapse, so two pools
in a row cannot be placed. The merged pool is exact when, per axis, every output's union of input
positions equals one pool's window (checked on index sets, not on data: ``_windows``), and the
ANN is then unchanged (``ops.forward`` before == after).
"""
from __future__ import annotations

from loihi_conv.frontend import ir


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
