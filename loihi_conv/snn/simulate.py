"""Float SNN simulator: runs an SNN IR graph (``ir.Neuron`` instead of ReLU) on batched torch
tensors, one pass for every requested readout window T.

Semantics (docs/architecture.md, "Float SNN semantics"):
* the analog input x (N, C, H, W) is applied every step (direct input);
* every non-neuron node is ``ops.apply`` -- the ANN's own op -- so ANN and SNN share the same
  linear algebra, biases included (a bias is a constant current every step, from step 1);
* an ``ir.Neuron`` steps its registered model (``loihi_conv.snn.neurons``) and outputs
  ``spikes * threshold`` (ANN units);
* the output node feeds the graph's readout scheme (``loihi_conv.snn.readouts``, ``Recipe.output``):
  by default a non-spiking accumulator, the prediction being the sum of its value over every
  step run.

Time structure. ``delay=0``: everything propagates within a step; "T" runs T steps.
``delay=1`` (Lava, and the fixed-point emulator): a synapse at step t sends what it computed
from its input at t-1, its buffer starting at 0. The simulator implements this as a one-step
buffer on every *source* (the input and each neuron population): every synapse path
(Conv2d/Linear plus the avg-pool/flatten/add around it, which add no delay) reads its sources'
values from the previous step, zeros at step 1. That is the per-synapse delay whenever each
path between two populations crosses one Conv2d/Linear -- the only structure Lava can run; an
identity shortcut counts as one hop (on Loihi it needs an identity synapse) and two synapses
with no neuron between count as one (the quantizer merges them). A population at ``level`` h
(synapse hops from the input, longest path) first sees the input at step h+1; the output, at
``depth`` L, at step L+1. "T" then runs T+L steps: the readout sums all T+L steps, of which T
carry input (plus L steps of bias alone, as on Loihi).

Recorded counts for "T" are the spikes over exactly the steps run for T (T+L with delay, T
without). ``SimResult.rates`` divides them by the population's *window*, the steps on which it
received input: ``T + L - h`` with delay, ``T`` without.

Layouts: x is (N, *input shape), or an event stream (N, T_in, *input shape) whose frame
x[:, (t-1) % T_in] is applied at step t (as the emulator and the Lava runner do); outputs (N, classes); counts (N, C, H, W) per neuron
(``record="neuron"``) or (N, C) summed over positions (``record="channel"``, the default).
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Callable, Iterator, Sequence

import torch

from loihi_conv.base import devices
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.registry import lookup
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.neurons import NEURON_MODELS, NeuronModel, get_neuron_model
from loihi_conv.snn.pooling import PoolScheme, get_pooling, scheme_name
from loihi_conv.snn.readouts import make_readout
from loihi_conv.snn.timeblocks import run_lanes

Tensor = torch.Tensor
SOURCES = (ir.Input, ir.Neuron)  # nodes whose output crosses a synapse (delayed with delay=1)
RECORD_MODES = {True: "channel", "channel": "channel", "neuron": "neuron", False: "none", "none": "none"}


# ---- static structure ------------------------------------------------------------------------
def levels(graph: ir.Graph) -> dict[str, int]:
    """Synapse hops from the input to every node along the longest path (sources count one hop
    to whatever reads them); ``levels(g)[g.output]`` is the depth L (``QNetwork.depth``)."""
    lv: dict[str, int] = {}
    for node in graph:
        if isinstance(node, ir.Input):
            lv[node.name] = 0
            continue
        lv[node.name] = max(lv[i] + (1 if isinstance(graph[i], SOURCES) else 0) for i in node.inputs)
    return lv


def static_nodes(graph: ir.Graph) -> set[str]:
    """Non-source nodes fed only by the input: constant over time, computed once per batch."""
    static: set[str] = set()
    for node in graph:
        if not isinstance(node, SOURCES) and all(isinstance(graph[i], ir.Input) or i in static
                                                 for i in node.inputs):
            static.add(node.name)
    return static


def to_device(graph: ir.Graph, dev: torch.device) -> ir.Graph:
    """A copy of ``graph`` whose tensors (weights, thresholds, per-neuron params) live on ``dev``."""
    def move(value):
        return value.to(dev) if isinstance(value, Tensor) else value
    out = ir.Graph({}, graph.output, dict(graph.meta))
    for node in graph:
        changes = {f: move(getattr(node, f)) for f in vars(node) if isinstance(getattr(node, f), Tensor)}
        if isinstance(node, ir.Neuron):
            changes["params"] = {k: move(v) for k, v in node.params.items()}
        out.nodes[node.name] = ir.clone_node(node, **changes)
    return out


# ---- result --------------------------------------------------------------------------------
@dataclass
class SimResult:
    """What one ``simulate`` run recorded, keyed by readout window T.

    ``output[T]``: (N, classes) class scores over the steps run for T, the argmax being the
    prediction: the output potential summed over those steps with the default readout, spike
    counts (ties broken by potential) with ``Recipe.output`` "spikes"/"softmax" (``outputs``).
    ``counts[T][name]``: spike counts of Neuron ``name`` over the same steps, (N, C) or
    (N, C, H, W) (see ``record``). ``levels[name]``: synapse hops from the input.
    """

    timesteps: tuple[int, ...]
    delay: int
    depth: int
    record: str
    levels: dict[str, int]
    thresholds: dict[str, Tensor]
    positions: dict[str, int]
    output: dict[int, Tensor] = field(default_factory=dict)
    counts: dict[int, dict[str, Tensor]] = field(default_factory=dict)

    @property
    def steps_run(self) -> int:
        return self.steps(max(self.timesteps))

    def steps(self, T: int) -> int:
        """Steps run for readout window T: T + depth with delay, T without."""
        return T + self.depth * self.delay

    def window(self, T: int, name: str) -> int:
        """Steps on which Neuron ``name`` received input within the run for T."""
        return self.steps(T) - self.levels[name] * self.delay

    def rates(self, T: int) -> dict[str, Tensor]:
        """Spikes per neuron per step over each population's window (same layout as counts)."""
        def neurons(name: str) -> int:  # neurons summed into one recorded count
            return 1 if self.record == "neuron" else self.positions[name]
        return {name: c / (self.window(T, name) * neurons(name)) for name, c in self.counts[T].items()}

    def spikes_per_sample(self, T: int) -> dict[str, float]:
        """Mean number of spikes per sample of each population over the steps run for T."""
        return {name: float(c.sum()) / c.shape[0] for name, c in self.counts[T].items()}

    def activations(self, T: int) -> dict[str, Tensor]:
        """Rate times threshold: the SNN's estimate of the clipped ANN activation (ANN units)."""
        out = {}
        for name, r in self.rates(T).items():
            th = self.thresholds[name].reshape((1, -1) + (1,) * (r.dim() - 2))
            out[name] = r * th
        return out

    def mean_output(self, T: int) -> Tensor:
        """Scores / T; with the potential readout, the estimate of the ANN output (N, classes)."""
        return self.output[T] / T

    def predictions(self, T: int) -> Tensor:
        return self.output[T].argmax(dim=1)

    def accuracy(self, labels: Tensor) -> dict[int, float]:
        """Top-1 accuracy per T against ``labels`` (N,)."""
        labels = torch.as_tensor(labels)
        n = self.output[self.timesteps[0]].shape[0]
        if labels.shape != (n,):
            raise LoihiConvError(f"labels have shape {tuple(labels.shape)}, the run has {n} samples",
                                 "pass one integer label per simulated sample")
        return {T: float((self.predictions(T) == labels).float().mean()) for T in self.timesteps}


# ---- one step of one node ------------------------------------------------------------------
class _Run:
    """Per-batch simulation state."""

    def __init__(self, graph: ir.Graph, x: Tensor, delay: int, static: set[str]):
        self.graph, self.x, self.delay, self.static = graph, x, delay, static
        self.sources = {n.name for n in graph if isinstance(n, SOURCES)}
        self.values: dict[str, Tensor] = {}
        self.prev: dict[str, Tensor] = {}  # sources' values at the previous step (delay=1)
        self.cache: dict[tuple[str, bool], Tensor] = {}
        self.state: dict[str, dict[str, Tensor]] = {}
        self.models: dict[str, NeuronModel] = {}
        self.counts: dict[str, Tensor] = {}
        self.buffers: dict[str, list[Tensor]] = {}
        self.pools: dict[str, tuple[PoolScheme, dict[str, Tensor]]] = {}  # stateful max-pools
        self.t = 0
        self.first = True

    def read(self, name: str) -> Tensor:
        if self.delay and name in self.sources:
            return self.prev[name]
        return self.values[name]

    def step(self) -> None:
        for node in self.graph:
            self.values[node.name] = _evaluate(node, self)
        if self.delay:
            self.prev = {n: self.values[n] for n in self.sources}
        self.first = False
        self.t += 1


@singledispatch
def _evaluate(node: ir.Node, run: _Run) -> Tensor:
    # Synapse path (Conv2d, Linear, AvgPool2d, Flatten, Add, ...): the ANN op on the inputs.
    key = (node.name, run.first and bool(run.delay))  # static inputs differ only at step 1
    if node.name in run.static and key in run.cache:
        return run.cache[key]
    out = ops.apply(node, *[run.read(i) for i in node.inputs])
    if node.name in run.static:
        run.cache[key] = out
    return out


@_evaluate.register
def _(node: ir.Input, run: _Run) -> Tensor:
    x = run.x if run.x.dim() == len(node.shape) + 1 else run.x[:, run.t % run.x.shape[1]]  # event stream
    if run.first and run.delay:
        run.prev[node.name] = torch.zeros_like(x)  # nothing has crossed a synapse yet
    return x


@_evaluate.register
def _(node: ir.MaxPool2d, run: _Run) -> Tensor:
    # A max over spike values is not the max rate (loihi_conv.snn.pooling): spiking inputs go to the
    # graph's stateful scheme; a max-pool of the static analog input stays the ANN op.
    if node.name in run.static:
        return _evaluate.dispatch(ir.Node)(node, run)
    x = run.read(node.inputs[0])
    if node.name not in run.pools:
        scheme = get_pooling(scheme_name(run.graph))
        run.pools[node.name] = (scheme, scheme.init_state(node, x))
    scheme, state = run.pools[node.name]
    return scheme.step(node, state, x)


@_evaluate.register
def _(node: ir.Neuron, run: _Run) -> Tensor:
    current = run.read(node.inputs[0])
    if node.name not in run.state:
        shape = tuple(current.shape)
        run.models[node.name] = get_neuron_model(node.model)
        run.state[node.name] = run.models[node.name].init_state(shape, node, current.dtype)
        run.counts[node.name] = torch.zeros_like(current)
        # Output buffers, reused every step; two alternate with delay so the previous step's
        # spikes (read by the synapses this step) survive until the next step.
        run.buffers[node.name] = [torch.empty_like(current) for _ in range(1 + run.delay)]
        if run.delay:
            run.prev.setdefault(node.name, torch.zeros_like(current))
    state = run.state[node.name]
    if run.t < node.params.get("clamp_steps", 0):  # voltage clamp (Rueckauer 2016 §2.3): v held at v(0),
        out = run.buffers[node.name][run.t % len(run.buffers[node.name])]  # no input integrated, no spikes
        return out.zero_()
    spikes = run.models[node.name].step(state, current)
    run.counts[node.name].add_(spikes)
    out = run.buffers[node.name][run.t % len(run.buffers[node.name])]
    return torch.mul(spikes, state["theta"], out=out)


# ---- engines: one batch, every step in order -------------------------------------------------
ENGINES: dict[str, Callable] = {}


def _engine(name: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        ENGINES[name] = fn
        return fn
    return deco


@_engine("step")
def _run_steps(graph: ir.Graph, x: Tensor, delay: int, static: set[str], steps: int, snap: set[int],
               count: bool, on_step: Callable) -> None:
    """The reference: every node evaluated once per step (what ``engine="block"`` must equal)."""
    run = _Run(graph, x, delay, static)
    for t in range(1, steps + 1):
        run.step()
        on_step(t, run.values[graph.output], run.counts if (count and t in snap) else None)


@_engine("block")
def _run_blocks(graph: ir.Graph, x: Tensor, delay: int, static: set[str], steps: int, snap: set[int],
                count: bool, on_step: Callable) -> None:
    """Default: blocks of steps, node by node, sample shards side by side on torch's threads
    (``loihi_conv.snn.timeblocks``)."""
    run_lanes(graph, x, delay, static, count, steps, snap, on_step, torch.get_num_threads())


# ---- driver --------------------------------------------------------------------------------
def _check(graph: ir.Graph, x: Tensor, timesteps: Sequence[int], delay: int, record) -> tuple[tuple[int, ...], str]:
    relus = [n.name for n in graph.of_type(ir.ReLU)]
    if relus:
        raise LoihiConvError(f"graph still has ReLU node(s) {', '.join(relus)}; simulate runs SNN graphs",
                             "convert it first: loihi_conv.convert.convert(...) or normalize.to_snn(...)")
    unknown = sorted({n.model for n in graph.of_type(ir.Neuron)} - set(NEURON_MODELS))
    if unknown:
        raise LoihiConvError(f"unknown neuron model(s) {', '.join(unknown)}",
                             f"use one of: {', '.join(sorted(NEURON_MODELS))}")
    ts = tuple(timesteps)
    if not ts or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) and t > 0 for t in ts):
        raise LoihiConvError(f"timesteps {list(timesteps)} must be one or more positive integers",
                             "pass e.g. timesteps=[16, 64, 256]")
    if delay not in (0, 1):
        raise LoihiConvError(f"delay={delay} is not supported", "use delay=1 (Lava timing) or delay=0")
    if record not in RECORD_MODES:
        raise LoihiConvError(f"record={record!r} is not a record mode",
                             "use True/'channel' (N, C), 'neuron' (N, C, H, W) or False")
    want = tuple(graph.input.shape)
    stream = isinstance(x, Tensor) and x.dim() == len(want) + 2 and tuple(x.shape[2:]) == want and x.shape[1] > 0
    if not isinstance(x, Tensor) or (tuple(x.shape[1:]) != want and not stream) or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise LoihiConvError(f"input must be a tensor (N, {', '.join(map(str, want))}) with N > 0, or an event "
                             f"stream (N, T_in, {', '.join(map(str, want))}), got {got}",
                             "pass a batch of samples in the graph's input layout (NCHW)")
    return tuple(sorted({int(t) for t in ts})), RECORD_MODES[record]


def _reduce(counts: Tensor, mode: str) -> Tensor:
    return counts.sum(dim=tuple(range(2, counts.dim()))) if mode == "channel" and counts.dim() > 2 else counts


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def simulate(graph: ir.Graph, x: Tensor, timesteps: Sequence[int], delay: int = 1,
             record: bool | str = True, batch_size: int = 500, num_threads: int | None = None,
             device: "str | torch.device | None" = None, engine: str = "block") -> SimResult:
    """Simulate the SNN ``graph`` on inputs ``x`` (N, *input shape) for every readout window in
    ``timesteps`` in one pass of ``max(T) + depth`` steps (delay=1) or ``max(T)`` steps (delay=0).

    ``record``: True/"channel" keeps spike counts per channel (N, C), "neuron" per neuron
    (N, C, H, W), False only the output. Samples are processed ``batch_size`` at a time.
    ``num_threads`` sets torch's intra-op threads for the call only (None: leave as is); on a
    shared, oversubscribed machine 1 thread can be several times faster than 2.
    ``device``: where the torch work runs (``base.devices``: "cpu", the default, or "cuda");
    results come back on the CPU. ``engine``: "block" (default, time-blocked,
    ``loihi_conv.snn.timeblocks``) or "step" (the per-step reference it equals).
    """
    dev = devices.resolve(device)
    with _threads(num_threads), torch.no_grad():
        return _simulate(graph, x, timesteps, delay, record, batch_size, dev, engine)


def _simulate(graph: ir.Graph, x: Tensor, timesteps: Sequence[int], delay: int, record: bool | str,
              batch_size: int, dev: torch.device = torch.device("cpu"), engine: str = "block") -> SimResult:
    ts, mode = _check(graph, x, timesteps, delay, record)
    if not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
        raise LoihiConvError(f"batch_size={batch_size!r} must be a positive integer", "use e.g. batch_size=500")
    if any(not n.shape for n in graph if not isinstance(n, ir.Input)):
        graph = ops.infer_shapes(graph.copy())
    lv = levels(graph)
    neurons = graph.of_type(ir.Neuron)
    if dev.type != "cpu":
        graph = to_device(graph, dev)
    result = SimResult(ts, delay, lv[graph.output], mode,
                       levels={n.name: lv[n.name] for n in neurons},
                       thresholds={n.name: n.threshold.float() for n in neurons},
                       positions={n.name: math.prod(n.shape[1:]) for n in neurons})
    snap = {result.steps(T): T for T in ts}
    static = static_nodes(graph) if x.dim() == len(graph.input.shape) + 1 else set()  # an event stream varies
    readout = make_readout(graph)
    outs: dict[int, list[Tensor]] = {T: [] for T in ts}
    counts: dict[int, dict[str, list[Tensor]]] = {T: {n.name: [] for n in neurons} for T in ts}
    x = x if x.is_floating_point() else x.float()
    run_batch = lookup(ENGINES, engine, "simulator engine")
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size].to(dev)
        acc = [None]  # the readout's state

        def on_step(t: int, out: Tensor, cnt: dict[str, Tensor] | None) -> None:
            acc[0] = readout.init_state(out) if acc[0] is None else acc[0]
            readout.step(acc[0], out)
            if t in snap:
                T = snap[t]
                outs[T].append(readout.scores(acc[0]).cpu())
                if mode != "none":
                    for name, c in cnt.items():
                        counts[T][name].append(_reduce(c, mode).cpu().clone())

        run_batch(graph, batch, delay, static, result.steps_run, set(snap), mode != "none", on_step)
    result.output = {T: torch.cat(v) for T, v in outs.items()}
    if mode != "none":
        result.counts = {T: {name: torch.cat(v) for name, v in d.items()} for T, d in counts.items()}
    return result
