"""Synapse-chain folding: everything between two neuron populations becomes one linear synapse.

Between two populations of an SNN IR graph there are only linear nodes (Conv2d, Linear,
AvgPool2d, Flatten, Add) and max-pools. ``fold(snn)`` rewrites each population's input as a list
of float synapses (``FConv`` / ``FDense``), one per path from a source population, plus one float
bias:

* a path of Conv2d / AvgPool2d nodes composes into one conv (``compose``, formula below);
* a path with Flatten / Linear becomes one dense matrix (the path's Jacobian, PyTorch C-order
  flatten, i.e. NetX ``flatten`` semantics);
* an ``Add`` splits into one synapse per input path, all feeding the same block (fan-in sums);
* a ``Concat`` splits the same way, each path passing a ``Slot`` (its input's channels placed at
  their offset: a one-hot 1x1 conv) that composes into the next conv as a column selection;
* Upsample / ConvTranspose2d / AdaptiveAvgPool2d (no single conv) make the path dense: only into
  a vector block (a classifier head), since the scale search is per output channel;
  an identity shortcut becomes a 1x1 depthwise identity conv (or an identity dense matrix);
* the bias is the whole region evaluated with every source at zero, so biases after an Add are
  counted once and border effects of padding give a per-neuron bias instead of an error;
* a MaxPool2d runs the graph's max-pool scheme (``loihi_conv.snn.pooling``, ``Recipe.max_pool``) as
  the float SNN does: ``avg`` replaces it by the AvgPool2d of the same kernel, stride, padding and
  ceil mode (``count_include_pad``, exactly ``pooling.AvgReplacement``), an ordinary linear node;
  the stateful schemes (mli, rate-gate, spike-max) become a ``qir.SpikePool`` stage on the input of
  the synapse that follows, whose weights then act on the pooled (C, H', W') source. Such a pool
  must be fed directly by a population (the stage sits between a source's out-port and a
  synapse); a max-pool of the analog input (static in the float SNN: the ANN max) is a
  ``spike-max`` stage on the input block, exact because rounding the input is monotone. Other
  placements are refused. In the float models of this module (``apply_syn``, ``forward``) the
  stage is its rate model, the max of the source's values per window: exact for MLI's
  cumulative output, an estimate for rate-gate and spike-max.

Layouts: float64 tensors, PyTorch order. Conv weights (Co, Ci/groups, kH, kW); dense weights
(Nout, Nin) over the source flattened in C order; biases (C,) per channel or the block's full
(C, H, W) / (N,) shape.

Composition of two convolutions (A applied first, then B; per spatial axis, dilation already
expanded into zero taps): ``B(A(x))[o] = sum_j sum_i B[j] A[i] x[(o*sB - pB + j)*sA - pA + i]``,
so the composite has kernel ``K[n] = sum_{j*sA + i = n} B[j] A[i]`` of size ``(kB-1)*sA + kA``,
stride ``sA*sB`` and padding ``pA + pB*sA``. It is exact iff B's zero padding lands on the
composite's zero padding: nothing to check when ``pB = 0``; otherwise A's windows left of the
input (``kA <= sA + pA``) and right of it (``MA*sA - pA >= H`` with ``MA`` A's output size) must
not touch real input. An average pool k=s=P (pad 0) before a conv (k, s, p) thus gives kernel
``P*k``, stride ``P*s``, padding ``P*p``, exact when p = 0 or H, W are multiples of P.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import singledispatch
from typing import Iterator

import torch
import torch.nn.functional as F

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.fixed import qir
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.pooling import get_pooling, scheme_name

Tensor = torch.Tensor
Pair = tuple[int, int]
DT = torch.float64


# ---- float synapses and blocks -----------------------------------------------------------------
@dataclass(eq=False)
class FConv:
    """A folded convolution from population ``source`` (weights in ANN units, float64), fed
    through the spiking max-pool ``pool`` when set (then it convolves the pooled source)."""
    source: str
    weight: Tensor  # (Co, Ci/groups, kH, kW)
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    pool: qir.SpikePool | None = None


@dataclass(eq=False)
class FDense:
    """A folded dense map from population ``source`` (pooled by ``pool`` when set) flattened in
    C order (float64)."""
    source: str
    weight: Tensor  # (Nout, Nin)
    pool: qir.SpikePool | None = None


FSyn = FConv | FDense


@dataclass(eq=False)
class FBlock:
    """One population of the folded network: ``role`` is 'input', 'hidden' or 'output'."""
    name: str
    shape: tuple[int, ...]
    role: str
    synapses: list = None
    bias: Tensor | None = None  # (C,) or full shape, ANN units
    neuron: ir.Neuron | None = None

    @property
    def channels(self) -> int:
        return int(self.shape[0])

    @property
    def threshold(self) -> Tensor:
        """Per-channel threshold theta (C,) float64 (hidden blocks only)."""
        return self.neuron.threshold.to(DT).flatten().expand(self.channels).clone()

    def bias_full(self) -> Tensor:
        """Bias broadcast to the block's full shape (zeros when there is none)."""
        if self.bias is None:
            return torch.zeros(self.shape, dtype=DT)
        if tuple(self.bias.shape) == tuple(self.shape):
            return self.bias
        return channel_view(self.bias, self.shape).expand(self.shape)


def channel_view(vec: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A (C,) vector as (C, 1, ...) broadcasting against ``shape`` (no batch dim)."""
    return vec.reshape((-1,) + (1,) * (len(shape) - 1))


def pool_values(pool: qir.SpikePool | None, x: Tensor) -> Tensor:
    """The rate model of a spiking max-pool stage: the max of the source's values (clipped
    rates, messages or the analog input; (N, C, H, W) -> (N, C, H', W')) over each window. With
    one threshold per channel that is the max rate, MLIPooling's exact cumulative output."""
    if pool is None:
        return x
    return F.max_pool2d(x, pool.kernel, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)


@singledispatch
def apply_syn(syn, x: Tensor) -> Tensor:
    """The synapse (its pool's rate model, then its linear map) on a batch ``x``
    (N, *source shape) -> (N, *target shape)."""
    raise TypeError(f"not a folded synapse: {type(syn).__name__}")


@apply_syn.register
def _(syn: FConv, x: Tensor) -> Tensor:
    x = pool_values(syn.pool, x)
    return F.conv2d(x.to(syn.weight.dtype), syn.weight, None, syn.stride, syn.padding,
                    syn.dilation, syn.groups)


@apply_syn.register
def _(syn: FDense, x: Tensor) -> Tensor:
    x = pool_values(syn.pool, x)
    return F.linear(x.flatten(1).to(syn.weight.dtype), syn.weight)


def block_input(block: FBlock, src: dict[str, Tensor]) -> Tensor:
    """Pre-activation of ``block``: sum of its synapses on source values ``src`` plus bias."""
    out = sum(apply_syn(s, src[s.source]) for s in block.synapses)
    return out + block.bias_full().unsqueeze(0)


# ---- convolution maps and their composition ----------------------------------------------------
@dataclass(eq=False)
class ConvMap:
    weight: Tensor  # (Co, Ci/groups, kH, kW)
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    in_channels: int

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def depthwise(self) -> bool:
        """Channel c maps only to channel c (pools, identity, depthwise convs)."""
        return self.groups == self.in_channels == self.out_channels

    def undilated(self) -> "ConvMap":
        """The same map with dilation expanded into zero taps (dilation 1)."""
        if tuple(self.dilation) == (1, 1):
            return self
        co, ci, kh, kw = self.weight.shape
        dh, dw = self.dilation
        w = self.weight.new_zeros((co, ci, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
        w[:, :, ::dh, ::dw] = self.weight
        return replace(self, weight=w, dilation=(1, 1))

    def out_hw(self, hw: Pair) -> Pair:
        k = self.weight.shape[2:]
        return tuple((n + 2 * p - d * (kk - 1) - 1) // s + 1
                     for n, kk, s, p, d in zip(hw, k, self.stride, self.padding, self.dilation))


def _pair(v) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def compose(a: ConvMap, b: ConvMap, in_hw: Pair, where: str) -> ConvMap:
    """The single conv equal to ``b(a(x))`` for inputs of spatial size ``in_hw`` (module doc)."""
    a, b = a.undilated(), b.undilated()
    ka, kb = a.weight.shape[2:], b.weight.shape[2:]
    m_out = a.out_hw(in_hw)
    for d in (0, 1):
        if b.padding[d] == 0:
            continue
        if ka[d] > a.stride[d] + a.padding[d] or m_out[d] * a.stride[d] - a.padding[d] < in_hw[d]:
            raise LoihiConvError(
                f"{where}: the zero padding of a later conv/pool ({b.padding}) does not line up with "
                f"the input of the earlier pool/conv (kernel {tuple(ka)}, stride {a.stride}, input "
                f"{tuple(in_hw)}), so the chain is not one convolution",
                "use padding 0 on the conv after the pool, or make the map size a multiple of the "
                "pool stride")
    s = (a.stride[0] * b.stride[0], a.stride[1] * b.stride[1])
    p = (a.padding[0] + b.padding[0] * a.stride[0], a.padding[1] + b.padding[1] * a.stride[1])
    k = ((kb[0] - 1) * a.stride[0] + ka[0], (kb[1] - 1) * a.stride[1] + ka[1])
    weight, groups = _compose_weights(a, b, k, where)
    return ConvMap(weight, s, p, (1, 1), groups, a.in_channels)


def _compose_weights(a: ConvMap, b: ConvMap, k: Pair, where: str) -> tuple[Tensor, int]:
    """Composite kernel ``K[n] = sum_{j*sA+i=n} B[j] A[i]`` with the channel structure kept."""
    co = b.out_channels
    if a.depthwise:  # B's input channel cm reads A's channel cm only: keep B's groups
        per = b.weight.shape[1]
        cm = (torch.arange(co) // (co // b.groups))[:, None] * per + torch.arange(per)[None, :]
        a_sel = a.weight[cm, 0]  # (Co, Cm/gB, kA, kA)
        groups, shape = b.groups, (co, per) + tuple(k)
        term = lambda tap: tap[:, :, None, None] * a_sel  # noqa: E731
    elif b.depthwise:  # B scales and sums A's channel co over space: keep A's groups
        groups, shape = a.groups, (co, a.weight.shape[1]) + tuple(k)
        term = lambda tap: tap[:, 0, None, None, None] * a.weight  # noqa: E731
    elif a.groups == 1 and b.groups == 1:
        groups, shape = 1, (co, a.in_channels) + tuple(k)
        term = lambda tap: torch.einsum("om,mihw->oihw", tap, a.weight)  # noqa: E731
    else:  # e.g. a grouped conv into a concatenation: compose the ungrouped equivalents
        return _compose_weights(ungrouped(a), ungrouped(b), k, where)
    out = a.weight.new_zeros(shape)
    kah, kaw = a.weight.shape[2:]
    for jy in range(b.weight.shape[2]):
        for jx in range(b.weight.shape[3]):
            oy, ox = jy * a.stride[0], jx * a.stride[1]
            out[:, :, oy:oy + kah, ox:ox + kaw] += term(b.weight[:, :, jy, jx])
    return out, groups


def ungrouped(m: ConvMap) -> ConvMap:
    """The same map with groups=1 (block-diagonal weights)."""
    if m.groups == 1:
        return m
    co, per, kh, kw = m.weight.shape
    w = m.weight.new_zeros((co, m.in_channels, kh, kw))
    rows = co // m.groups
    for g in range(m.groups):
        w[g * rows:(g + 1) * rows, g * per:(g + 1) * per] = m.weight[g * rows:(g + 1) * rows]
    return replace(m, weight=w, groups=1)


@singledispatch
def conv_map(node: ir.Node, channels: int) -> ConvMap:
    """One spatial IR node as a ConvMap (``channels``: its input channels)."""
    raise LoihiConvError(f"node '{node.name}' ({type(node).__name__}) cannot be part of a conv chain",
                         "only Conv2d and AvgPool2d may sit between populations before a Flatten")


@conv_map.register
def _(node: ir.Conv2d, channels: int) -> ConvMap:
    return ConvMap(node.weight.detach().to(DT), _pair(node.stride), _pair(node.padding),
                   _pair(node.dilation), int(node.groups), channels)


@conv_map.register
def _(node: ir.AvgPool2d, channels: int) -> ConvMap:
    # With count_include_pad every (floor-mode) window divides by kh*kw, padding included: a
    # depthwise conv of ones/(kh*kw) with the same zero padding.
    _check_pool(node)
    kh, kw = _pair(node.kernel_size)
    w = torch.full((channels, 1, kh, kw), 1.0 / (kh * kw), dtype=DT)
    stride = _pair(node.stride if node.stride is not None else node.kernel_size)
    return ConvMap(w, stride, _pair(node.padding), (1, 1), channels, channels)


def _check_pool(node: ir.AvgPool2d) -> None:
    """Refuse average pools whose border windows divide by fewer inputs (``fold`` has already
    turned a ceil mode that adds no window into floor mode)."""
    padded = _pair(node.padding) != (0, 0) and not node.count_include_pad
    if padded or node.ceil_mode:
        raise LoihiConvError(
            f"AvgPool2d '{node.name}' (a MaxPool2d becomes one under max_pool='avg') has "
            f"padding={node.padding}, ceil_mode={node.ceil_mode}, count_include_pad="
            f"{node.count_include_pad}: its border windows average fewer inputs, which no single "
            "convolution reproduces",
            "use ceil_mode=False (or an input size where ceil and floor mode agree) and "
            "count_include_pad=True; a Flatten + Linear right after the pool folds any pool exactly")


@dataclass(eq=False)
class Slot(ir.Node):
    """Where one input of a ``Concat`` lands: its channels at ``offset`` of ``total`` (the
    concatenation seen from one path; zeros elsewhere). Only inside ``fold``'s paths."""
    offset: int = 0
    total: int = 1


@ops.apply.register
def _(node: Slot, x: Tensor) -> Tensor:
    out = x.new_zeros((x.shape[0], node.total) + tuple(x.shape[2:]))
    out[:, node.offset:node.offset + x.shape[1]] = x
    return out


@conv_map.register
def _(node: Slot, channels: int) -> ConvMap:
    w = torch.zeros((node.total, channels, 1, 1), dtype=DT)
    w[node.offset + torch.arange(channels), torch.arange(channels)] = 1.0
    return ConvMap(w, (1, 1), (0, 0), (1, 1), 1, channels)


def identity_map(channels: int) -> ConvMap:
    return ConvMap(torch.ones((channels, 1, 1, 1), dtype=DT), (1, 1), (0, 0), (1, 1), channels, channels)


# ---- paths between populations -----------------------------------------------------------------
SOURCES = (ir.Input, ir.Neuron)
LINEAR = (ir.Conv2d, ir.Linear, ir.AvgPool2d, ir.Flatten)


@dataclass
class Path:
    source: str
    ops: tuple[ir.Node, ...]  # linear nodes from the source to the target, in order
    pool: ir.MaxPool2d | None = None  # a spiking max-pool between the source and ``ops``


def _paths(graph: ir.Graph, name: str, suffix: tuple[ir.Node, ...]) -> Iterator[Path]:
    yield from _walk(graph[name], graph, suffix)


@singledispatch
def _walk(node: ir.Node, graph: ir.Graph, suffix) -> Iterator[Path]:
    raise LoihiConvError(f"node '{node.name}' ({type(node).__name__}) cannot be mapped to Loihi synapses",
                         "supported between neurons: Conv2d, Linear, AvgPool2d, Flatten, Add")


@_walk.register(ir.Input)
@_walk.register(ir.Neuron)
def _(node, graph, suffix):
    yield Path(node.name, suffix)


@_walk.register(ir.Conv2d)
@_walk.register(ir.Linear)
@_walk.register(ir.AvgPool2d)
@_walk.register(ir.Flatten)
def _(node, graph, suffix):
    yield from _paths(graph, node.inputs[0], (node,) + suffix)


@_walk.register(ir.Upsample)
@_walk.register(ir.ConvTranspose2d)
@_walk.register(ir.AdaptiveAvgPool2d)
def _(node, graph, suffix):  # linear, but no single conv: the path becomes a dense synapse
    yield from _paths(graph, node.inputs[0], (node,) + suffix)


@_walk.register
def _(node: ir.Concat, graph, suffix):
    total, offset = int(node.shape[0]), 0
    for i, src in enumerate(node.inputs):
        slot = Slot(f"{node.name}[{i}]", (src,), (total,) + tuple(node.shape[1:]), offset=offset, total=total)
        offset += int(graph[src].shape[0])
        yield from _paths(graph, src, (slot,) + suffix)


@_walk.register
def _(node: ir.Add, graph, suffix):
    for i in node.inputs:
        yield from _paths(graph, i, suffix)


@_walk.register
def _(node: ir.MaxPool2d, graph, suffix):
    src = graph[node.inputs[0]]
    if not isinstance(src, SOURCES):
        raise LoihiConvError(
            f"MaxPool2d '{node.name}' is fed by '{src.name}' ({type(src).__name__}), not directly by "
            "a spiking population or the input: the fixed-point spiking max-pool is a stage between "
            "a population's out-port and the next synapse",
            "put the max-pool right after the ReLU (conv -> ReLU -> MaxPool2d), or convert with "
            "max_pool='avg' (a linear average pool, any placement after a population)")
    yield Path(src.name, suffix, node)


@_walk.register
def _(node: ir.ReLU, graph, suffix):
    raise LoihiConvError(f"graph still has ReLU '{node.name}'; quantize takes an SNN graph",
                         "convert it first: loihi_conv.convert.convert(...)")


@_walk.register
def _(node: ir.BatchNorm, graph, suffix):
    raise LoihiConvError(f"graph still has BatchNorm '{node.name}'",
                         "fold it first: loihi_conv.frontend.prepare.prepare(model, input_shape)")


@singledispatch
def _float64(node: ir.Node, bias: bool = True) -> ir.Node:
    """The node with float64 parameters (and without its bias unless ``bias``)."""
    return node


@_float64.register(ir.Conv2d)
@_float64.register(ir.Linear)
@_float64.register(ir.ConvTranspose2d)
def _(node, bias: bool = True) -> ir.Node:
    b = node.bias.detach().to(DT) if bias and node.bias is not None else None
    return ir.clone_node(node, weight=node.weight.detach().to(DT), bias=b)


# a path through one of these becomes a dense matrix (its Jacobian)
DENSE_NODES = (ir.Linear, ir.Flatten, ir.Upsample, ir.ConvTranspose2d, ir.AdaptiveAvgPool2d)


def _fold_path(path: Path, src_shape: tuple[int, ...], dst_shape: tuple[int, ...], where: str,
               pool: qir.SpikePool | None = None):
    """One path's linear map (biases dropped) as an FConv or FDense; ``src_shape`` is what the
    linear part sees (the pooled shape behind a ``pool`` stage)."""
    if any(isinstance(n, DENSE_NODES) for n in path.ops) or len(src_shape) == 1:
        if len(dst_shape) != 1:  # the integer search scales per output channel = per dense row
            kinds = sorted({type(n).__name__ for n in path.ops if isinstance(n, DENSE_NODES)})
            raise LoihiConvError(
                f"{where}: the path through {', '.join(kinds)} into a (C, H, W) population is no single "
                "convolution; fixed point supports such upsampling/transposed-conv/replicating paths only "
                "into a Flatten/Linear (a classifier head), not into a spiking feature map yet",
                "evaluate it as a float SNN (loihi-conv evaluate), or replace the upsampling by a strided "
                "Conv2d design")
        return FDense(path.source, _jacobian(path.ops, src_shape, dst_shape), pool)
    m = None
    for node in path.ops:
        nxt = conv_map(node, src_shape[0] if m is None else m.out_channels)
        m = nxt if m is None else compose(m, nxt, tuple(src_shape[1:]), where)
    m = m or identity_map(src_shape[0])  # an identity shortcut
    if (m.out_channels,) + tuple(m.out_hw(src_shape[1:])) != tuple(dst_shape):
        raise LoihiConvError(f"{where}: folded conv gives shape {(m.out_channels,) + m.out_hw(src_shape[1:])}, "
                             f"expected {dst_shape}", "report this graph as a bug")
    return FConv(path.source, m.weight, m.stride, m.padding, m.dilation, m.groups, pool)


def _jacobian(nodes: tuple[ir.Node, ...], src_shape, dst_shape) -> Tensor:
    """The (Nout, Nin) matrix of a bias-free linear chain, by one vjp per output row."""
    nodes = tuple(_float64(n, bias=False) for n in nodes)

    def f(x: Tensor) -> Tensor:
        for n in nodes:
            x = ops.apply(n, x)
        return x.flatten(1)

    x0 = torch.zeros((1,) + tuple(src_shape), dtype=DT)
    n_out = 1
    for s in dst_shape:
        n_out *= int(s)
    if not nodes:  # identity on a vector source
        return torch.eye(n_out, dtype=DT)
    _, vjp = torch.func.vjp(f, x0)
    (rows,) = torch.func.vmap(vjp)(torch.eye(n_out, dtype=DT).unsqueeze(1))
    return rows.reshape(n_out, -1)


def region_value(graph: ir.Graph, name: str, src: dict[str, Tensor]) -> Tensor:
    """Evaluate the linear region ending at node ``name`` with source populations' outputs
    ``src`` (N, *shape) in ANN units, using the ANN ops themselves (biases included)."""
    memo: dict[str, Tensor] = {}

    def ev(n: str) -> Tensor:
        if n in src:
            return src[n].to(DT)
        if n not in memo:
            node = graph[n]
            if isinstance(node, SOURCES):
                raise KeyError(n)
            memo[n] = ops.apply(_float64(node), *[ev(i) for i in node.inputs])
        return memo[n]

    return ev(name)


def _region_bias(graph: ir.Graph, name: str, paths: list[Path], shapes: dict[str, tuple]) -> Tensor | None:
    zeros = {p.source: torch.zeros((1,) + tuple(shapes[p.source]), dtype=DT) for p in paths}
    const = region_value(graph, name, zeros)[0]
    if not bool(const.any()):
        return None
    if const.dim() == 3 and bool((const == const[:, :1, :1]).all()):
        return const[:, 0, 0].clone()  # per channel
    return const.clone()


# ---- max-pools ---------------------------------------------------------------------------------
def _pool_stages(snn: ir.Graph) -> tuple[ir.Graph, dict[str, qir.SpikePool]]:
    """The graph with every MaxPool2d resolved as the float SNN runs it (module doc): replaced by
    its scheme's linear equivalent (``avg``), or mapped to a ``qir.SpikePool`` stage (by name)."""
    from loihi_conv.snn.simulate import static_nodes  # the float SNN's own definition of "static"

    pools = snn.of_type(ir.MaxPool2d)
    if not pools:
        return snn, {}
    snn, scheme, static = snn.copy(), get_pooling(scheme_name(snn)), static_nodes(snn)
    stages = {}
    for node in pools:
        if node.name in static:  # the float SNN applies the ANN max to the analog input
            stages[node.name] = _spike_pool(node, "spike-max")
            continue
        linear = scheme.as_linear(node)
        if linear is None:
            stages[node.name] = _spike_pool(node, scheme.stage)
        else:
            snn.replace(node.name, linear)
    return snn, stages


def _spike_pool(node: ir.MaxPool2d, scheme: str) -> qir.SpikePool:
    return qir.SpikePool(scheme, _pair(node.kernel_size),
                         _pair(node.stride if node.stride is not None else node.kernel_size),
                         _pair(node.padding), bool(node.ceil_mode))


def _floor_mode_avg(snn: ir.Graph) -> ir.Graph:
    """AvgPool2d nodes whose ceil mode adds no window become floor mode: the same windows and
    divisors, so the same op, and then a plain conv (``conv_map``)."""
    out = snn
    for node in snn.of_type(ir.AvgPool2d):
        floor = ir.clone_node(node, ceil_mode=False)
        src = (1,) + tuple(snn[node.inputs[0]].shape)
        if node.ceil_mode and tuple(ops.apply(floor, torch.zeros(src)).shape[1:]) == tuple(node.shape):
            out = snn.copy() if out is snn else out
            out.replace(node.name, floor)
    return out


# ---- the whole graph ---------------------------------------------------------------------------
def fold(snn: ir.Graph) -> list[FBlock]:
    """The folded network: input block, one block per ``ir.Neuron`` (graph order), output block.

    Every block's synapses and bias reproduce the IR region between populations exactly
    (float64), max-pools as the float SNN's scheme runs them; see the module doc for the rules
    and the conv composition formula.
    """
    if any(not n.shape for n in snn if not isinstance(n, ir.Input)) or not snn.input.shape:
        if not snn.input.shape:
            raise LoihiConvError("the graph's Input node has no shape", "set graph.input.shape = (C, H, W)")
        snn = ops.infer_shapes(snn.copy())
    snn, stages = _pool_stages(snn)
    snn = _floor_mode_avg(snn)
    out_node = snn[snn.output]
    if isinstance(out_node, SOURCES):
        raise LoihiConvError(f"the graph output '{snn.output}' is a {type(out_node).__name__}, "
                             "not a non-spiking synapse", "end the network with a Linear/Conv2d output layer")
    shapes = {n.name: tuple(n.shape) for n in snn}
    blocks = [FBlock(snn.input.name, shapes[snn.input.name], "input", [])]
    targets = [(n, n.inputs[0], "hidden") for n in snn.of_type(ir.Neuron)]
    targets.append((out_node, out_node.name, "output"))
    for node, pre, role in targets:
        where = f"block '{node.name}'"
        paths = list(_paths(snn, pre, ()))
        syns = [_fold_path(p, shapes[p.pool.name if p.pool else p.source], shapes[pre],
                           f"{where} (from '{p.source}')", p.pool and stages[p.pool.name])
                for p in paths]
        bias = _region_bias(snn, pre, paths, shapes)
        neuron = node if role == "hidden" else None
        blocks.append(FBlock(node.name, shapes[node.name], role, syns, bias, neuron))
    return blocks


def hops(blocks: list[FBlock]) -> dict[str, int]:
    """Synapse hops from the input to every block along the longest path."""
    h: dict[str, int] = {}
    for b in blocks:
        h[b.name] = max((h[s.source] + 1 for s in b.synapses), default=0)
    return h


def forward(blocks: list[FBlock], x: Tensor, clip: bool = True) -> dict[str, Tensor]:
    """ANN values of every block (float64): hidden = relu (clipped at theta when ``clip``),
    output = its pre-activation. The ANN the SNN approximates (``ops.apply(ir.Neuron)``)."""
    vals = {blocks[0].name: x.to(DT)}
    for b in blocks[1:]:
        z = block_input(b, vals)
        vals[b.name] = _activate(b, z, clip)
    return vals


def _activate(b: FBlock, z: Tensor, clip: bool) -> Tensor:
    if b.role != "hidden":
        return z
    y = z.clamp(min=0)
    if clip:
        y = torch.minimum(y, channel_view(b.threshold, b.shape).unsqueeze(0))
    return y


def pipeline(blocks: list[FBlock], x: Tensor, steps: int, clip: bool = False) -> list[dict[str, Tensor]]:
    """Float values of every block at each of ``steps`` Lava steps: block values at step t are
    computed from their sources at step t-1 (all zero at step 0), the input fixed at x.

    This is the transient an SDNN goes through before it settles on the ANN (reference doc §3.1).
    """
    zero = {b.name: torch.zeros((x.shape[0],) + tuple(b.shape), dtype=DT) for b in blocks}
    prev, out = dict(zero), []  # the input reaches its synapses' targets at step 2
    for _ in range(steps):
        cur = {blocks[0].name: x.to(DT)}
        for b in blocks[1:]:
            cur[b.name] = _activate(b, block_input(b, prev), clip)
        out.append(cur)
        prev = cur
    return out
