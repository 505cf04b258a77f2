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

from loihi_conv.base.devices import resolve as on_device
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.fixed.decode import readout_state
from loihi_conv.fixed.qir import QNetwork

from . import fused
from .arith import I32_MAX, I32_MIN, abs_bound, wrap32, zeros
from .fused import flat, fused_for
from .neurons import make_neuron
from .synapses import INT8_SRC_MAX, make_synapse, scratch

INJECT = ("a_in", "bias")
DEFAULT_BATCH = 256  # keeps a conv layer's neuron state within L2/L3 cache for elementwise ops
SKIP_ZERO_ROWS = 0.5  # a synapse computes only its non-zero message rows when at most this share is non-zero


@dataclass
class EmulationResult:
    """What an emulation produced (numpy arrays, PyTorch order).

    ``output``: the output block's out-port per step, (N, steps, *out_shape) int32 -- what a Lava
    ``io.sink.RingBuffer`` on it records (0/1 spikes or graded values).
    ``states[block][name]``: recorded per-step states after each step, (N, steps, *shape) int32
    (``s`` of spiking blocks is int8 0/1).
    ``spike_counts[block]``: number of non-zero out-port messages per neuron, (N, *shape) int64.
    ``readout``: the output block's final decode state (``readout.READOUT_STATE``: ``u`` of a
    ``Readout``, ``v`` of a spiking SoftIF/CUBA output), (N, *out_shape) int64, else None.
    ``readout_trace``: that state after every step, (N, steps, *out_shape) int32, else None (the
    "softmax" readout decodes the per-step potential).
    """
    output: np.ndarray
    steps: int
    states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    spike_counts: dict[str, np.ndarray] = field(default_factory=dict)
    readout: np.ndarray | None = None
    readout_trace: np.ndarray | None = None


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
        self.scratch: dict = {}  # layer-major trains, reused chunk after chunk (synapses.scratch)
        self.spans: dict = {}  # layer-major: (min, max) of a block's train, when a kernel tracked it

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
        self.set_bounds(x_bound)
        self.t = 0
        self.static_input = static_input and self.input.neuron is None
        for node in self.nodes:
            for syn, _ in node.synapses:
                syn.reset(batch)
            if node.neuron is not None:
                node.neuron.reset(batch, node.a_bound, bias if node is self.input else None)
        self._zero = torch.zeros((batch, *self.input.shape), dtype=torch.int32)

    def set_bounds(self, x_bound: int) -> None:
        """Static bounds on |message| per block, then on |a_in| per block (they select exact
        dtypes), for inputs |x| <= ``x_bound``; allocates nothing."""
        if not 0 <= x_bound <= I32_MAX:
            raise LoihiConvError(f"x_bound={x_bound} is outside [0, 2^31-1]",
                                 "inputs are int32 (Lava's RingBuffer); scale them down")
        self.x_bound = int(x_bound)
        self.msg_bound = {n.name: n.neuron.msg_bound if n.neuron is not None else x_bound
                          for n in self.nodes}
        for node in self.nodes:
            node.a_bound = sum(syn.out_bound(self.msg_bound[src]) for syn, src in node.synapses)
            if node is self.input:
                node.a_bound = x_bound if self.inject == "a_in" else 0

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
            record: bool | Iterable[str] = False, batch_size: int | None = None,
            device: "str | torch.device | None" = None) -> EmulationResult:
    """Run ``qnet`` on integer input ``x`` for ``steps`` steps, bit-exact with Lava fixed_pt.

    ``x``: (N, T_in, *input_shape) time-varying (step t uses x[:, (t-1) % T_in]) or
    (N, *input_shape) static, PyTorch order. ``inject``: how an input block *with* a neuron
    gets x ('a_in': added to a_in every step; 'bias': its bias_mant). ``record``: True, or block
    names whose per-step states to keep. ``batch_size``: samples per chunk (default 256).
    ``device``: where to run (``base.devices``; default cpu). Only the CPU is implemented: its
    exact kernels (oneDNN int8, the fused numba loops) are CPU kernels, so 'cuda' is refused
    with one clear error rather than run on an untested path (docs/speed.md).
    """
    if on_device(device).type != "cpu":
        raise LoihiConvError(f"the emulator has no {device!r} path yet: its exact integer kernels are CPU "
                             "kernels and no GPU run has checked a CUDA port", "use device='cpu' (the default)")
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
        self.readout_key = readout_state(em.qnet.output.neuron)  # recorded every step when set
        self.trace = (np.zeros((n, steps, *out.shape), np.int32)
                      if self.readout_key is not None else None)

    def start_chunk(self, lo: int, size: int, streaming: bool = True) -> None:
        """Rows lo:lo+size come next; ``streaming``: from ``step`` (else from record_train)."""
        self.rows = slice(lo, lo + size)
        self.chunk_counts = {k: zeros(size, self.em.by_name[k].shape, torch.int32)
                             for k in self.counted} if streaming else {}

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
        if self.trace is not None:
            self.trace[rows, t] = em.states(em.output.name)[self.readout_key].numpy()

    def end_chunk(self) -> None:
        for k in self.counted:
            self.counts[k][self.rows] = self.chunk_counts[k].numpy()

    def records(self, name: str) -> bool:
        """Layer-major: whether block ``name``'s states are wanted after every step."""
        return name in self.states or (name == self.em.output.name and self.trace is not None)

    def record_states(self, name: str, t: int, lo: int, hi: int, runner) -> None:
        """Layer-major: states of samples lo:hi (of the chunk) after step t."""
        rows = slice(self.rows.start + lo, self.rows.start + hi)
        if name in self.states:
            for k, v in runner.states().items():
                self.states[name][k][rows, t] = v.numpy()
        if name == self.em.output.name and self.trace is not None:
            self.trace[rows, t] = runner.states()[self.readout_key].numpy()

    def count_rows(self, name: str) -> np.ndarray:
        """Layer-major: this chunk's rows of the message counts of ``name`` (B, *shape) int64,
        zeroed, for _run_neuron to add into."""
        rows = self.counts[name][self.rows]
        rows.fill(0)
        return rows

    def record_train(self, name: str, train: torch.Tensor, frame_of: list[int]) -> None:
        """Layer-major: a block's whole message train (frames (nf*B, *shape), frame_of[t]);
        the output's decode state comes from the per-step ``trace``."""
        rows, em = self.rows, self.em
        batch = rows.stop - rows.start
        frames = train.reshape(-1, batch, *train.shape[1:])
        if name in self.states or name == em.output.name:
            per_step = frames[frame_of].transpose(0, 1).numpy()  # (B, steps, *shape)
            if name == em.output.name:
                self.output[rows] = per_step
            if name in self.states:
                self.states[name]["s"][rows] = per_step

    def result(self) -> EmulationResult:
        final = None if self.trace is None else self.trace[:, -1].astype(np.int64)
        return EmulationResult(output=self.output, steps=self.steps, states=self.states,
                               spike_counts=self.counts, readout=final, readout_trace=self.trace)


# ---- layer-major schedule ------------------------------------------------------------------
# Without recurrence, block k at step t depends only on earlier blocks at steps < t (every
# synapse delays >= 1 step), so each block can run over all steps before the next one: big
# synapse calls on a source's message train ((steps*B, *shape) rows, step-major), a time block
# of steps at a time, each followed by the neuron recurrence over those steps on cache-sized
# batch slices. Same runners, same arithmetic, same results as ``Emulator.step``; only the loop
# order changes.
TRAIN_BYTES = 2 ** 28  # bound on one block's int32 message/input train per chunk
SLICE_ELEMS = 2 ** 17  # neurons per elementwise op and thread: states stay in L2 across steps
BLOCK_BYTES = 2 ** 22  # int32 synapse output per time block: read back from cache, not DRAM
COUNT_FLUSH = 255  # uint8 message counts are added into int64 at least this often


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


def _synapse_inputs(syn, src_train: torch.Tensor, frame_of: list[int], max_abs: int,
                    t0: int, t1: int, batch: int, memo: dict) -> list[torch.Tensor]:
    """Per step t in [t0, t1) (0-based), the buffer this synapse sends at t: W·msg(t-1-d)
    summed over delays d, with Lava's wraps. ``src_train`` holds the source's distinct message
    frames (nf*B, *src_shape); frame_of[t] is the frame sent at step t. ``memo`` keeps the
    last ``apply`` (valid until the runner's next one) so a static input is convolved once."""
    need = {t: [(d, frame_of[t - 1 - d]) for d in syn.delays if t - 1 - d >= 0]
            for t in range(t0, t1)}
    used = sorted({f for parts in need.values() for _, f in parts})
    zero = (torch.zeros((batch, *syn.dst_shape), dtype=torch.int32)
            if not all(need.values()) else None)  # only steps before any arrival need it
    if not used:
        return [zero] * (t1 - t0)
    pos = {f: i for i, f in enumerate(used)}
    if memo.get("used") != used:
        if used == list(range(used[0], used[-1] + 1)):  # a run of steps: a view, no copy
            frames = src_train[used[0] * batch:(used[-1] + 1) * batch]
        else:
            frames = torch.cat([_rows(src_train, f, batch) for f in used])
        # {delay: (len(used)*B, *dst) int32 or int64}
        memo.update(used=used, ys=_apply_nonzero(syn, frames, max_abs))
    ys = memo["ys"]
    if list(ys) == [0] and ys[0].dtype == torch.int32:
        return [_rows(ys[0], pos[need[t][0][1]], batch) if need[t] else zero
                for t in range(t0, t1)]
    acc = []
    for t in range(t0, t1):
        parts = [_rows(ys[d], pos[f], batch).to(torch.int64) for d, f in need[t]]
        acc.append(syn.finish(reduce(torch.add, parts)) if parts else zero)
    return acc


def _apply_nonzero(syn, frames: torch.Tensor, max_abs: int) -> dict[int, torch.Tensor]:
    """``syn.apply`` computed on the frames' non-zero rows (one sample at one step) only.

    W·0 = 0, and so are its wraps, so an all-zero message costs a zero fill instead of a conv:
    an sdnn train is mostly zero once its deltas settle (a static input stops changing after a
    few steps), a spiking one before a layer's first spike. Same values as ``syn.apply``."""
    rows = frames.shape[0]
    idx = torch.count_nonzero(frames, dim=tuple(range(1, frames.dim()))).nonzero().squeeze(1)
    if idx.numel() > SKIP_ZERO_ROWS * rows:
        return syn.apply(frames, max_abs)
    some = syn.apply(frames.index_select(0, idx) if idx.numel() else frames[:1], max_abs)
    out = {}
    for d, y in some.items():
        fmt = torch.channels_last if y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        full = torch.empty((rows, *y.shape[1:]), dtype=y.dtype, device=y.device, memory_format=fmt).zero_()
        if idx.numel():
            full.index_copy_(0, idx, y)
        out[d] = full
    return out


def _run_layer_major(em: Emulator, xc: torch.Tensor, steps: int, lo: int,
                     rec: "_Recorder") -> None:
    """Emulate samples xc (B, T_in, *input_shape) block by block; results go to ``rec`` rows
    lo:lo+B (trains are step-major: row t*B + b is sample b at step t)."""
    batch, t_in = xc.shape[0], xc.shape[1]
    inject = em.inject
    em.set_bounds(abs_bound(xc))  # the runners' states live in _run_neuron's slices
    rec.start_chunk(lo, batch, streaming=False)
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
                rec.record_train(node.name, x_frames, x_of)
                continue
            if node is em.input:
                a_in = ([_rows(x_frames, x_of[t], batch) for t in range(steps)]
                        if inject == "a_in" else
                        [torch.zeros((batch, *node.shape), dtype=torch.int32)] * steps)
                inputs = [(0, steps, a_in)]
            else:
                # The sources' actual message bounds (not their static worst case) bound a_in:
                # tighter bounds let the neuron runners prove their int32 paths exact.
                node.a_bound = sum(syn.out_bound(trains[src][2]) for syn, src in node.synapses)
                inputs = _neuron_inputs(em, node, trains, steps, batch)
            train = _run_neuron(
                em, node, qblocks[node.name], inputs, steps, batch,
                xc[:, 0] if node is em.input and inject == "bias" else None, rec)
            rec.record_train(node.name, train, list(range(steps)))
            train, bound = (train, 1) if node.neuron.binary else _narrow(train, em.spans.pop(node.name, None))
            trains[node.name] = (train, list(range(steps)), bound)


def _narrow(train: torch.Tensor, span: tuple[int, int] | None = None) -> tuple[torch.Tensor, int]:
    """A graded message train and its max |message|; non-negative messages <= INT8_SRC_MAX
    (multi-bit and burst payloads) come back as uint8, which the synapses sum with exact int8
    kernels (synapses._int8_kernel) instead of float ones."""
    if train.numel() == 0:
        return train, 0
    lo, hi = span if span is not None else (int(train.min()), int(train.max()))
    if lo >= 0 and hi <= INT8_SRC_MAX:
        return train.to(torch.uint8), hi
    return train, max(hi, -lo)


def _block_steps(node: _Node, feeds, steps: int, batch: int) -> int:
    """Steps per time block of a node's synapse inputs (``feeds``: see _neuron_inputs): all
    steps when every input is static (computed once) or delayed (one apply covers every delay),
    else as many as keep the int32 block within BLOCK_BYTES, so it is still in cache when the
    neuron steps read it."""
    static = all(len(set(frame_of[:steps - 1])) <= 1 for _, _, frame_of, _ in feeds)
    if static or any(runner.delays != (0,) for runner, *_ in feeds):
        return steps
    return max(1, BLOCK_BYTES // (4 * batch * max(1, int(np.prod(node.shape)))))


def _neuron_inputs(em: Emulator, node: _Node, trains, steps: int, batch: int):
    """Lava InPort recv per step, block by block of steps: yields (t0, t1, [a(t) for t in
    t0..t1-1]), a(t) the int32 sum of every synapse's buffer (wraps mod 2^32), (B, *shape)."""
    # (runner, train, frame_of, bound) per synapse: a synapse with a spiking max-pool stage
    # gets its source's train pooled first (synapses.PooledRunner.feed), then its inner runner.
    feeds = [syn.feed(*trains[src], batch) for syn, src in node.synapses]
    tb = _block_steps(node, feeds, steps, batch)
    memos = [{} for _ in feeds]
    sums: dict = {}
    for t0 in range(0, steps, tb):
        t1 = min(t0 + tb, steps)
        per_syn = [_synapse_inputs(*feed, t0, t1, batch, memo) for feed, memo in zip(feeds, memos)]
        if len(per_syn) == 1:
            yield t0, t1, per_syn[0]
        elif node.a_bound <= I32_MAX:
            # Summed into consecutive rows of one buffer: the fused kernels read a block of
            # steps as one strided view (fused.segments), and nothing is allocated per step.
            buf = scratch(sums, 0, ((t1 - t0) * batch, *node.shape), torch.int32)
            rows = [_rows(buf, k, batch) for k in range(t1 - t0)]
            for row, parts in zip(rows, zip(*per_syn)):
                torch.add(parts[0], parts[1], out=row)
                for p in parts[2:]:
                    row.add_(p)
            yield t0, t1, rows
        else:
            yield t0, t1, [wrap32(reduce(torch.add, (p.to(torch.int64) for p in parts)))
                           .to(torch.int32) for parts in zip(*per_syn)]


def _run_neuron(em: Emulator, node: _Node, block, inputs, steps: int, batch: int,
                bias: torch.Tensor | None, rec: "_Recorder"):
    """The neuron recurrence over all steps, slice by slice of the batch, time block by time
    block of ``inputs`` ((t0, t1, a_in per step) each, see _neuron_inputs); counts the non-zero
    messages per neuron into ``rec``. Returns the message train (steps*B, *shape) (uint8 0/1
    for spiking blocks, int32 otherwise; reused by the next chunk)."""
    size = max(1, int(np.prod(node.shape)))
    # SLICE_ELEMS per intra-op thread: each keeps its share of the states in its own L2, and
    # fewer, larger ops halve the per-op overhead that threads do not share.
    step = max(1, SLICE_ELEMS * torch.get_num_threads() // size)
    dtype = torch.uint8 if node.neuron.binary else torch.int32
    # Every row is written; the buffer is the node's train of the previous chunk (recorded).
    train = scratch(em.scratch, node.name, (steps * batch, *node.shape), dtype)
    # Counted while the message is in cache, in uint8 (same-dtype adds are ~10x faster than
    # widening ones), flushed to int64 before it can wrap.
    count8 = zeros(batch, node.shape, torch.uint8)
    counts = rec.count_rows(node.name)
    if fused.ENABLED and not rec.records(node.name):
        runner = make_neuron(block.neuron, block)
        runner.reset(batch, node.a_bound, bias)
        kernel = fused_for(runner, node.shape)
        if kernel is not None:
            if _run_fused(kernel, runner, inputs, train, counts, batch) and kernel.span is not None:
                em.spans[node.name] = (int(kernel.span[:, 0].min()), int(kernel.span[:, 1].max()))
            return train
    slices = []
    for lo in range(0, batch, step):
        hi = min(lo + step, batch)
        runner = make_neuron(block.neuron, block)
        runner.reset(hi - lo, node.a_bound, None if bias is None else bias[lo:hi])
        slices.append((lo, hi, runner))
    recorded = rec.records(node.name)
    for t0, t1, a_in in inputs:
        for lo, hi, runner in slices:
            whole, c8 = hi - lo == batch, count8[lo:hi]
            for t in range(t0, t1):
                msg = runner.step(a_in[t - t0] if whole else a_in[t - t0][lo:hi])
                train[t * batch + lo:t * batch + hi] = msg
                c8.add_(msg if msg.dtype == torch.uint8 else (msg != 0).view(torch.uint8))
                if (t + 1) % COUNT_FLUSH == 0:
                    counts[lo:hi] += c8.numpy()
                    c8.zero_()
                if recorded:
                    rec.record_states(node.name, t, lo, hi, runner)
    counts += count8.numpy()
    return train


def _run_fused(kernel, runner, inputs, train: torch.Tensor, counts: np.ndarray, batch: int) -> None:
    """_run_neuron's loop through a fused kernel (whole batch, whole time blocks); the steps a
    kernel leaves (a SigmaDelta that must widen to int64) go through the runner. Returns whether
    the kernel ran every step (then its message ``span`` covers the whole train)."""
    msgs = flat(train).reshape(-1, train[:batch].numel())  # (steps, B * P)
    count = zeros(batch, tuple(train.shape[1:]), torch.int32)
    whole = True
    for t0, t1, a_in in inputs:
        done = kernel.run(a_in, msgs[t0:t1], flat(count))
        whole = whole and done == t1 - t0
        for t in range(t0 + done, t1):
            msg = runner.step(a_in[t - t0])
            train[t * batch:(t + 1) * batch] = msg
            count.add_(msg if msg.dtype == torch.uint8 else (msg != 0).to(torch.int32))
    counts += count.numpy()
    return whole
