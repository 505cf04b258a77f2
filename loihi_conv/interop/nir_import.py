"""NIR graph -> SNN IR (``ir.Graph`` with ``ir.Neuron`` nodes): a NIR network is already spiking,
so it enters the spine where ``convert`` leaves it, and ``quantize`` -> NetX -> Lava and the
emulator run it unchanged. The mapping rules, with their reasons, are in docs/nir.md.

One handler per NIR node class (``HANDLERS``, dispatch on type). Every NIR value is carried as a
``Value``: the IR node producing it and its *amplitude* ``amp`` (the IR value is ``amp * NIR
value``, elementwise over the IR node's shape). A NIR neuron sends 0/1 spikes, an IR neuron
sends ``threshold`` per spike, so a neuron's Value has amp = theta; a synapse reading it divides
its input columns by amp, and a NIR ``Scale`` only changes amp. Continuous-time parameters
become the discrete ``cuba-lif`` neuron with forward Euler at step ``dt``: decays ``dt/tau``,
and the input gains (``dt R / tau``, ``w_in``) fold into the weights and biases of the synapses
that feed the neuron (computed in float64, cast to float32 once at the end).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatch
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops

RESETS = ("zero", "subtract")
MAX_NEURONS = 1 << 24  # per population: far beyond a Loihi 2 chip, small enough to build the graph
MAX_GEOMETRY = 1 << 12  # kernel / stride / padding / dilation / groups values
MAX_READOUT = 1 << 16  # spiking outputs counted by an identity synapse (n x n weights)
FIX_REFUSED = "see docs/nir.md for what each NIR node becomes; export the network without it"


class NIRImportError(LoihiConvError):
    """A NIR graph that loihi-conv cannot carry onto Loihi (the message says which rule)."""


@dataclass
class Value:
    node: str  # the IR node computing it
    amp: torch.Tensor | None = None  # IR value = amp * NIR value (float64, IR node's shape); None = 1


@dataclass
class Ctx:
    dt: float
    reset: str | None
    nodes: dict[str, ir.Node] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)  # NIR node name -> its Value
    users: dict[str, list[str]] = field(default_factory=dict)  # NIR name -> NIR names it feeds
    preds: dict[str, list[str]] = field(default_factory=dict)
    nir_nodes: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, node: ir.Node) -> str:
        if node.name in self.nodes:
            raise NIRImportError(f"node name {node.name!r} is used twice", "rename the NIR nodes")
        self.nodes[node.name] = node
        xs = [torch.zeros((1,) + self.shapes[i], dtype=torch.float64) for i in node.inputs]
        if isinstance(node, ir.Input):
            self.shapes[node.name] = tuple(node.shape)
        elif isinstance(node, ir.Neuron):
            self.shapes[node.name] = self.shapes[node.inputs[0]]
        else:
            try:
                shape = tuple(ops.apply(node, *xs).shape[1:])
                if float(np.prod(shape, dtype=np.float64)) > MAX_NEURONS:
                    raise NIRImportError(f"NIR node {node.name!r} would have shape {shape}, more than "
                                         f"{MAX_NEURONS} values", "check the NIR graph's shapes")
                self.shapes[node.name] = shape
            except RuntimeError as e:
                raise NIRImportError(f"NIR node {node.name!r} does not fit its input of shape "
                                     f"{self.shapes[node.inputs[0]]}: {str(e).splitlines()[0][:160]}",
                                     "check the NIR graph's shapes") from None
        return node.name


# ---- entry points ------------------------------------------------------------------------------
def load_nir(source, dt: float | None = None, reset: str | None = None) -> ir.Graph:
    """SNN IR of a NIR graph (``nir.NIRGraph``) or of a ``.nir`` file.

    ``dt``: the time step of the discretization (default: the graph's ``metadata["dt"]``, else 1).
    ``reset``: "zero" or "subtract" for every spiking neuron (default: each node's
    ``metadata["reset"]``, else NIR's reset to ``v_reset``, which must be 0).
    """
    import nir

    if isinstance(source, (str, Path)):
        from loihi_conv.interop.nir_file import read

        source = read(source)
    if not isinstance(source, nir.NIRGraph):
        raise NIRImportError(f"cannot import a {type(source).__name__} as a NIR graph",
                             "pass a nir.NIRGraph or the path of a .nir file")
    if reset is not None and reset not in RESETS:
        raise NIRImportError(f"reset={reset!r} is not one of {', '.join(RESETS)}", "pass reset='zero' or 'subtract'")
    meta = source.metadata if isinstance(source.metadata, dict) else {}
    dt = _dt(dt if dt is not None else meta.get("dt", 1.0))
    ctx = Ctx(dt, reset)
    order = _structure(source, ctx)
    for name in order:
        node = source.nodes[name]
        handler = HANDLERS.get(type(node))
        if handler is None:
            raise NIRImportError(f"NIR node {name!r}: {REFUSED.get(type(node).__name__, 'unknown node type')}",
                                 FIX_REFUSED)
        handler(name, node, ctx)
    if ctx.output is None:
        raise NIRImportError("the NIR graph has no Output node fed by the network", "add a nir.Output node")
    graph = ir.Graph({n: _float32(node) for n, node in ctx.nodes.items()}, ctx.output,
                     meta={"source": "nir", "nir_dt": ctx.dt, "notes": ctx.notes})
    return ops.infer_shapes(graph)


def _dt(value) -> float:
    try:
        dt = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise NIRImportError(f"dt={value!r} is not a number", "pass dt as a positive float, e.g. dt=1e-3") from None
    if not np.isfinite(dt) or dt <= 0:
        raise NIRImportError(f"dt={dt} must be positive and finite", "pass e.g. dt=1e-3")
    return dt


def _structure(g, ctx: Ctx) -> list[str]:
    """Topological order of the NIR nodes; refuses dangling edges, cycles, several inputs."""
    nodes = g.nodes if isinstance(g.nodes, dict) else {}
    if not nodes:
        raise NIRImportError("the NIR graph has no nodes", "pass a NIR graph with Input, layers and Output")
    ctx.nir_nodes = dict(nodes)
    ctx.users = {n: [] for n in nodes}
    ctx.preds = {n: [] for n in nodes}
    for edge in g.edges or []:
        if not isinstance(edge, (tuple, list)) or len(edge) != 2:
            raise NIRImportError(f"NIR edge {edge!r} is not a (source, target) pair", "fix the graph's edges")
        a, b = (str(e) for e in edge)
        for end in (a, b):
            if end not in nodes:
                raise NIRImportError(f"NIR edge {a!r} -> {b!r} names the unknown node {end!r}",
                                     "fix the graph's edges (subgraph ports 'graph.node' are not supported)")
        ctx.users[a].append(b)
        ctx.preds[b].append(a)
    import nir

    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise NIRImportError(f"the NIR graph has {len(inputs)} Input nodes", "the SNN IR takes exactly one input")
    order, pending = [], {n: len(p) for n, p in ctx.preds.items()}
    ready = [n for n, k in pending.items() if k == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for u in ctx.users[n]:
            pending[u] -= 1
            if pending[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        cyc = sorted(n for n, k in pending.items() if k > 0)
        raise NIRImportError(f"the NIR graph is recurrent (a cycle through {', '.join(cyc[:4])}); the Loihi "
                             "targets here run feed-forward networks", "export a feed-forward network")
    stray = [n for n in order if not ctx.preds[n] and n != inputs[0]]
    if stray:
        raise NIRImportError(f"NIR node(s) {', '.join(stray)} have no input", "connect them or remove them")
    return order


# ---- helpers -------------------------------------------------------------------------------
def _arr(name: str, node, key: str, ndim: int | None = None) -> np.ndarray:
    """Field ``key`` of a NIR node as a finite float64 array (one clear error otherwise)."""
    raw = getattr(node, key, None)
    if raw is None:
        raise NIRImportError(f"NIR node {name!r} ({type(node).__name__}) has no field {key!r}", "add it")
    try:
        a = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise NIRImportError(f"NIR node {name!r}: field {key!r} is {type(raw).__name__}, not numbers",
                             "store it as a numeric array") from None
    if ndim is not None and a.ndim != ndim:
        raise NIRImportError(f"NIR node {name!r}: field {key!r} has shape {a.shape}, expected {ndim} dimensions",
                             "check the NIR node's fields")
    if not np.isfinite(a).all():
        raise NIRImportError(f"NIR node {name!r}: field {key!r} holds NaN or inf", "store finite values")
    return a


def _ints(name: str, node, key: str, n: int) -> tuple[int, ...]:
    a = _arr(name, node, key)
    if a.size == 1:
        a = np.repeat(a.reshape(-1), n)
    if a.shape != (n,) or not np.all(a == np.round(a)) or np.any(a < 0) or np.any(a > MAX_GEOMETRY):
        raise NIRImportError(f"NIR node {name!r}: {key}={a.reshape(-1)[:4].tolist()} is not {n} integers in "
                             f"[0, {MAX_GEOMETRY}]", "check the NIR node's fields")
    return tuple(int(v) for v in a)


def _input(name: str, ctx: Ctx) -> Value:
    """The Value feeding NIR node ``name``: its one predecessor, or an Add over several (NIR sums
    fan-in); all of them must have the same amplitude."""
    preds = ctx.preds[name]
    vals = [ctx.values[p] for p in preds]
    if len(vals) == 1:
        return vals[0]
    amps = [v.amp for v in vals]
    if any((a is None) != (amps[0] is None) or (a is not None and not torch.equal(a, amps[0])) for a in amps):
        raise NIRImportError(f"NIR node {name!r} sums inputs of different spike amplitudes (neurons with "
                             "different thresholds, or a Scale on one branch)",
                             "give the populations joined there the same thresholds")
    add = ctx.add(ir.Add(f"{name}_sum", tuple(v.node for v in vals)))
    return Value(add, amps[0])


def _channel_vector(name: str, what: str, a: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """A NIR per-neuron parameter (any shape broadcasting to ``shape``) as one value per channel
    (C,), refused when it varies within a channel of a (C, H, W) population."""
    try:
        full = np.broadcast_to(a, shape).astype(np.float64)
    except ValueError:
        raise NIRImportError(f"NIR node {name!r}: {what} has shape {a.shape}, the population {shape}",
                             "give one value per neuron or a scalar") from None
    per_c = full.reshape(shape[0], -1)
    if not np.all(per_c == per_c[:, :1]):
        raise NIRImportError(f"NIR node {name!r}: {what} varies within a channel; a convolutional population "
                             "shares its weights, so only per-channel values can be carried",
                             "use per-channel (or per-layer) values")
    return torch.from_numpy(per_c[:, 0].copy())


def _amp_columns(name: str, amp: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    if amp is None:
        return None
    if torch.any(amp == 0):
        raise NIRImportError(f"NIR node {name!r} reads a signal scaled by 0 (a Scale of 0)", "remove it")
    return amp.reshape(shape)


# ---- node handlers -------------------------------------------------------------------------
HANDLERS: dict[type, Callable[[str, Any, Ctx], None]] = {}


def handles(*types: type):
    def deco(fn):
        for t in types:
            HANDLERS[t] = fn
        return fn
    return deco


def _register() -> None:
    import nir

    @handles(nir.Input)
    def _input_node(name, node, ctx):
        shape = node.input_type.get("input") if isinstance(node.input_type, dict) else None
        try:
            dims = np.asarray(shape, dtype=np.float64).reshape(-1) if shape is not None else None
        except (TypeError, ValueError):
            dims = None
        if dims is None or dims.size == 0 or not np.all(np.isfinite(dims)) or np.any(dims < 1) \
                or not np.all(dims == np.round(dims)):
            raise NIRImportError(f"NIR Input {name!r} has no valid shape ({shape!r})", "give the Input a shape, "
                                 "e.g. nir.Input(input_type=np.array([2, 16, 16]))")
        dims = tuple(int(d) for d in dims)
        if float(np.prod(dims, dtype=np.float64)) > MAX_NEURONS:
            raise NIRImportError(f"NIR Input {name!r} declares shape {dims}, more than {MAX_NEURONS} inputs",
                                 "check the file: no Loihi 2 network takes that many inputs")
        if len(dims) in (2, 4) and dims[0] == 1:  # a batch axis of 1 (Norse writes one)
            dims = dims[1:]
            ctx.notes.append(f"Input '{name}': leading batch axis of 1 dropped")
        if len(dims) not in (1, 3):
            raise NIRImportError(f"NIR Input {name!r} has shape {dims}; the SNN IR takes (N,) or (C, H, W)",
                                 "reshape the input to (C, H, W) or flatten it")
        ctx.values[name] = Value(ctx.add(ir.Input(name, (), shape=dims)))

    @handles(nir.Output)
    def _output(name, node, ctx):
        src = _input(name, ctx)
        out = ctx.nodes[src.node]
        if isinstance(out, ir.Neuron):  # a spiking output layer: the readout counts its spikes
            shape = ctx.shapes[out.name]
            if int(np.prod(shape)) > MAX_READOUT:
                raise NIRImportError(f"NIR Output {name!r} reads {int(np.prod(shape))} spiking neurons; the spike-count "
                                     f"readout takes at most {MAX_READOUT}", "end the network with a smaller layer")
            amp = src.amp.reshape(-1)
            if len(shape) > 1:
                out = ctx.nodes[ctx.add(ir.Flatten(f"{name}_flat", (out.name,)))]
            w = torch.diag(1.0 / amp)
            out = ctx.nodes[ctx.add(ir.Linear(f"{name}_counts", (out.name,), weight=w, bias=None))]
            ctx.notes.append(f"output '{name}': spike counts of '{src.node}' (identity readout synapse)")
        elif src.amp is not None:
            _fold(ctx, src.node, 1.0 / _channel_of(name, src.amp, ctx.shapes[src.node]))
        if not isinstance(out, (ir.Linear, ir.Conv2d)):
            raise NIRImportError(f"NIR Output {name!r} is fed by a {type(out).__name__}; the readout needs a "
                                 "synapse or a spiking layer", "end the network with a layer before Output")
        ctx.output = out.name

    @handles(nir.Affine, nir.Linear)
    def _dense(name, node, ctx):
        src = _input(name, ctx)
        shape = ctx.shapes[src.node]
        w = _arr(name, node, "weight", 2)
        if len(shape) != 1 or w.shape[1] != shape[0]:
            raise NIRImportError(f"NIR {type(node).__name__} {name!r}: weight {w.shape} does not fit its input "
                                 f"of shape {shape}", "add a Flatten before dense layers")
        wt = torch.from_numpy(w)
        amp = _amp_columns(name, src.amp, shape)
        if amp is not None:
            wt = wt / amp[None, :]
        bias = torch.from_numpy(_arr(name, node, "bias", 1)) if isinstance(node, nir.Affine) else None
        if bias is not None and bias.shape != (w.shape[0],):
            raise NIRImportError(f"NIR Affine {name!r}: bias {tuple(bias.shape)} for weight {w.shape}",
                                 "give one bias per output")
        ctx.values[name] = Value(ctx.add(ir.Linear(name, (src.node,), weight=wt, bias=bias)))

    @handles(nir.Conv2d)
    def _conv(name, node, ctx):
        src = _input(name, ctx)
        shape = ctx.shapes[src.node]
        w = _arr(name, node, "weight", 4)
        groups = int(_ints(name, node, "groups", 1)[0])
        if len(shape) != 3 or groups < 1 or shape[0] % groups or w.shape[1] * groups != shape[0] \
                or w.shape[0] % groups:
            raise NIRImportError(f"NIR Conv2d {name!r}: weight {w.shape} (groups {groups}) does not fit its input "
                                 f"of shape {shape}", "check the layer's channels")
        stride = _ints(name, node, "stride", 2)
        dilation = _ints(name, node, "dilation", 2)
        padding = _padding(name, node, w.shape[2:], stride, dilation)
        wt = torch.from_numpy(w)
        if src.amp is not None:
            amp_c = _channel_of(name, src.amp, shape)
            co, cig = w.shape[0], w.shape[1]
            in_ch = (torch.arange(co)[:, None] // (co // groups)) * cig + torch.arange(cig)[None, :]
            wt = wt / amp_c[in_ch][:, :, None, None]
        bias = torch.from_numpy(_arr(name, node, "bias")).reshape(-1)
        if bias.numel() == 1 and w.shape[0] != 1:
            bias = bias.expand(w.shape[0]).clone()
        if bias.shape != (w.shape[0],):
            raise NIRImportError(f"NIR Conv2d {name!r}: bias {tuple(bias.shape)} for {w.shape[0]} channels",
                                 "give one bias per output channel")
        ctx.values[name] = Value(ctx.add(ir.Conv2d(name, (src.node,), weight=wt, bias=bias, stride=stride,
                                                   padding=padding, dilation=dilation, groups=groups)))

    @handles(nir.SumPool2d, nir.AvgPool2d)
    def _pool(name, node, ctx):
        src = _input(name, ctx)
        shape = ctx.shapes[src.node]
        if len(shape) != 3:
            raise NIRImportError(f"NIR {type(node).__name__} {name!r} on an input of shape {shape}",
                                 "pool (C, H, W) maps only")
        k, s, p = (_ints(name, node, f, 2) for f in ("kernel_size", "stride", "padding"))
        if isinstance(node, nir.AvgPool2d):
            new = ir.AvgPool2d(name, (src.node,), kernel_size=k, stride=s, padding=p)
        else:  # a sum: a depthwise all-ones convolution, exact in the IR and folded by the quantizer
            c = shape[0]
            new = ir.Conv2d(name, (src.node,), weight=torch.ones((c, 1) + k, dtype=torch.float64), bias=None,
                            stride=s, padding=p, groups=c)
        out = ctx.add(new)
        amp = None
        if src.amp is not None:
            amp_c = _channel_of(name, src.amp, shape)
            amp = amp_c.reshape(-1, 1, 1).expand(ctx.shapes[out]).clone()
        ctx.values[name] = Value(out, amp)

    @handles(nir.Flatten)
    def _flatten(name, node, ctx):
        src = _input(name, ctx)
        shape = ctx.shapes[src.node]
        declared = node.input_type.get("input") if isinstance(node.input_type, dict) else None
        start = int(np.asarray(node.start_dim).reshape(()))
        end = int(np.asarray(node.end_dim).reshape(()))
        nd = len(declared) if declared is not None else len(shape)
        offset = nd - len(shape)  # 1 when the declared shape has a batch axis
        if offset not in (0, 1) or start % nd != offset or end % nd != nd - 1:
            raise NIRImportError(f"NIR Flatten {name!r} (dims {start}..{end} of {declared}) is a partial "
                                 f"flatten of {shape}; the IR flattens whole (C, H, W) maps",
                                 "flatten every axis but the batch axis")
        if len(shape) == 1:
            ctx.values[name] = src
            return
        out = ctx.add(ir.Flatten(name, (src.node,)))
        ctx.values[name] = Value(out, None if src.amp is None else src.amp.reshape(-1))

    @handles(nir.Scale)
    def _scale(name, node, ctx):
        src = _input(name, ctx)
        shape = ctx.shapes[src.node]
        s = _arr(name, node, "scale")
        try:
            s = torch.from_numpy(np.broadcast_to(s, shape).copy())
        except ValueError:
            raise NIRImportError(f"NIR Scale {name!r}: scale {s.shape} does not fit {shape}",
                                 "give one factor per element") from None
        if torch.any(s == 0):
            raise NIRImportError(f"NIR Scale {name!r} has zero factors", "drop those connections instead")
        amp = torch.ones(shape, dtype=torch.float64) if src.amp is None else src.amp
        ctx.values[name] = Value(src.node, amp / s)  # IR value = amp * x = (amp / s) * (s * x)

    @handles(nir.Delay)
    def _delay(name, node, ctx):
        d = _arr(name, node, "delay")
        if np.any(d != 0):
            raise NIRImportError(f"NIR Delay {name!r}: per-neuron delays are not carried (only NetX dense synapses "
                                 "have delays, and not per source neuron)", "remove the Delay node")
        ctx.values[name] = _input(name, ctx)

    @handles(nir.IF, nir.LIF, nir.CubaLIF, nir.Threshold)
    def _neuron(name, node, ctx):
        src = _input(name, ctx)
        shape = ctx.shapes[src.node]
        model = NEURON_RULES[type(node)](name, node, ctx.dt)
        theta = _channel_vector(name, "the threshold", model.pop("threshold"), shape)
        if torch.any(theta <= 0):
            raise NIRImportError(f"NIR node {name!r}: thresholds must be positive (min {float(theta.min())})",
                                 "use positive thresholds")
        gain = _channel_vector(name, "the input gain (dt R / tau, w_in)", model.pop("gain"), shape)
        leak = _channel_vector(name, "the leak input (dt v_leak / tau)", model.pop("leak"), shape)
        if src.amp is not None:
            gain = gain / _channel_of(name, src.amp, shape)
        _fold(ctx, src.node, gain)
        if torch.any(leak != 0):
            _add_bias(ctx, src.node, leak)
        reset = _reset(name, node, ctx)
        params = {"du": model["du"], "dv": model["dv"], "reset": reset, "compare": model["compare"]}
        kind = "cuba-lif"
        if params["du"] == 1.0 and params["dv"] == 0.0 and params["compare"] == "ge":  # exactly ours
            kind, params = ("if-soft" if reset == "subtract" else "if-zero"), {}
        ctx.values[name] = Value(ctx.add(ir.Neuron(name, (src.node,), model=kind, threshold=theta,
                                                   params=params)),
                                 theta.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape).clone())

    @handles(nir.I)
    def _integrator(name, node, ctx):
        src = _input(name, ctx)
        if [type(ctx.nir_nodes[u]) for u in ctx.users[name]] != [nir.Output]:
            raise NIRImportError(f"NIR Integrator {name!r} feeds other layers; on Loihi a non-spiking integrator "
                                 "is only the readout", "use it only as the last layer before Output")
        r = _channel_vector(name, "R", _arr(name, node, "r"), ctx.shapes[src.node]) * ctx.dt
        if src.amp is not None:
            r = r / _channel_of(name, src.amp, ctx.shapes[src.node])
        _fold(ctx, src.node, r)
        ctx.values[name] = Value(src.node)
        ctx.notes.append(f"Integrator '{name}': the readout accumulates its input (dt R folded into '{src.node}')")


REFUSED = {  # one line per NIR node kind that is not carried, and why
    "LI": "a leaky non-spiking integrator: the Loihi readout accumulates without leak and hidden Loihi "
          "neurons send spikes, so LI is not carried (end with a spiking layer or an Integrator)",
    "CubaLI": "a current-based leaky non-spiking integrator: not carried, for the reason given for LI",
    "Conv1d": "1-D convolutions are not carried: the SNN IR is 2-D (write it as a Conv2d with a (1, k) kernel)",
    "NIRGraph": "nested subgraphs (e.g. recurrent cells) are not carried: flatten the graph",
    "Identity": "Identity nodes are not carried: remove them",
}


def _channel_of(name: str, amp: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return _channel_vector(name, "the incoming spike amplitude", amp.reshape(shape).numpy(), shape)


def _padding(name, node, kernel, stride, dilation) -> tuple[int, int]:
    pad = node.padding
    if isinstance(pad, (bytes, np.bytes_)):
        pad = pad.decode()
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0)
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if pad == "same" and all(s == 1 for s in stride) and all(t % 2 == 0 for t in total):
            return tuple(t // 2 for t in total)
        raise NIRImportError(f"NIR Conv2d {name!r}: padding {pad!r} is asymmetric here", "use explicit padding")
    return _ints(name, node, "padding", 2)


def _reset(name: str, node, ctx: Ctx) -> str:
    if ctx.reset is not None:
        return ctx.reset
    meta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
    chosen = meta.get("reset")
    if isinstance(chosen, (bytes, np.bytes_)):
        chosen = chosen.decode()
    if chosen is not None:
        if chosen not in RESETS:
            raise NIRImportError(f"NIR node {name!r}: metadata reset={chosen!r}", f"use one of {', '.join(RESETS)}")
        return chosen
    v_reset = getattr(node, "v_reset", None)
    if v_reset is not None and np.any(np.asarray(v_reset, dtype=np.float64) != 0):
        raise NIRImportError(f"NIR node {name!r}: reset to v_reset != 0; Loihi's neurons reset to 0 (or subtract "
                             "the threshold)", "use v_reset = 0, or import with reset='subtract'")
    return "zero"


def _meta_decay(node, key: str, d: float) -> float:
    """Our own files also store the decay itself: 1 / (1 / d) can be one ulp off d."""
    meta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
    try:
        m = float(np.asarray(meta[key]).reshape(()))
    except (KeyError, TypeError, ValueError):
        return d
    return m if abs(m - d) <= 1e-12 * max(abs(d), 1e-300) else d


def _unit(g: np.ndarray) -> np.ndarray:
    """Gains within rounding of 1 (tau / tau, w_in * du) are 1: the neuron then keeps its weights bit for bit."""
    return np.where(np.abs(g - 1.0) <= 4e-16, 1.0, g)


def _decay(name: str, what: str, dt: float, tau: np.ndarray) -> float:
    if np.any(tau <= 0):
        raise NIRImportError(f"NIR node {name!r}: {what} must be positive", "check the time constants")
    d = dt / tau
    if not np.all(d == d.reshape(-1)[0]):
        raise NIRImportError(f"NIR node {name!r}: {what} differs between neurons; a NetX CUBA layer has one "
                             "decay", "use one time constant per layer")
    d = float(d.reshape(-1)[0])
    if d > 1.0:
        raise NIRImportError(f"NIR node {name!r}: dt / {what} = {d:.4g} > 1; forward Euler at this dt is unstable",
                             f"import with a smaller dt (now {dt}) or check the time constants")
    return d


def _if_rule(name, node, dt):
    r = _arr(name, node, "r")
    return {"threshold": _arr(name, node, "v_threshold"), "gain": dt * r, "leak": np.zeros(1),
            "du": 1.0, "dv": 0.0, "compare": _compare(node)}


def _lif_rule(name, node, dt):
    tau, r, v_leak = (_arr(name, node, k) for k in ("tau", "r", "v_leak"))
    dv = _meta_decay(node, "dv", _decay(name, "tau", dt, tau))
    return {"threshold": _arr(name, node, "v_threshold"), "gain": _unit(dt * r / tau), "leak": dt * v_leak / tau,
            "du": 1.0, "dv": dv, "compare": _compare(node)}


def _cuba_lif_rule(name, node, dt):
    ts, tm, r, v_leak, w_in = (_arr(name, node, k) for k in ("tau_syn", "tau_mem", "r", "v_leak", "w_in"))
    if np.any(v_leak != 0):
        raise NIRImportError(f"NIR CubaLIF {name!r}: v_leak != 0 is not carried (Loihi adds biases to v, the "
                             "NIR leak term too, but its float model here integrates them through I)",
                             "use v_leak = 0")
    du = _meta_decay(node, "du", _decay(name, "tau_syn", dt, ts))
    dv = _meta_decay(node, "dv", _decay(name, "tau_mem", dt, tm))
    # I += du (w_in S - I); v += dv (R I - v): scale u by dt R / tau_mem so that v += u as on Loihi
    return {"threshold": _arr(name, node, "v_threshold"), "gain": _unit(du * w_in * dt * r / tm), "leak": np.zeros(1),
            "du": du, "dv": dv, "compare": _compare(node)}


def _threshold_rule(name, node, dt):
    return {"threshold": _arr(name, node, "threshold"), "gain": np.ones(1), "leak": np.zeros(1),
            "du": 1.0, "dv": 1.0, "compare": "gt"}


def _compare(node) -> str:
    """NIR fires on v > theta; our own files say "ge" in metadata (``nir_export``)."""
    meta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
    c = meta.get("compare", "gt")
    if isinstance(c, (bytes, np.bytes_)):
        c = c.decode()
    return c if c in ("gt", "ge") else "gt"


NEURON_RULES: dict[type, Callable] = {}


def _neuron_rules() -> None:
    import nir

    NEURON_RULES.update({nir.IF: _if_rule, nir.LIF: _lif_rule, nir.CubaLIF: _cuba_lif_rule,
                         nir.Threshold: _threshold_rule})


# ---- folding gains into synapses -------------------------------------------------------------
@singledispatch
def _fold_node(node: ir.Node, ctx: Ctx, g: torch.Tensor) -> None:
    raise NIRImportError(f"a neuron's input gain cannot be folded through {type(node).__name__} '{node.name}'",
                         "feed every neuron from a Conv2d / Affine / Linear (or a sum of them)")


@_fold_node.register
def _(node: ir.Linear, ctx: Ctx, g: torch.Tensor) -> None:
    node.weight = node.weight * g[:, None]
    node.bias = None if node.bias is None else node.bias * g


@_fold_node.register
def _(node: ir.Conv2d, ctx: Ctx, g: torch.Tensor) -> None:
    node.weight = node.weight * g[:, None, None, None]
    node.bias = None if node.bias is None else node.bias * g


@_fold_node.register
def _(node: ir.Add, ctx: Ctx, g: torch.Tensor) -> None:
    for i in node.inputs:
        _fold(ctx, i, g, via=node.name)


@_fold_node.register
def _(node: ir.AvgPool2d, ctx: Ctx, g: torch.Tensor) -> None:
    _fold(ctx, node.inputs[0], g, via=node.name)


def _fold(ctx: Ctx, name: str, g: torch.Tensor, via: str | None = None) -> None:
    """Multiply the output of IR node ``name`` by ``g`` per channel, inside its synapses (``via``:
    the node of this fold that reads it; any other reader would see the change too)."""
    if torch.all(g == 1):
        return
    users = [n for n in ctx.nodes.values() if name in n.inputs and n.name != via]
    if users:
        raise NIRImportError(f"synapse '{name}' feeds {len(users)} layers, so a neuron's gain cannot be folded "
                             "into it", "give each neuron population its own synapse")
    _fold_node(ctx.nodes[name], ctx, g.to(torch.float64))


def _add_bias(ctx: Ctx, name: str, b: torch.Tensor) -> None:
    node = ctx.nodes[name]
    while isinstance(node, (ir.Add, ir.AvgPool2d)):  # a constant per channel passes an average pool
        node = ctx.nodes[node.inputs[0]]
    if not isinstance(node, (ir.Linear, ir.Conv2d)):
        raise NIRImportError(f"a neuron's leak cannot be added to {type(node).__name__} '{name}'",
                             "feed the neuron from a Conv2d / Affine / Linear")
    node.bias = b.clone() if node.bias is None else node.bias + b


def _float32(node: ir.Node) -> ir.Node:
    for key in ("weight", "bias", "threshold"):
        t = getattr(node, key, None)
        if isinstance(t, torch.Tensor):
            setattr(node, key, t.to(torch.float32).contiguous())
    return node


_register()
_neuron_rules()

__all__ = ["load_nir", "NIRImportError", "HANDLERS", "REFUSED"]
