"""The time-step engine: runs a ``qir.QNetwork`` exactly like Lava ``Loihi2SimCfg('fixed_pt')``.

Per step t (Lava's LoihiProtocol, reference doc §3.1):
1. every neuron receives the sum of its synapses' buffers computed at t-1 (the one-step synaptic
   delay; InPort fan-in sums), updates and emits its out-port message s(t);
2. every synapse receives its source's s(t) and computes its next buffer.
The neuron-less input block emits x[:, (t-1) % T_in] (Lava RingBuffer); an input neuron gets it
on ``a_in`` (``inject='a_in'``) or as its ``bias_mant`` (``inject='bias'``).

Layouts: all tensors are PyTorch order, batch first: (B, *block.shape); records are (N, T, *shape).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import torch

from loihi_conv.errors import LoihiConvError
from loihi_conv.qir import QNetwork, Readout

from .arith import I32_MAX, I32_MIN, abs_bound, wrap32, zeros
from .neurons import make_neuron
from .synapses import make_synapse

INJECT = ("a_in", "bias")
DEFAULT_BATCH = 256  # keeps a conv layer's neuron state within L2/L3 cache for elementwise ops


@dataclass
class EmulationResult:
    """What an emulation produced (numpy arrays, PyTorch order).

    ``output``: the output block's out-port per step, (N, steps, *out_shape) int32 -- what a Lava
    ``io.sink.RingBuffer`` on it records (0/1 spikes or graded values).
    ``states[block][name]``: recorded per-step states after each step, (N, steps, *shape) int32
    (``s`` of spiking blocks is int8 0/1).
    ``spike_counts[block]``: number of non-zero out-port messages per neuron, (N, *shape) int64.
    ``readout``: final ``u`` of a ``Readout`` output block, (N, *out_shape) int64, else None.
    """
    output: np.ndarray
    steps: int
    states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    spike_counts: dict[str, np.ndarray] = field(default_factory=dict)
    readout: np.ndarray | None = None


@dataclass(eq=False)
class _Node:
    name: str
    shape: tuple[int, ...]
    neuron: object | None  # runner from neurons.make_neuron, None for a neuron-less input
    synapses: list  # (runner, source name)
    a_bound: int = 0


class Emulator:
    """Streaming, batched bit-exact emulator of one ``QNetwork``.

    ``reset(batch, x_bound)`` then ``step(x_t)`` once per time step; ``step`` returns every
    block's out-port message at that step, and ``states(name)`` its neuron states. Nothing is
    stored across steps, so runs of any length use constant memory.
    """

    def __init__(self, qnet: QNetwork, inject: str = "a_in"):
        if inject not in INJECT:
            raise LoihiConvError(f"unknown inject mode {inject!r}", f"use one of {INJECT}")
        if not qnet.blocks or not qnet.blocks[0].is_input:
            raise LoihiConvError("the network's first block must be an input block (no synapses)",
                                 "put the input block first in QNetwork.blocks")
        self.qnet = qnet
        self.inject = inject
        shapes: dict[str, tuple[int, ...]] = {}
        for b in qnet.blocks:
            if b.name in shapes:
                raise LoihiConvError(f"duplicate block name '{b.name}'", "give blocks unique names")
            shapes[b.name] = tuple(int(n) for n in b.shape)
        self.nodes: list[_Node] = []
        for i, b in enumerate(qnet.blocks):
            if i > 0 and b.is_input:
                raise LoihiConvError(f"block '{b.name}' has no synapses but is not the input",
                                     "only blocks[0] may be an input block")
            if i > 0 and b.neuron is None:
                raise LoihiConvError(f"block '{b.name}' has no neuron",
                                     "every non-input block needs one of qir.NEURONS")
            syns = []
            for s in b.synapses:
                if s.source not in shapes:
                    raise LoihiConvError(f"block '{b.name}' has a synapse from unknown block "
                                         f"'{s.source}'", "fix Synapse.source")
                syns.append((make_synapse(s, shapes[s.source], shapes[b.name]), s.source))
            neuron = make_neuron(b.neuron, b) if b.neuron is not None else None
            self.nodes.append(_Node(b.name, shapes[b.name], neuron, syns))
        self.input = self.nodes[0]
        if inject == "bias" and self.input.neuron is None:
            raise LoihiConvError("inject='bias' needs an input block with a neuron",
                                 "use inject='a_in' (the input then drives the first synapses)")
        self.output = self.nodes[-1]
        self.by_name = {n.name: n for n in self.nodes}

    def binary(self, name: str) -> bool:
        """Whether block ``name`` sends binary 0/1 spikes (else graded messages)."""
        neuron = self.by_name[name].neuron
        return neuron is not None and neuron.binary

    def reset(self, batch: int, x_bound: int, bias: torch.Tensor | None = None,
              static_input: bool = False) -> None:
        """Zero all states and buffers for ``batch`` samples.

        ``x_bound`` bounds |x| (it selects exact dtypes); ``bias`` (B, *input_shape) is the
        ``inject='bias'`` image; ``static_input`` lets constant input synapses be computed once.
        """
        if not 0 <= x_bound <= I32_MAX:
            raise LoihiConvError(f"x_bound={x_bound} is outside [0, 2^31-1]",
                                 "inputs are int32 (Lava's RingBuffer); scale them down")
        self.t = 0
        self.x_bound = int(x_bound)
        self.static_input = static_input and self.input.neuron is None
        # Static bounds on |message| per block, then on |a_in| per block (select safe dtypes).
        self.msg_bound = {n.name: n.neuron.msg_bound if n.neuron is not None else x_bound
                          for n in self.nodes}
        for node in self.nodes:
            for syn, _ in node.synapses:
                syn.reset(batch)
            node.a_bound = sum(syn.out_bound(self.msg_bound[src]) for syn, src in node.synapses)
            if node is self.input:
                node.a_bound = x_bound if self.inject == "a_in" else 0
            if node.neuron is not None:
                node.neuron.reset(batch, node.a_bound, bias if node is self.input else None)
        self._zero = torch.zeros((batch, *self.input.shape), dtype=torch.int32)

    def _neuron_input(self, node: _Node) -> torch.Tensor:
        """Lava InPort recv: the int32 sum of all incoming synapse buffers (wraps mod 2^32)."""
        parts = [syn.send() for syn, _ in node.synapses]
        if len(parts) == 1:
            return parts[0]
        if node.a_bound <= I32_MAX:
            return reduce(torch.add, parts)
        return wrap32(reduce(torch.add, (p.to(torch.int64) for p in parts))).to(torch.int32)

    def step(self, x_t: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Advance one time step; ``x_t`` (B, *input_shape) int (None for inject='bias').
        Returns every block's out-port message at this step (B, *shape)."""
        # NNPACK may convolve with Winograd/FFT (inexact); oneDNN direct conv and BLAS are exact.
        with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):
            return self._step(x_t)

    def _step(self, x_t: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.t += 1
        msgs: dict[str, torch.Tensor] = {}
        if x_t is not None and abs_bound(x_t) > self.x_bound:
            raise LoihiConvError(f"step {self.t}: |x| = {abs_bound(x_t)} exceeds the x_bound "
                                 f"{self.x_bound} given to reset()",
                                 "call reset() with the max |x| of the whole run")
        for node in self.nodes:
            if node is self.input:
                if node.neuron is None:
                    msgs[node.name] = x_t.to(torch.int32)
                    continue
                a = x_t.to(torch.int32) if self.inject == "a_in" else self._zero
            else:
                a = self._neuron_input(node)
            msgs[node.name] = node.neuron.step(a)
        for node in self.nodes:
            for syn, src in node.synapses:
                if self.static_input and src == self.input.name and syn.can_freeze and self.t > 1:
                    continue  # W·x of a constant x: the buffer computed at t=1 stays valid
                msg = msgs[src]
                if self.binary(src):
                    m = 1
                elif src == self.input.name and self.input.neuron is None:
                    m = self.msg_bound[src]
                else:
                    m = abs_bound(msg)
                syn.receive(msg, m)
        return msgs

    def states(self, name: str) -> dict[str, torch.Tensor]:
        """Neuron states of block ``name`` after the last step, each (B, *shape)."""
        neuron = self.by_name[name].neuron
        return neuron.states() if neuron is not None else {}


def _as_int_tensor(x) -> torch.Tensor:
    """User input -> int64 CPU tensor; refuses non-integers and values outside int32."""
    try:
        t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise LoihiConvError(f"input x is not a numeric array ({e})",
                             "pass a numpy array or torch tensor of integers") from None
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    if t.is_floating_point():
        if not bool(torch.all(t == torch.round(t))):
            raise LoihiConvError("input x has non-integer values",
                                 "quantize it first: round(x * qnet.input_scale)")
        if t.numel() and (float(t.max()) > I32_MAX or float(t.min()) < I32_MIN):
            raise LoihiConvError("input x has values outside int32",
                                 "scale the input down (Lava's RingBuffer is int32)")
    elif t.is_complex() or not t.dtype.is_signed and t.dtype != torch.uint8:
        raise LoihiConvError(f"input x has unsupported dtype {t.dtype}", "use an integer dtype")
    t = t.to(torch.int64)
    if t.numel() and (int(t.max()) > I32_MAX or int(t.min()) < I32_MIN):
        raise LoihiConvError("input x has values outside int32",
                             "scale the input down (Lava's RingBuffer is int32)")
    return t


def _time_major(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N, *shape) or (N, T_in, *shape) -> (N, T_in, *shape)."""
    if tuple(x.shape[1:]) == shape and x.ndim == len(shape) + 1:
        return x.unsqueeze(1)
    if x.ndim == len(shape) + 2 and tuple(x.shape[2:]) == shape and x.shape[1] > 0:
        return x
    raise LoihiConvError(f"input x has shape {tuple(x.shape)}; the input block has shape {shape}",
                         f"pass (N, {', '.join(map(str, shape))}) or (N, T, "
                         f"{', '.join(map(str, shape))}) in PyTorch order")


def _record_names(record, qnet: QNetwork) -> list[str]:
    names = [b.name for b in qnet.blocks]
    if record is True:
        return names
    if record is False or record is None:
        return []
    if isinstance(record, str) or not isinstance(record, Iterable):
        record = [record]
    chosen = list(record)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise LoihiConvError(f"cannot record unknown blocks {unknown}", f"choose from {names}")
    return chosen


def emulate(qnet: QNetwork, x: np.ndarray | torch.Tensor, steps: int, inject: str = "a_in",
            record: bool | Iterable[str] = False, batch_size: int | None = None
            ) -> EmulationResult:
    """Run ``qnet`` on integer input ``x`` for ``steps`` steps, bit-exact with Lava fixed_pt.

    ``x``: (N, T_in, *input_shape) time-varying (step t uses x[:, (t-1) % T_in]) or
    (N, *input_shape) static, PyTorch order. ``inject``: how an input block *with* a neuron
    gets x ('a_in': added to a_in every step; 'bias': its bias_mant). ``record``: True, or block
    names whose per-step states to keep. ``batch_size``: samples per chunk (default 256).
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise LoihiConvError(f"steps must be a positive int, got {steps!r}", "pass steps >= 1")
    em = Emulator(qnet, inject)
    xs = _time_major(_as_int_tensor(x), em.input.shape)
    if inject == "bias" and xs.shape[1] != 1:
        raise LoihiConvError("inject='bias' needs a static input (N, *input_shape)",
                             "pass one image per sample, or use inject='a_in' for time series")
    n, t_in = xs.shape[0], xs.shape[1]
    bs = DEFAULT_BATCH if batch_size is None else int(batch_size)
    if bs < 1:
        raise LoihiConvError(f"batch_size must be >= 1, got {batch_size}", "pass a positive int")
    rec = _Recorder(em, _record_names(record, qnet), n, steps)
    if _feed_forward(qnet):
        for lo in range(0, n, bs):
            for sub in range(lo, min(lo + bs, n), _layer_major_chunk(em, steps)):
                _run_layer_major(em, xs[sub:min(sub + _layer_major_chunk(em, steps), lo + bs, n)],
                                 steps, sub, rec)
        return rec.result()
    for lo in range(0, n, bs):
        xc = xs[lo:lo + bs]
        em.reset(len(xc), abs_bound(xc), bias=xc[:, 0] if inject == "bias" else None,
                 static_input=t_in == 1)
        rec.start_chunk(lo, len(xc))
        for t in range(steps):
            rec.step(t, em.step(xc[:, t % t_in] if inject == "a_in" else None))
        rec.end_chunk()
    return rec.result()


class _Recorder:
    """Collects one emulation's numpy results chunk by chunk (layouts: see EmulationResult)."""

    def __init__(self, em: Emulator, names: list[str], n: int, steps: int):
        self.em, self.names, self.steps = em, names, steps
        out = em.output
        self.output = np.zeros((n, steps, *out.shape), dtype=np.int32)
        self.states: dict[str, dict[str, np.ndarray]] = {}
        for name in names:
            node = em.by_name[name]
            keys = node.neuron.state_names if node.neuron is not None else ()
            self.states[name] = {k: np.zeros((n, steps, *node.shape), np.int32) for k in keys}
            self.states[name]["s"] = np.zeros((n, steps, *node.shape),
                                              np.int8 if em.binary(name) else np.int32)
        self.counted = [node.name for node in em.nodes if node.neuron is not None]
        self.counts = {k: np.zeros((n, *em.by_name[k].shape), np.int64) for k in self.counted}
        self.readout = (np.zeros((n, *out.shape), np.int64)
                        if isinstance(em.qnet.output.neuron, Readout) else None)

    def start_chunk(self, lo: int, size: int) -> None:
        self.rows = slice(lo, lo + size)
        self.chunk_counts = {k: zeros(size, self.em.by_name[k].shape, torch.int32)
                             for k in self.counted}

    def step(self, t: int, msgs: dict[str, torch.Tensor]) -> None:
        rows, em = self.rows, self.em
        self.output[rows, t] = msgs[em.output.name].numpy()
        for k in self.counted:
            msg = msgs[k]
            self.chunk_counts[k].add_(msg if em.binary(k) else msg != 0)  # spikes: uint8 0/1
        for name in self.names:
            for k, v in em.states(name).items():
                self.states[name][k][rows, t] = v.numpy()
            self.states[name]["s"][rows, t] = msgs[name].numpy()

    def end_chunk(self) -> None:
        for k in self.counted:
            self.counts[k][self.rows] = self.chunk_counts[k].numpy()
        if self.readout is not None:
            self.readout[self.rows] = self.em.states(self.em.output.name)["u"].numpy()

    def record_states(self, name: str, t: int, lo: int, hi: int, runner) -> None:
        """Layer-major: states of samples lo:hi (of the chunk) after step t."""
        if name in self.states:
            rows = slice(self.rows.start + lo, self.rows.start + hi)
            for k, v in runner.states().items():
                self.states[name][k][rows, t] = v.numpy()

    def record_train(self, name: str, train: torch.Tensor, frame_of: list[int], finals) -> None:
        """Layer-major: a block's whole message train (frames (nf*B, *shape), frame_of[t])."""
        rows, em = self.rows, self.em
        batch = rows.stop - rows.start
        frames = train.reshape(-1, batch, *train.shape[1:])
        if name in self.states or name == em.output.name:
            per_step = frames[frame_of].transpose(0, 1).numpy()  # (B, steps, *shape)
            if name == em.output.name:
                self.output[rows] = per_step
            if name in self.states:
                self.states[name]["s"][rows] = per_step
        if name in self.counts:
            # uint8 partial sums of <= 255 steps: same-dtype adds are ~10x faster than torch's
            # widening sum(dim=0) or mixed-dtype adds.
            total = np.zeros((batch, *train.shape[1:]), np.int64)
            for lo in range(0, len(frames), 255):
                count = torch.zeros_like(frames[0], dtype=torch.uint8)
                for frame in frames[lo:lo + 255]:
                    count.add_(frame if frame.dtype == torch.uint8 else (frame != 0).view(
                        torch.uint8))
                total += count.numpy()
            self.counts[name][rows] = total
        if name == em.output.name and self.readout is not None:
            self.readout[rows] = finals["u"].numpy()

    def end_chunk_trains(self) -> None:
        pass

    def result(self) -> EmulationResult:
        return EmulationResult(output=self.output, steps=self.steps, states=self.states,
                               spike_counts=self.counts, readout=self.readout)


# ---- layer-major schedule ------------------------------------------------------------------
# Without recurrence, block k at step t depends only on earlier blocks at steps < t (every
# synapse delays >= 1 step), so each block can run over all steps before the next one: one big
# synapse call on a source's whole message train ((steps*B, *shape) rows, step-major), then the
# neuron recurrence over time on cache-sized batch slices. Same runners, same arithmetic, same
# results as ``Emulator.step``; only the loop order changes.
TRAIN_BYTES = 2 ** 28  # bound on one block's int32 message/input train per chunk
SLICE_ELEMS = 2 ** 17  # neurons per elementwise op: the states stay in L2 across the step loop


def _feed_forward(qnet: QNetwork) -> bool:
    """Whether every synapse comes from an earlier block (no recurrence)."""
    seen: set[str] = set()
    for b in qnet.blocks:
        if any(s.source not in seen for s in b.synapses):
            return False
        seen.add(b.name)
    return True


def _layer_major_chunk(em: Emulator, steps: int) -> int:
    """Samples per layer-major chunk so that an int32 train of the largest block fits the budget."""
    biggest = max(int(np.prod(node.shape)) for node in em.nodes)
    return max(1, TRAIN_BYTES // (4 * steps * max(biggest, 1)))


def _rows(train: torch.Tensor, t: int, batch: int) -> torch.Tensor:
    """Step ``t`` (0-based) of a step-major train (steps*B, *shape) -> (B, *shape)."""
    return train[t * batch:(t + 1) * batch]


def _synapse_inputs(syn, src_train: torch.Tensor, frame_of: list[int], max_abs: int, steps: int,
                    batch: int) -> list[torch.Tensor]:
    """Per step t (0-based), the buffer this synapse sends at t: W·msg(t-1-d) summed over
    delays d, with Lava's wraps. ``src_train`` holds the source's distinct message frames
    (nf*B, *src_shape); frame_of[t] is the frame sent at step t."""
    used = sorted(set(frame_of[:steps - 1]))
    zero = torch.zeros((batch, *syn.dst_shape), dtype=torch.int32)
    if not used:
        return [zero] * steps
    pos = {f: i for i, f in enumerate(used)}
    if used == list(range(used[0], used[-1] + 1)):  # a run of steps: a view, no copy
        frames = src_train[used[0] * batch:(used[-1] + 1) * batch]
    else:
        frames = torch.cat([_rows(src_train, f, batch) for f in used])
    ys = syn.apply(frames, max_abs)  # {delay: (len(used)*B, *dst) int32 or int64}
    if list(ys) == [0] and ys[0].dtype == torch.int32:
        y = ys[0]
        return [zero] + [_rows(y, pos[frame_of[t - 1]], batch) for t in range(1, steps)]
    acc = [None] * steps
    for d, y in ys.items():
        for t in range(1 + d, steps):
            part = _rows(y, pos[frame_of[t - 1 - d]], batch).to(torch.int64)
            acc[t] = part if acc[t] is None else acc[t] + part
    return [zero if a is None else syn.finish(a) for a in acc]


def _run_layer_major(em: Emulator, xc: torch.Tensor, steps: int, lo: int,
                     rec: "_Recorder") -> None:
    """Emulate samples xc (B, T_in, *input_shape) block by block; results go to ``rec`` rows
    lo:lo+B (trains are step-major: row t*B + b is sample b at step t)."""
    batch, t_in = xc.shape[0], xc.shape[1]
    inject = em.inject
    em.reset(batch, abs_bound(xc), bias=xc[:, 0] if inject == "bias" else None)
    rec.start_chunk(lo, batch)
    trains: dict[str, tuple[torch.Tensor, list[int], int]] = {}  # name -> (train, frame_of, |m|)
    x_frames = xc.transpose(0, 1).reshape(t_in * batch, *em.input.shape).to(torch.int32)
    if len(em.input.shape) == 3:
        x_frames = x_frames.contiguous(memory_format=torch.channels_last)
    x_of = [t % t_in for t in range(steps)]
    qblocks = {b.name: b for b in em.qnet.blocks}
    with torch.no_grad(), torch.backends.nnpack.flags(enabled=False):
        for node in em.nodes:
            if node.neuron is None:  # neuron-less input: it sends x itself
                trains[node.name] = (x_frames, x_of, em.x_bound)
                rec.record_train(node.name, x_frames, x_of, None)
                continue
            if node is em.input:
                a_in = ([_rows(x_frames, x_of[t], batch) for t in range(steps)]
                        if inject == "a_in" else [em._zero] * steps)
            else:
                a_in = _neuron_inputs(em, node, trains, steps, batch)
            train, finals = _run_neuron(em, node, qblocks[node.name], a_in, steps, batch,
                                        xc[:, 0] if node is em.input and inject == "bias" else None,
                                        rec)
            bound = 1 if node.neuron.binary else abs_bound(train)
            trains[node.name] = (train, list(range(steps)), bound)
            rec.record_train(node.name, train, list(range(steps)), finals)
    rec.end_chunk_trains()


def _neuron_inputs(em: Emulator, node: _Node, trains, steps: int, batch: int
                   ) -> list[torch.Tensor]:
    """Lava InPort recv per step: the int32 sum of every synapse's buffer (wraps mod 2^32)."""
    per_syn = [_synapse_inputs(syn, *trains[src], steps, batch) for syn, src in node.synapses]
    if len(per_syn) == 1:
        return per_syn[0]
    if node.a_bound <= I32_MAX:
        return [reduce(torch.add, parts) for parts in zip(*per_syn)]
    return [wrap32(reduce(torch.add, (p.to(torch.int64) for p in parts))).to(torch.int32)
            for parts in zip(*per_syn)]


def _run_neuron(em: Emulator, node: _Node, block, a_in: list[torch.Tensor], steps: int,
                batch: int, bias: torch.Tensor | None, rec: "_Recorder"):
    """The neuron recurrence over all steps, slice by slice of the batch. Returns the message
    train (steps*B, *shape) (uint8 0/1 for spiking blocks, int32 otherwise) and each slice's final
    states {name: (B, *shape)}."""
    size = max(1, int(np.prod(node.shape)))
    step = max(1, SLICE_ELEMS // size)
    dtype = torch.uint8 if node.neuron.binary else torch.int32
    train = torch.empty((steps * batch, *node.shape), dtype=dtype,  # every row is written
                        memory_format=torch.channels_last if len(node.shape) == 3
                        else torch.contiguous_format)
    finals: dict[str, list[torch.Tensor]] = {}
    for lo in range(0, batch, step):
        hi = min(lo + step, batch)
        runner = make_neuron(block.neuron, block)
        runner.reset(hi - lo, node.a_bound, None if bias is None else bias[lo:hi])
        for t in range(steps):
            msg = runner.step(a_in[t][lo:hi])
            train[t * batch + lo:t * batch + hi] = msg
            rec.record_states(node.name, t, lo, hi, runner)
        for k, v in runner.states().items():
            finals.setdefault(k, []).append(v)
    return train, {k: torch.cat(v) for k, v in finals.items()}
