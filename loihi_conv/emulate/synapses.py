"""Synapse runners: Lava's Dense / DelayDense / Conv fixed-point models on batched torch tensors.

Layouts: messages in are (B, *source.shape) (PyTorch order; a dense synapse flattens them in
C order, like NetX ``flatten``); buffers out are int32 (B, *target.shape).

Exactness: when the bound ``max_row_sum|W| * max|message|`` is <= 2^24, integer sums are
computed with oneDNN u8 x s8 kernels (uint8 messages <= 127) or float32 BLAS/oneDNN (others);
with float64 when <= 2^53, and by splitting the messages into float64-exact digits beyond; Lava's
wraps are then applied explicitly. A conv whose kernel is constant on stride-sized blocks (a
folded average pool) runs as exact sum pooling then a stride-1 conv (``block_factor``).

A synapse with a ``qir.SpikePool`` runs behind a pooling stage (``PooledRunner``; integer rules
in the qir module doc): the stage turns the source's (B, C, H, W) message into the pooled
(B, C, H', W') one in the same step, and the inner Dense/Conv runner sees only pooled messages.
Every stage's output stays within the source's per-step message range (and dtype: 0/1 uint8
spikes stay uint8), so the bounds and int8 fast paths above apply unchanged.
"""
from __future__ import annotations

from functools import partial, singledispatch
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.limits import CONV_WRAP, DELAY_MAX, RATE_DECAY_SHIFT, RATE_INPUT_SHIFT
from loihi_conv.base.registry import registrar
from loihi_conv.fixed.qir import POOL_SCHEMES, ConvSyn, DenseSyn, SpikePool, Synapse

from . import fused
from .arith import F32_EXACT, F64_EXACT, I32_MAX, float_to_int32_x86, wrap, wrap32, zeros

MAX_DELAY = DELAY_MAX  # NetX clips dense delays to 62 (DelayDense allows <= 63)
DENSE_WRAP = 2 ** 31  # dense a_buf travels on an int32 channel
CHUNK_BYTES = 2 ** 21  # float output of one layer-major synapse call: stays in L2
WRAP_SHIFT = 32 - CONV_WRAP.bit_length()  # int32 bits above the 24-bit a_buf
INT8_SRC_MAX = 127  # largest uint8 message the oneDNN u8 x s8 kernels sum exactly (_int8_kernel)


class ExactLinear:
    """Exact integer ``W·s`` through a float linear op (matmul or conv).

    ``fn(s_float, w_float) -> y_float`` is the op; ``weight`` an int array whose first axis is
    the output (row) axis. Every partial sum of one output is bounded by ``row_l1 * max|s|``,
    so if that bound is float-exact, any summation order (BLAS, oneDNN) is exact.
    """

    def __init__(self, weight: np.ndarray,
                 fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 int8_fn: Callable[[np.ndarray, int], Callable] | None = None):
        w = np.asarray(weight, dtype=np.int64)
        self.weight = torch.from_numpy(w)
        rows = np.abs(w).reshape(w.shape[0], -1).sum(axis=1) if w.size else np.zeros(1, np.int64)
        self.row_l1 = int(rows.max()) if rows.size else 0
        if self.row_l1 >= F64_EXACT:
            raise LoihiConvError(
                f"synapse weights too large: a row of |W| sums to {self.row_l1} >= 2^53",
                "quantize the weights to at most 8-16 bits (Loihi weights are 8-bit)")
        self.fn = fn
        self._w: dict[torch.dtype, torch.Tensor] = {}
        self._int8_fn, self._int8 = int8_fn, None  # built on first use (prepacking costs)

    def _weight(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self._w:
            w = self.weight.to(dtype)
            self._w[dtype] = w.contiguous(memory_format=torch.channels_last) if w.ndim == 4 else w
        return self._w[dtype]

    def bound(self, max_abs: int) -> int:
        """Upper bound on |W·s| (and every partial sum) when |s| <= max_abs."""
        return self.row_l1 * max_abs

    def __call__(self, s: torch.Tensor, max_abs: int, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Exact ``W·s``: int32 when the bound is < 2^31, else int64 (exact, or mod 2^64).

        ``out``: an int32 tensor of the result's shape and layout to convert an int32 result
        into (no temporary); an int64 result never goes there.
        """
        y = self._exact(s, max_abs)
        if self.bound(max_abs) >= DENSE_WRAP:
            return y.to(torch.int64)
        return y.to(torch.int32) if out is None else out.copy_(y)

    def _exact(self, s: torch.Tensor, max_abs: int) -> torch.Tensor:
        """``W·s`` in the cheapest exact form: float32 / float64 / int64 holding the integers."""
        b = self.bound(max_abs)
        if s.dtype == torch.bool:
            s = s.view(torch.uint8)  # same bytes; uint8 -> float is ~8x faster than bool -> float
        if self._int8_fn is not None and max_abs <= INT8_SRC_MAX and s.dtype == torch.uint8 \
                and b <= F32_EXACT:
            if self._int8 is None:
                self._int8 = _int8_kernel(self.weight.numpy(), self._int8_fn)
                self._int8_fn = None if self._int8 is None else self._int8_fn
            if self._int8 is not None:
                return self._int8(s)
        if b <= F32_EXACT:
            return self.fn(s.to(torch.float32), self._weight(torch.float32))
        if b <= F64_EXACT:
            return self.fn(s.to(torch.float64), self._weight(torch.float64))
        # Split s = hi * 2^k + lo with 0 <= lo < 2^k so that each part's sum is float64-exact.
        k = max(1, (F64_EXACT // max(self.row_l1, 1)).bit_length() - 1)
        s = s.to(torch.int64)
        lo = s & ((1 << k) - 1)
        hi = s >> k
        y_lo = self._exact(lo, (1 << k) - 1).to(torch.int64)
        y_hi = self._exact(hi, (max_abs >> k) + 1).to(torch.int64)
        return y_lo + (y_hi << k)


def _int8_kernel(w: np.ndarray, factory) -> Callable | None:
    """An exact int8 kernel for uint8 messages in [0, 127], or None when the weights do not fit.

    Loihi weights are 8-bit mantissas times 2^k: ``w = q * 2^k`` with q in [-128, 127]. oneDNN's
    u8 x s8 kernels accumulate in int32 (exact; inputs <= 127 cannot saturate even the pre-VNNI
    16-bit pair sums, |s1 q1 + s2 q2| <= 2 * 127 * 128 < 2^15) and convert to float32 with the
    per-channel scale 2^k: exact whenever the float32 path is (bound <= 2^24; a power-of-two
    scale only moves the exponent). It is ~4-8x faster than the float32 kernels on CPUs with VNNI.
    """
    if factory is None or w.size == 0 or not np.any(w):
        return None
    k = 0
    while k < 16 and not np.any(w & ((1 << (k + 1)) - 1)):
        k += 1  # largest common power of two
    q = w >> k
    if q.min() < -128 or q.max() > 127:
        return None
    try:
        return factory(q.astype(np.int8), k)
    except (RuntimeError, AttributeError):  # a torch build without the oneDNN int8 ops
        return None


def _qlinear(q: np.ndarray, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """oneDNN u8 x s8 linear: (M, N_in) uint8 -> (M, N_out) float32 = s @ (q * 2^k).T."""
    packed = torch.ops.onednn.qlinear_prepack(torch.from_numpy(q), None)
    scale = torch.full((q.shape[0],), float(2 ** k))
    zp = torch.zeros(q.shape[0], dtype=torch.int64)

    def run(s: torch.Tensor) -> torch.Tensor:
        return torch.ops.onednn.qlinear_pointwise(s.contiguous(), 1.0, 0, packed, scale, zp, None,
                                                  1.0, 0, torch.float32, "none", [], "")
    run(torch.zeros((1, q.shape[1]), dtype=torch.uint8))  # fail here, not mid-run
    return run


def _qconv(stride, padding, dilation, groups):
    """oneDNN u8 x s8 conv factory: (B, C, H, W) uint8 channels-last -> float32 channels-last."""
    def factory(q: np.ndarray, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        scale = torch.full((q.shape[0],), float(2 ** k))
        zp = torch.zeros(q.shape[0], dtype=torch.int64)
        packed = torch.ops.onednn.qconv_prepack(torch.from_numpy(q), scale, 1.0, 0, list(stride),
                                                list(padding), list(dilation), groups, None)

        def run(s: torch.Tensor) -> torch.Tensor:
            return torch.ops.onednn.qconv2d_pointwise(
                s.contiguous(memory_format=torch.channels_last), 1.0, 0, packed, scale, zp, None,
                list(stride), list(padding), list(dilation), groups, 1.0, 0, torch.float32,
                "none", [], "")
        return run
    return factory


class DenseRunner:
    """Lava ``Dense`` / ``DelayDense`` fixed point (PyDenseModelBitAcc, PyDelayDenseModelBitAcc).

    Lava (dense/models.py:96-107, 330-360): at step t send a_buf(t-1), then
    ``acc = W·s(t)`` (int64 sum for spikes, int32 dot for graded messages) and the int32 channel
    wraps it: ``a = wrap32(W·s)``. With delays, the contribution of a synapse with delay d
    arrives d steps after the normal one-step delay (bucketed ring buffer ``a_buff[:, d]``).
    """

    def __init__(self, syn: DenseSyn, src_shape: tuple[int, ...], dst_shape: tuple[int, ...]):
        w = np.asarray(syn.weight, dtype=np.int64)
        n_out, n_in = int(np.prod(dst_shape)), int(np.prod(src_shape))
        if w.shape != (n_out, n_in):
            raise LoihiConvError(
                f"dense synapse from '{syn.source}' has weight shape {w.shape}, expected "
                f"{(n_out, n_in)} for source shape {src_shape} and target shape {dst_shape}",
                "give DenseSyn.weight as (N_out, N_in) with N_in the C-order flattened source")
        self.src_shape, self.dst_shape = tuple(src_shape), tuple(dst_shape)
        delay = self._delays(syn, w.shape)
        self.depth = int(delay.max()) + 1 if delay.size else 1
        self.ops = {int(d): ExactLinear(np.where(delay == d, w, 0), F.linear, _qlinear)
                    for d in np.unique(delay)}
        self.delays = tuple(sorted(self.ops))  # the distinct delays (apply's keys)
        self._nhwc_ops: dict[int, ExactLinear] | None = None  # built on first use
        self._scratch: dict = {}  # apply's output, reused by the next apply (see scratch)
        self.can_freeze = self.depth == 1  # constant input -> constant buffer

    def _flat(self, s: torch.Tensor) -> tuple[torch.Tensor, dict[int, ExactLinear]]:
        """(B, *source.shape) -> (B, N_in) and the ops whose weight columns are in that order.

        A channels-last (B, C, H, W) source is flattened in its memory order (H, W, C), a view,
        with the weight columns permuted to match: NetX's C-order flatten would copy the train.
        """
        if s.ndim != 4 or s.is_contiguous() or not s.is_contiguous(
                memory_format=torch.channels_last):
            return s.reshape(s.shape[0], -1), self.ops
        if self._nhwc_ops is None:
            c, h, w = self.src_shape
            self._nhwc_ops = {d: ExactLinear(op.weight.numpy().reshape(-1, c, h, w)
                                             .transpose(0, 2, 3, 1).reshape(-1, c * h * w),
                                             F.linear, _qlinear)
                              for d, op in self.ops.items()}
        return s.permute(0, 2, 3, 1).reshape(s.shape[0], -1), self._nhwc_ops

    @staticmethod
    def _delays(syn: DenseSyn, shape: tuple[int, int]) -> np.ndarray:
        if syn.delay is None:
            return np.zeros(shape, dtype=np.int64)
        d = np.asarray(syn.delay, dtype=np.int64)
        if d.ndim == 1 and d.shape[0] == shape[0]:
            d = np.repeat(d[:, None], shape[1], axis=1)  # NetX: one delay per output row
        if d.shape != shape:
            raise LoihiConvError(
                f"dense synapse from '{syn.source}' has delay shape {d.shape}, expected {shape} "
                f"or ({shape[0]},)", "give one delay per synapse or per output neuron")
        if d.size and (d.min() < 0 or d.max() > MAX_DELAY):
            raise LoihiConvError(
                f"dense synapse from '{syn.source}' has delays in [{d.min()}, {d.max()}]",
                f"use delays in [0, {MAX_DELAY}] (Loihi 2 / NetX limit)")
        return d

    def out_bound(self, max_abs: int) -> int:
        """Static bound on |a_buf| for messages |s| <= max_abs (after Lava's int32 wrap)."""
        return min(sum(op.bound(max_abs) for op in self.ops.values()), DENSE_WRAP)

    def reset(self, batch: int) -> None:
        n_out = int(np.prod(self.dst_shape))
        self.ring = torch.zeros((self.depth, batch, n_out), dtype=torch.int64)
        self.ptr = 0
        self.buf = torch.zeros((batch, *self.dst_shape), dtype=torch.int32)

    def send(self) -> torch.Tensor:
        """The a_buf computed at the previous step, int32 (B, *target.shape)."""
        if self.depth == 1:
            return self.buf
        out = wrap32(self.ring[self.ptr]).to(torch.int32).reshape(-1, *self.dst_shape)
        self.ring[self.ptr].zero_()
        return out

    def apply(self, s: torch.Tensor, max_abs: int) -> dict[int, torch.Tensor]:
        """Layer-major: W·s for many messages at once, (M, *source.shape) -> {delay d: (M,
        *target.shape)}; int32 already wrapped without delays (overwritten by the next
        ``apply``), else exact int64 parts that ``finish`` wraps once they are summed per
        arrival step (the ring buffer's sum)."""
        s, ops = self._flat(s)
        if self.depth == 1:
            y = scratch(self._scratch, 0, (s.shape[0], int(np.prod(self.dst_shape))),
                        torch.int32)
            return {0: in_chunks(partial(self._undelayed, ops[0]), s, max_abs, y)
                    .reshape(-1, *self.dst_shape)}
        return {d: op(s, max_abs).to(torch.int64).reshape(-1, *self.dst_shape)
                for d, op in ops.items()}

    @staticmethod
    def _undelayed(op: ExactLinear, s: torch.Tensor, max_abs: int,
                   out: torch.Tensor | None = None) -> torch.Tensor:
        """W·s of a synapse without delays, wrapped like Lava's int32 channel when it can
        overflow: (B, N_in) -> (B, N_out) int32 (into ``out`` when given)."""
        if op.bound(max_abs) < DENSE_WRAP:
            return op(s, max_abs, out)
        y = wrap32(op(s, max_abs)).to(torch.int32)
        return y if out is None else out.copy_(y)

    @staticmethod
    def finish(acc: torch.Tensor) -> torch.Tensor:
        """The int32 channel's wrap of a summed int64 ring-buffer slot."""
        return wrap32(acc).to(torch.int32)

    def receive(self, s: torch.Tensor, max_abs: int) -> None:
        """Accumulate W·s(t); must follow ``send`` of the same step."""
        s, ops = self._flat(s)
        if self.depth == 1:
            self.buf = self._undelayed(ops[0], s, max_abs).reshape(-1, *self.dst_shape)
            return
        for d, op in ops.items():
            self.ring[(self.ptr + 1 + d) % self.depth] += op(s, max_abs).to(torch.int64)
        self.ptr = (self.ptr + 1) % self.depth

    def feed(self, train: torch.Tensor, frame_of: list[int], bound: int, batch: int):
        """Layer-major: what ``apply`` runs on, (self, train, frame_of, bound) as given (a
        ``PooledRunner`` pools the train first)."""
        return self, train, frame_of, bound


def conv_output_shape(syn: ConvSyn, src_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """PyTorch / Lava conv output size: floor((X + 2p - d(k-1) - 1)/s) + 1 per spatial axis."""
    co, _, kh, kw = np.asarray(syn.weight).shape
    _, h, w = src_shape
    out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
           for n, k, s, p, d in zip((h, w), (kh, kw), syn.stride, syn.padding, syn.dilation)]
    return (co, out[0], out[1])


class ConvRunner:
    """Lava ``Conv`` fixed-point model (PyConvModelFixed, conv/models.py:34-79; conv/utils.py).

    ``y = correlation(s, W)`` (float64 in Lava, exact for ints), ``y.astype(int32)``, then the
    24-bit wrap ``a = ((y + 2^23) mod 2^24) - 2^23``; sent one step later.
    """

    can_freeze = True
    delays = (0,)  # apply's keys

    def __init__(self, syn: ConvSyn, src_shape: tuple[int, ...], dst_shape: tuple[int, ...]):
        w = np.asarray(syn.weight, dtype=np.int64)
        if len(src_shape) != 3 or w.ndim != 4 or w.shape[1] * syn.groups != src_shape[0] \
                or w.shape[0] % syn.groups:
            raise LoihiConvError(
                f"conv synapse from '{syn.source}': weight {w.shape} with groups={syn.groups} "
                f"does not fit source shape {src_shape}",
                "weight must be (C_out, C_in/groups, kH, kW) with a (C, H, W) source")
        expect = conv_output_shape(syn, src_shape)
        if tuple(dst_shape) != expect:
            raise LoihiConvError(
                f"conv synapse from '{syn.source}' produces shape {expect}, but the target block "
                f"has shape {tuple(dst_shape)}", "fix the block shape or stride/padding/dilation")
        self.dst_shape = tuple(dst_shape)
        stride, padding, dilation, groups = (tuple(syn.stride), tuple(syn.padding),
                                             tuple(syn.dilation), int(syn.groups))
        sub = block_factor(w, stride, dilation)
        # A kernel constant on stride-sized blocks (an average pool folded into the next conv)
        # is sum pooling followed by a stride-1 conv with one tap per block: stride^2 fewer MACs.
        self.block, self.padding = (stride, padding) if sub is not None else (None, None)
        if sub is not None:
            w, stride, padding = sub, (1, 1), (0, 0)
        self.gain = 1 if self.block is None else self.block[0] * self.block[1]
        self._scratch: dict = {}  # apply's output, reused by the next apply (see scratch)
        self.op = ExactLinear(w, lambda s, wt: F.conv2d(*_safe_layout(s, wt), None, stride, padding, dilation,
                                                        groups),
                              _qconv(stride, padding, dilation, groups))

    def bound(self, max_abs: int) -> int:
        """Bound on |W·s| (before the 24-bit wrap) for messages |s| <= max_abs."""
        return self.op.bound(max_abs * self.gain)

    def out_bound(self, max_abs: int) -> int:
        return min(self.bound(max_abs), CONV_WRAP)

    def reset(self, batch: int) -> None:
        self.buf = zeros(batch, self.dst_shape, torch.int32)

    def send(self) -> torch.Tensor:
        return self.buf

    def apply(self, s: torch.Tensor, max_abs: int) -> dict[int, torch.Tensor]:
        """Layer-major: the buffers of many messages at once, (M, *source.shape) channels-last
        -> {0: (M, *target.shape) int32 channels-last}, overwritten by the next ``apply``."""
        y = scratch(self._scratch, 0, (s.shape[0], *self.dst_shape), torch.int32)
        return {0: in_chunks(self._buffer, s, max_abs, y)}

    def receive(self, s: torch.Tensor, max_abs: int) -> None:
        self.buf = self._buffer(s, max_abs)

    def feed(self, train: torch.Tensor, frame_of: list[int], bound: int, batch: int):
        """Layer-major: what ``apply`` runs on, (self, train, frame_of, bound) as given (a
        ``PooledRunner`` pools the train first)."""
        return self, train, frame_of, bound

    def _buffer(self, s: torch.Tensor, max_abs: int, out: torch.Tensor | None = None
                ) -> torch.Tensor:
        """The 24-bit wrapped ``W·s``: (B, *source.shape) -> (B, *target.shape) int32 (into
        ``out`` when given). Channels-last in and out: the target's states are channels-last."""
        s = s.contiguous(memory_format=torch.channels_last)
        wide = self.bound(max_abs) >= CONV_WRAP
        if self.block is not None:
            s, max_abs = block_sum(F.pad(s, _pad4(self.padding)) if any(self.padding) else s,
                                   self.block, max_abs)
        if not wide:
            y = self.op(s, max_abs, out)
        elif self.op.bound(max_abs) <= I32_MAX:  # int32 already: astype(int32) is a no-op
            # The 24-bit wrap as a sign extension from bit 23, in place on the int32 result.
            y = self.op(s, max_abs, out).bitwise_left_shift_(WRAP_SHIFT).bitwise_right_shift_(WRAP_SHIFT)
        else:
            y = wrap(float_to_int32_x86(self.op(s, max_abs).to(torch.int64)), 24).to(torch.int32)
            y = y if out is None else out.copy_(y)
        return y.contiguous(memory_format=torch.channels_last)  # (no-op unless C_out == 1)


def scratch(cache: dict, key, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor (channels-last when 4-D) kept in ``cache[key]``: the leading
    rows of the kept one when it has enough, so its previous contents die at the next call.

    Layer-major runs allocate the same large trains chunk after chunk; writing into the pages
    of the last chunk avoids the page faults of a fresh allocation (glibc maps every
    allocation above 32 MiB anew), ~10% of a run.
    """
    t = cache.get(key)
    if t is None or tuple(t.shape[1:]) != tuple(shape[1:]) or t.shape[0] < shape[0] \
            or t.dtype != dtype:
        cache[key] = None  # free the old one first
        t = cache[key] = torch.empty(shape, dtype=dtype, memory_format=torch.channels_last
                                     if len(shape) == 4 else torch.contiguous_format)
    return t[:shape[0]]


def in_chunks(fn: Callable, s: torch.Tensor, max_abs: int, out: torch.Tensor) -> torch.Tensor:
    """``fn(s[rows], max_abs, out[rows])`` over row chunks of CHUNK_BYTES of output: the
    float result of each chunk is still in cache when it is converted into ``out``."""
    rows = max(1, CHUNK_BYTES // max(1, out[:1].numel() * 4))
    for lo in range(0, s.shape[0], rows):
        fn(s[lo:lo + rows], max_abs, out[lo:lo + rows])
    return out


def block_factor(w: np.ndarray, stride: tuple[int, int], dilation: tuple[int, int]
                 ) -> np.ndarray | None:
    """The one-tap-per-block kernel V (C_out, C_in/g, kH/sh, kW/sw) when the conv kernel W is
    constant on stride-sized blocks, ``W[o, i, sh*y + a, sw*x + b] = V[o, i, y, x]``; else None.

    Then ``conv(s, W, stride) = conv(block_sum(s), V, 1)`` exactly (regroup the sum over the
    kernel taps by block): what folding an average pool into the following conv produces.
    """
    sh, sw = stride
    if (sh, sw) == (1, 1) or tuple(dilation) != (1, 1) or w.shape[2] % sh or w.shape[3] % sw:
        return None
    v = w[:, :, ::sh, ::sw]
    if not np.array_equal(np.repeat(np.repeat(v, sh, axis=2), sw, axis=3), w):
        return None
    return np.ascontiguousarray(v)


def _pad4(padding: tuple[int, int]) -> tuple[int, int, int, int]:
    return (padding[1], padding[1], padding[0], padding[0])


def block_sum(s: torch.Tensor, block: tuple[int, int], max_abs: int) -> tuple[torch.Tensor, int]:
    """Exact sums of ``s`` over non-overlapping (sh, sw) blocks (sum pooling; rows and columns
    past the last whole block are dropped). Returns the sums and the bound on their |value|.

    Layouts: s (B, C, H, W) int, best channels-last -> (B, C, H//sh, W//sw) channels-last.
    Sums stay uint8 when they fit (spikes: <= sh*sw), else int32 or int64.
    """
    sh, sw = block
    bound = sh * sw * max_abs
    if s.dtype == torch.bool:
        s = s.view(torch.uint8)
    dtype = (torch.uint8 if s.dtype == torch.uint8 and bound <= 255 else
             torch.int32 if bound <= I32_MAX else torch.int64)
    b, c, h, w = s.shape
    ho, wo = h // sh, w // sw
    x = s[:, :, :ho * sh, :wo * sw].to(dtype).permute(0, 2, 3, 1)  # (B, H, W, C) view
    x = x.reshape(b, ho, sh, wo * sw * c)  # a view when s is channels-last and not cropped
    rows = x[:, :, 0]
    for i in range(1, sh):
        rows = rows + x[:, :, i]  # contiguous rows: vectorized adds
    rows = rows.reshape(b * ho * wo, sw, c)
    if dtype == torch.uint8 and bound <= 127:
        rows = _swar(rows)
    out = rows[:, 0]
    for j in range(1, sw):
        out = out + rows[:, j]
    return out.view(dtype).reshape(b, ho, wo, c).permute(0, 3, 1, 2), bound


def _swar(x: torch.Tensor) -> torch.Tensor:
    """View the last axis of a uint8 tensor as wider ints, so one add sums several byte lanes.

    Exact when every lane sum is <= 127: no carry crosses a lane and no signed word overflows.
    The caller views the result back as uint8.
    """
    if not x.is_contiguous():
        return x
    for dtype, k in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2)):
        if x.shape[-1] % k == 0 and x.storage_offset() % k == 0:
            return x.view(dtype)
    return x


# ---- spiking max-pool stages (qir.SpikePool) --------------------------------------------------
POOL_STAGES: dict[str, type["PoolStage"]] = {}
register_stage = registrar(POOL_STAGES, "spiking max-pool stage (qir.SpikePool.scheme)")


def _state_dtype(bound: int | None) -> torch.dtype:
    """The narrowest exact integer dtype for a state with |value| <= ``bound`` (None: unknown,
    int64). Narrow states halve the memory traffic of the per-step max-pool."""
    if bound is None:
        return torch.int64
    return torch.int16 if bound <= 2 ** 15 - 1 else torch.int32 if bound <= I32_MAX else torch.int64


class PoolStage:
    """One synapse's pooling state. ``reset(batch)``, then ``step(msg)`` once per step in time
    order, (B, C, H, W) int -> (B, C, H', W') of the same dtype; or, layer-major, ``train`` on a
    whole message train. Integer rules: qir module doc."""

    stateless = False

    def __init__(self, pool: SpikePool):
        self.pool = pool

    def maxpool(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """PyTorch's max_pool2d on ints (exact; ties -> first index of the window), always on the
        contiguous (NCHW) layout: torch 2.3's channels-last integer kernel clips negative values
        to 0 (signed sources, rate-gate estimates) and, for uint8, bounds its index by the dtype
        (planes over 255 values are refused), so uint8 spikes also go through int16."""
        p = self.pool
        narrow = x.dtype == torch.uint8
        x = (x.to(torch.int16) if narrow else x).contiguous()
        out = F.max_pool2d(x, tuple(p.kernel), tuple(p.stride),
                           tuple(p.padding), ceil_mode=bool(p.ceil_mode), **kw)
        if not narrow:
            return out
        return (out[0].to(torch.uint8), out[1]) if kw.get("return_indices") else out.to(torch.uint8)

    def reset(self, batch: int, steps: int | None = None, bound: int | None = None) -> None:
        """Forget the state (a new batch of samples); ``steps`` and the message ``bound``, when
        known (layer-major), let the state use a narrower exact dtype."""

    def step(self, msg: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def train(self, train: torch.Tensor, frame_of: list[int], batch: int, bound: int
              ) -> tuple[torch.Tensor, list[int]]:
        """Layer-major: the pooled train of a message train (frames (nf*B, C, H, W), step-major;
        frame_of[t] the frame sent at step t) -> (pooled frames (steps*B, C, H', W')
        channels-last, one per step, and their frame_of). Step by step: each step's state
        stays in cache (a whole-train max-pool is several times slower)."""
        steps = len(frame_of)
        self.reset(batch, steps, bound)
        out = zeros(steps * batch, self.pool.out_shape(train.shape[1:]), train.dtype)
        for t, f in enumerate(frame_of):
            out[t * batch:(t + 1) * batch] = self.step(train[f * batch:(f + 1) * batch])
        return out, list(range(steps))


@register_stage("spike-max")
class SpikeMaxStage(PoolStage):
    """``out = maxpool(msg)``: stateless, so a train pools only its distinct frames."""

    stateless = True

    def step(self, msg: torch.Tensor) -> torch.Tensor:
        return self.maxpool(msg)

    def train(self, train, frame_of, batch, bound):
        nf = train.shape[0] // batch
        out = zeros(nf * batch, self.pool.out_shape(train.shape[1:]), train.dtype)
        for f in range(nf):
            out[f * batch:(f + 1) * batch] = self.step(train[f * batch:(f + 1) * batch])
        return out, frame_of


@register_stage("mli")
class MLIStage(PoolStage):
    """MLIPooling (SpiCalib §3.4) as its identity: ``cum += msg``, ``total = maxpool(cum)``,
    ``out = total - sent``, ``sent = total``; |cum| <= steps * max|msg|."""

    def reset(self, batch: int, steps: int | None = None, bound: int | None = None) -> None:
        self.cum = self.sent = None
        self.dtype = _state_dtype(None if steps is None else steps * max(bound, 1))

    def step(self, msg: torch.Tensor) -> torch.Tensor:
        if self.cum is None:
            self.cum = msg.to(self.dtype, copy=True)
        else:  # uint8 adds into the narrow state directly (no temporary)
            self.cum.add_(msg if msg.dtype == torch.uint8 else msg.to(self.dtype))
        total = self.maxpool(self.cum)
        out = total if self.sent is None else total - self.sent
        self.sent = total
        return out.to(msg.dtype)

    def train(self, train, frame_of, batch, bound):
        """Layer-major: one fused kernel over all steps (emulate.fused, same integers)."""
        if not fused.ENABLED or train.dim() != 4:
            return super().train(train, frame_of, batch, bound)
        steps = len(frame_of)
        out = zeros(steps * batch, self.pool.out_shape(train.shape[1:]), train.dtype)
        fused.mli_train(self.pool, train, frame_of, batch, out)
        return out, list(range(steps))


@register_stage("rate-gate")
class RateGateStage(PoolStage):
    """Gated max-pool (Rueckauer et al. 2016 §3.6): ``r += (msg << RATE_INPUT_SHIFT) -
    (r >> RATE_DECAY_SHIFT)`` (arithmetic shift), then each window passes the message of its
    neuron with the largest ``r`` (first on ties). |r| < max|msg| * 2^(RATE_INPUT_SHIFT +
    RATE_DECAY_SHIFT)."""

    def reset(self, batch: int, steps: int | None = None, bound: int | None = None) -> None:
        self.rate = None
        top = None if bound is None else max(bound, 1) << (RATE_INPUT_SHIFT + RATE_DECAY_SHIFT)
        self.dtype = torch.int64 if top is None or top > I32_MAX else torch.int32

    def step(self, msg: torch.Tensor) -> torch.Tensor:
        m = msg.to(self.dtype) << RATE_INPUT_SHIFT
        self.rate = m if self.rate is None else self.rate - (self.rate >> RATE_DECAY_SHIFT) + m
        _, idx = self.maxpool(self.rate, return_indices=True)  # into each (b, c) plane's H*W
        return msg.reshape(*msg.shape[:2], -1).gather(2, idx.flatten(2)).view(idx.shape)


def make_stage(pool: SpikePool, src_shape: tuple[int, ...], where: str) -> PoolStage:
    """The stage running ``pool`` on a (C, H, W) source; LoihiConvError for a malformed spec."""
    if pool.scheme not in POOL_STAGES:
        raise LoihiConvError(f"{where}: unknown spiking max-pool scheme {pool.scheme!r}",
                             f"use one of {', '.join(POOL_SCHEMES)}")
    geometry = [tuple(int(v) for v in g) for g in (pool.kernel, pool.stride, pool.padding)]
    pairs = all(len(g) == 2 for g in geometry) and len(src_shape) == 3
    (kh, kw), (sh, sw), (ph, pw) = geometry if pairs else ((0, 0),) * 3
    if (not pairs or min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0
            or 2 * ph > kh or 2 * pw > kw or kh > src_shape[1] + 2 * ph or kw > src_shape[2] + 2 * pw):
        raise LoihiConvError(
            f"{where}: spiking max-pool kernel={pool.kernel} stride={pool.stride} "
            f"padding={pool.padding} does not fit the source shape {tuple(src_shape)}",
            "pool (C, H, W) sources with kernel, stride >= 1 and padding <= kernel/2 (PyTorch's rule)")
    return POOL_STAGES[pool.scheme](pool)


class PooledRunner:
    """A Dense/Conv runner fed through a spiking max-pool stage (module doc). Same interface as
    the runners; layer-major callers first turn the source train into the pooled one with
    ``feed`` and then use the inner runner."""

    def __init__(self, runner: type, syn: Synapse, src_shape: tuple[int, ...],
                 dst_shape: tuple[int, ...]):
        self.stage = make_stage(syn.pool, tuple(src_shape), f"synapse from '{syn.source}'")
        self.inner = runner(syn, syn.pool.out_shape(src_shape), dst_shape)
        self.dst_shape, self.delays = self.inner.dst_shape, self.inner.delays
        self.can_freeze = self.inner.can_freeze and self.stage.stateless

    def out_bound(self, max_abs: int) -> int:
        return self.inner.out_bound(max_abs)  # pooled messages stay within the source's bound

    def reset(self, batch: int) -> None:
        self.inner.reset(batch)
        self.stage.reset(batch)

    def send(self) -> torch.Tensor:
        return self.inner.send()

    def receive(self, s: torch.Tensor, max_abs: int) -> None:
        self.inner.receive(self.stage.step(s), max_abs)

    def feed(self, train: torch.Tensor, frame_of: list[int], bound: int, batch: int):
        """Layer-major: (inner runner, pooled train, its frame_of, bound) for a source train."""
        pooled, frames = self.stage.train(train, frame_of, batch, bound)
        return self.inner, pooled, frames, bound


@singledispatch
def make_synapse(syn: Synapse, src_shape: tuple[int, ...], dst_shape: tuple[int, ...]):
    """Build the runner for one qir synapse (registered per synapse type)."""
    raise LoihiConvError(f"the emulator has no model for synapse type {type(syn).__name__}",
                         "use DenseSyn or ConvSyn")


def _maker(runner: type):
    """The runner of a synapse type, behind its pooling stage when it has one."""
    def make(syn, src_shape, dst_shape):
        if getattr(syn, "pool", None) is None:
            return runner(syn, src_shape, dst_shape)
        return PooledRunner(runner, syn, src_shape, dst_shape)
    return make


make_synapse.register(DenseSyn, _maker(DenseRunner))
make_synapse.register(ConvSyn, _maker(ConvRunner))


def _safe_layout(s: torch.Tensor, wt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch 2.3's CPU conv segfaults on a channels-last input one column wide with a padded,
    column-strided kernel (found by tests/test_emulate_props.py): such maps go in NCHW order."""
    if s.dim() == 4 and s.shape[-1] == 1:
        return s.contiguous(), wt.contiguous()
    return s, wt
