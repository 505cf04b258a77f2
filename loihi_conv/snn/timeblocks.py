"""Time-blocked engine of the float SNN simulator (``simulate(engine="block")``, the default):
the same arithmetic as the per-step reference (``engine="step"``), reordered so most of it runs
in few, cache-sized torch calls.

The network is a DAG whose only memory is in neurons, stateful max-pools and the readout, so a
block of ``tb`` steps can be run node by node instead of step by step:

* a batch runs as sample shards (``shards_for``; every value is per sample), side by side on
  torch's threads with one intra-op thread each (``run_lanes``), block by block;
* a synapse path node (Conv2d, Linear, pool, Flatten, Add, ...) whose inputs are known for the
  whole block runs once over the (tb * shard) stacked steps -- one batched conv instead of tb;
* a node fed only by the direct input is computed once per batch (twice with delay=1: step 1
  reads the zero delay buffer), as in the per-step engine;
* a neuron steps its model over the block, sample tile by sample tile, so its state stays in
  cache across the tile's tb steps (per-neuron arithmetic: tiling changes no value);
* delay=1 is a (tb + 1)-slot buffer per source: a synapse reads slots [0, tb), the source
  writes slots [1, tb], and slot tb is carried to slot 0 for the next block.

Every op computes the same values as per step (same kernels and summation order), so results
are bit-identical to ``engine="step"`` -- with one caveat inherited from the BLAS/oneDNN
libraries: they choose kernels by batch size, and at a handful of rows (1 for conv, < ~14 for
a Linear) a different kernel may round differently. No synapse call here gets fewer than
MIN_ROWS rows (or the batch, when smaller), so bit-identity holds whenever the per-step engine's
batch has at least MIN_ROWS samples (tests/test_simulate_fast.py); otherwise the two agree to
float rounding, as two batch sizes of the per-step engine do.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from loihi_conv.frontend import ir, ops
from loihi_conv.snn.neurons import NeuronModel, get_neuron_model
from loihi_conv.snn.pooling import get_pooling, scheme_name

Tensor = torch.Tensor
SOURCES = (ir.Input, ir.Neuron)
BLOCK_BYTES = 384 * 2**20  # stacked values of one block of steps, summed over nodes
MAX_BLOCK = 64  # steps per block at most
CHUNK_ROWS = 128  # rows (steps x samples) per synapse call: oneDNN's convs run ~1.5x slower at 500+
SHARD_SAMPLES = 64  # samples per shard (run_lanes)
MIN_ROWS = 16  # never fewer rows per call (BLAS/oneDNN pick other kernels, other roundings, below)
TILE_BYTES = 2 * 2**20  # one tile of one neuron state tensor (fewer, larger calls beat fitting L2)


def _avg_pool(node: ir.AvgPool2d, x: Tensor) -> Tensor:
    """``ops.apply`` of an AvgPool2d, faster when the windows tile the input (kernel == stride, no
    padding, no crop): the window sum is accumulated in ATen's CPU order (row by row, left to right, from
    0) and divided by the window size, so the result is bit-identical."""
    k, s = node.kernel_size, node.stride
    k = (k, k) if isinstance(k, int) else tuple(k)
    s = (s, s) if isinstance(s, int) else tuple(s) if s else k
    pad = node.padding if isinstance(node.padding, (tuple, list)) else (node.padding, node.padding)
    if (s != k or any(pad) or node.ceil_mode or x.dim() != 4 or x.device.type != "cpu"
            or x.shape[2] % k[0] or x.shape[3] % k[1]):  # a cropped window grid: ATen's is faster
        return ops.apply(node, x)
    n, c, h, w = x.shape
    ho, wo = h // k[0], w // k[1]
    v = x[:, :, :ho * k[0], :wo * k[1]].reshape(n, c, ho, k[0], wo, k[1])
    out = v[:, :, :, 0, :, 0].clone()
    for i in range(k[0]):
        for j in range(k[1]):
            if i or j:
                out.add_(v[:, :, :, i, :, j])
    return out.div_(k[0] * k[1])


def _apply(node: ir.Node, *xs: Tensor) -> Tensor:
    if isinstance(node, ir.AvgPool2d):
        return _avg_pool(node, *xs)
    return ops.apply(node, *xs)


def _chunks(rows: int, n: int) -> int:
    """How many near-equal row chunks to split ``rows`` into: about CHUNK_ROWS each, never below
    MIN_ROWS or the batch ``n`` (the per-step engine's row count) when that is smaller."""
    floor = min(MIN_ROWS, n)
    return max(1, min(round(rows / CHUNK_ROWS), rows // max(1, floor)))


class _Seq:
    """A node's values over the current block: ``steps[i]`` at its i-th step, ``stacked`` the same
    as one contiguous (tb, N, ...) tensor when there is one (None for per-step constants)."""

    __slots__ = ("steps", "stacked")

    def __init__(self, steps: list[Tensor], stacked: Tensor | None):
        self.steps, self.stacked = steps, stacked


class _Neuron:
    """One population: its model, a state per sample tile, counts and the output buffer."""

    def __init__(self, node: ir.Neuron, shape: tuple[int, ...], dtype, device, delay: int, tb: int, count: bool):
        self.node, self.model = node, get_neuron_model(node.model)
        n = shape[0]
        per_sample = max(1, math.prod(shape[1:]) * torch.finfo(dtype).bits // 8)
        size = max(1, min(n, TILE_BYTES // per_sample))
        self.tiles = [slice(a, min(a + size, n)) for a in range(0, n, size)]
        self.states = [self.model.init_state((sl.stop - sl.start,) + tuple(shape[1:]), node, dtype, device)
                       for sl in self.tiles]
        self.counts = torch.zeros(shape, dtype=dtype, device=device) if count else None
        self.buf = torch.empty((tb + 1,) + tuple(shape), dtype=dtype, device=device)  # slot 0: previous step
        self.buf[0].zero_()
        self.clamp = node.params.get("clamp_steps", 0)


def block_steps(graph: ir.Graph, static: set[str], n: int) -> int:
    """Steps per block for a shard of n samples: about CHUNK_ROWS rows per synapse call, and the
    block's stacked values within BLOCK_BYTES."""
    per_step = sum(math.prod(node.shape) for node in graph if node.name not in static) * n * 4
    return max(1, min(MAX_BLOCK, CHUNK_ROWS // max(1, n), BLOCK_BYTES // max(1, per_step)))


def shards_for(n: int, threads: int = 1) -> int:
    """How many sample shards a batch of n runs as: about SHARD_SAMPLES samples each, a multiple
    of ``threads`` (even work per thread) where possible, never fewer than MIN_ROWS samples each
    (a static synapse would see too few rows)."""
    k = max(1, round(n / (SHARD_SAMPLES * threads))) * threads
    return max(1, min(k, n // MIN_ROWS))


def run_lanes(graph: ir.Graph, x: Tensor, delay: int, static: set[str], count: bool, steps: int, snap: set[int],
              on_step: Callable[[int, Tensor, dict | None], None], threads: int) -> None:
    """``BlockRun.run`` over sample shards of x (``shards_for``), block after block: a shard's
    block of steps (every node, its values a few MB) stays in cache, and with ``threads`` > 1 the
    shards run side by side, one intra-op thread each (every value is per sample, so sharding
    changes none; lanes never wait for each other inside a block, where intra-op threads meet at
    every op). ``on_step`` gets the whole batch, in sample order, step after step."""
    shards = x.tensor_split(shards_for(x.shape[0], threads))
    tb = block_steps(graph, static, shards[0].shape[0])
    before = torch.get_num_threads()
    pool = ThreadPoolExecutor(threads) if threads > 1 and len(shards) > 1 else None
    run_all = pool.map if pool is not None else map
    if pool is not None:
        torch.set_num_threads(1)
    try:
        runs = list(run_all(lambda xs: BlockRun(graph, xs, delay, static, count, tb), shards))
        for t0 in range(0, steps, tb):
            n_steps = min(tb, steps - t0)
            parts = list(run_all(lambda run: run.block(t0, n_steps, snap), runs))
            for i in range(n_steps):
                t = t0 + i + 1
                rec = parts[0][1].get(t)
                counts = None if rec is None else {k: torch.cat([p[1][t][k] for p in parts]) for k in rec}
                out = parts[0][0][i] if len(parts) == 1 else torch.cat([p[0][i] for p in parts])
                on_step(t, out, counts)
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(before)


class BlockRun:
    """Simulates one batch ``x``: ``run(steps, snap, on_step)`` calls ``on_step(t, out, counts)`` for
    every step t = 1..steps in order, with the output node's value at t and, for t in ``snap``
    (and ``count``), every neuron's spike counts after step t (else None)."""

    def __init__(self, graph: ir.Graph, x: Tensor, delay: int, static: set[str], count: bool,
                 tb: int | None = None):
        self.graph, self.x, self.delay, self.static, self.count = graph, x, delay, static, count
        self.stream = x.dim() == len(graph.input.shape) + 2
        self.tb = tb or block_steps(graph, static, x.shape[0])
        self.neurons: dict[str, _Neuron] = {}
        self.pools: dict[str, tuple] = {}
        self.input_buf: Tensor | None = None
        self.reads_input = any(graph.input.name in node.inputs for node in graph if node.name not in static)
        self.const: dict[str, tuple[Tensor, Tensor]] = {}  # static node -> (value at step 1, later)
        self._static_values()

    # -- static part -------------------------------------------------------------------------
    def _static_values(self) -> None:
        if not self.static:
            return
        name = self.graph.input.name
        x = self.x
        first = {name: torch.zeros_like(x) if self.delay else x}
        later = {name: x}
        for node in self.graph:
            if node.name in self.static:
                later[node.name] = _apply(node, *[later[i] for i in node.inputs])
                first[node.name] = (_apply(node, *[first[i] for i in node.inputs]) if self.delay
                                    else later[node.name])
                self.const[node.name] = (first[node.name], later[node.name])

    # -- one block ---------------------------------------------------------------------------
    def run(self, steps: int, snap: set[int], on_step: Callable[[int, Tensor, dict | None], None]) -> None:
        for t0 in range(0, steps, self.tb):
            tb = min(self.tb, steps - t0)
            outs, recorded = self.block(t0, tb, snap)
            for i in range(tb):
                on_step(t0 + i + 1, outs[i], recorded.get(t0 + i + 1))

    def _read(self, vals: dict[str, _Seq], name: str, tb: int) -> _Seq:
        node = self.graph[name]
        if isinstance(node, SOURCES):
            buf = self.neurons[name].buf if isinstance(node, ir.Neuron) else self.input_buf
            view = buf[0:tb] if self.delay else buf[1:tb + 1]
            return _Seq(list(view.unbind(0)), view)
        return vals[name]

    def block(self, t0: int, tb: int, snap: set[int]) -> tuple[list[Tensor], dict[int, dict[str, Tensor]]]:
        """Steps t0 + 1 .. t0 + tb: the output node's value at each, and the neurons' counts after
        each step in ``snap`` (when counting)."""
        vals: dict[str, _Seq] = {}
        recorded: dict[int, dict[str, Tensor]] = {t: {} for t in range(t0 + 1, t0 + tb + 1) if t in snap}
        for node in self.graph:
            if node.name in self.static:
                first, later = self.const[node.name]
                vals[node.name] = _Seq([first if t0 + i == 0 else later for i in range(tb)], None)
            elif isinstance(node, ir.Input):
                if self.reads_input:
                    self._input(t0, tb)
            elif isinstance(node, ir.Neuron):
                self._neuron(node, self._read(vals, node.inputs[0], tb), t0, tb, recorded)
            elif isinstance(node, ir.MaxPool2d):
                vals[node.name] = self._maxpool(node, self._read(vals, node.inputs[0], tb), tb)
            else:
                vals[node.name] = self._synapse(node, [self._read(vals, i, tb) for i in node.inputs], tb)
        out = vals.get(self.graph.output)  # the output's value at each step (never delayed)
        if out is None:
            nrn = self.neurons[self.graph.output]
            out = _Seq(list(nrn.buf[1:tb + 1].unbind(0)), None)
        for nrn in self.neurons.values():  # carry the last step into the delay slot
            nrn.buf[0].copy_(nrn.buf[tb])
        if self.input_buf is not None:
            self.input_buf[0].copy_(self.input_buf[tb])
        return out.steps, recorded

    def _input(self, t0: int, tb: int) -> None:
        if self.input_buf is None:
            shape = (self.x.shape[0],) + tuple(self.graph.input.shape)
            self.input_buf = torch.zeros((self.tb + 1,) + shape, dtype=self.x.dtype, device=self.x.device)
        for i in range(tb):
            t = t0 + i
            self.input_buf[i + 1].copy_(self.x[:, t % self.x.shape[1]] if self.stream else self.x)

    def _synapse(self, node: ir.Node, ins: list[_Seq], tb: int) -> _Seq:
        if all(s.stacked is not None for s in ins):
            n = ins[0].stacked.shape[1]
            flat = [s.stacked.reshape((tb * n,) + tuple(s.stacked.shape[2:])) for s in ins]
            parts = [_apply(node, *xs) for xs in zip(*[f.tensor_split(_chunks(tb * n, n)) for f in flat])]
            out = parts[0] if len(parts) == 1 else torch.cat(parts)
            out = out.reshape((tb, n) + tuple(out.shape[1:]))
            return _Seq(list(out.unbind(0)), out)
        out = torch.stack([_apply(node, *[s.steps[i] for s in ins]) for i in range(tb)])
        return _Seq(list(out.unbind(0)), out)

    def _maxpool(self, node: ir.MaxPool2d, x: _Seq, tb: int) -> _Seq:
        if node.name not in self.pools:
            scheme = get_pooling(scheme_name(self.graph))
            self.pools[node.name] = (scheme, scheme.init_state(node, x.steps[0]))
        scheme, state = self.pools[node.name]
        out = torch.stack([scheme.step(node, state, x.steps[i]) for i in range(tb)])
        return _Seq(list(out.unbind(0)), out)

    def _neuron(self, node: ir.Neuron, cur: _Seq, t0: int, tb: int, recorded: dict) -> None:
        nrn = self.neurons.get(node.name)
        if nrn is None:
            first = cur.steps[0]
            nrn = self.neurons[node.name] = _Neuron(node, tuple(first.shape), first.dtype, first.device,
                                                    self.delay, self.tb, self.count)
        model: NeuronModel = nrn.model
        live = [i for i in range(tb) if t0 + i >= nrn.clamp]  # clamped steps: no input, no spikes
        for i in range(tb):
            if t0 + i < nrn.clamp:
                nrn.buf[i + 1].zero_()
        if nrn.counts is None:
            snaps = {}
        else:  # counts after step t0 + i + 1 (zero on a clamped step: clamping comes first)
            snaps = {t - t0 - 1: recorded[t].setdefault(node.name, torch.zeros_like(nrn.counts))
                     for t in recorded}
        bufs = [nrn.buf[i + 1] for i in range(tb)]
        currents = cur.steps
        for sl, state in zip(nrn.tiles, nrn.states):
            theta = state["theta"]
            counts = nrn.counts[sl] if nrn.counts is not None else None
            for i in live:
                spikes = model.step(state, currents[i][sl])
                if counts is not None:
                    counts.add_(spikes)
                torch.mul(spikes, theta, out=bufs[i][sl])
                if i in snaps:
                    snaps[i][sl].copy_(counts)


__all__ = ["BlockRun", "block_steps", "run_lanes", "shards_for"]
