"""Fused neuron recurrences: a whole time block of one population in one compiled loop.

The torch runners (neurons.py) make ~6-10 passes over the states per step; these numba kernels
keep one sample's states in cache (registers for the inner loop) and stream only a_in in and
the messages out, for all steps of a block. They compute in int64 registers the same integers
the runners' int32 / int64 paths compute (``fused_for`` hands a runner to a kernel only where
that runner's own path is exact without wraps), so the results are identical
(tests/test_emulate_fused.py compares them with the runners step by step).

Layouts: every array is the flat memory order of a (B, *shape) tensor (channels-last for
(C, H, W) blocks, see arith.zeros); a_in and messages are (steps, B * P), P = prod(shape);
per-neuron parameters are (P,) arrays.
"""
from __future__ import annotations

import os
import threading
from functools import singledispatch

import numba
import numpy as np
import torch
from numba import njit, prange

from loihi_conv.base.limits import DECAY_ONE, STATE_MAX
from loihi_conv.fixed.softif_modes import DEFAULT_MODE

from .neurons import DeltaRunner, Lif, SigmaDeltaRunner, SoftIFRunner

# numba's own thread pool: "workqueue" threads sleep between calls, whereas an OpenMP layer next
# to torch's OpenMP runtime leaves two pools spin-waiting on 2 cores (measured: mnist_cnn cuba
# ~2x slower, the torch ops too). workqueue takes one parallel call at a time: _LOCK.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_LOCK = threading.Lock()
# Off by default: on an idle 2-core machine the torch runners (2 intra-op threads) were faster
# (benchmarks/results/speed.md, before/after: mnist_cnn 0.39-0.91x, resnet18-32 0.69x with the
# kernels); they won only under heavy load (2-4x at load 10-17). LOIHI_CONV_FUSED=1 turns them on.
ENABLED = os.environ.get("LOIHI_CONV_FUSED", "0") == "1"
UV = STATE_MAX + 1
DECAY_SHIFT = DECAY_ONE.bit_length() - 1  # trunc(p / 4096) = sign(p) * (|p| >> 12)
A_SHIFT = 6  # a << 6 (Lava's LIF/SoftIF input scaling, as in neurons.py)
TILE = 2048  # neurons of one sample per inner loop: their states stay in L1 across the steps
PARALLEL_MIN = 2 ** 17  # neuron-steps per call below which one thread is faster (no wake-up of the pool)


def _softif_py(a, v, vth, bias, out, counts):
    """SoftIF 'if-soft': v += a << 6 (+ bias); clip to 24 bits; s = v >= vth; v -= s * vth."""
    nt, m = a.shape
    p = vth.shape[0]
    lim = UV - 1
    for b in prange(m // p):
        for j0 in range(0, p, TILE):
            j1 = min(j0 + TILE, p)
            for t in range(nt):
                for j in range(j0, j1):
                    i = b * p + j
                    x = np.int64(v[i]) + (np.int64(a[t, i]) << A_SHIFT) + bias[j]
                    x = min(max(x, -lim), lim)
                    s = 1 if x >= vth[j] else 0
                    v[i] = x - s * vth[j]
                    out[t, i] = s
                    counts[i] += s


@njit(cache=True, inline="always")
def _decay(x, d):
    if d == 0:
        return x
    if d == DECAY_ONE:
        return np.int64(0)
    q = x * (DECAY_ONE - d)
    return -((-q) >> DECAY_SHIFT) if q < 0 else q >> DECAY_SHIFT


def _lif_py(a, u, v, vth, bias, i_decay, v_decay, wrap_u, out, counts):
    """Lava LIF on its overflow-free path (neurons.Lif._step_int32)."""
    nt, m = a.shape
    p = vth.shape[0]
    lim = UV - 1
    for b in prange(m // p):
        for j0 in range(0, p, TILE):
            j1 = min(j0 + TILE, p)
            for t in range(nt):
                for j in range(j0, j1):
                    i = b * p + j
                    x = _decay(np.int64(u[i]), i_decay) + (np.int64(a[t, i]) << A_SHIFT)
                    if wrap_u:
                        if x > UV:
                            x -= 2 * UV
                        if x <= -UV:
                            x += 2 * UV
                    u[i] = x
                    y = _decay(np.int64(v[i]), v_decay) + x + bias[j]
                    y = min(max(y, -lim), lim)
                    s = 1 if y > vth[j] else 0
                    v[i] = 0 if s else y
                    out[t, i] = s
                    counts[i] += s


def _sigma_delta_py(a, sigma, act, residue, bias, vth, exp, state_exp, sigma_mode, out, counts, span):
    """SigmaDelta (sigma_mode: sigma += a, act_new = relu(sigma + bias)) or Delta (act_new =
    a << exp), then delta encoding (neurons.DeltaEncoder.encode32); span[b] = running (min, max)
    of sample b's messages (the train's range, without another pass over it)."""
    nt, m = a.shape
    p = bias.shape[0]
    for b in prange(m // p):
        lo, hi = span[b, 0], span[b, 1]
        for j0 in range(0, p, TILE):
            j1 = min(j0 + TILE, p)
            for t in range(nt):
                for j in range(j0, j1):
                    i = b * p + j
                    if sigma_mode:
                        sg = np.int64(sigma[i]) + a[t, i]
                        sigma[i] = sg
                        new = max(sg + bias[j], 0)
                    else:
                        new = np.int64(a[t, i]) << exp
                    d = new - act[i] + residue[i]
                    s = d if abs(d) >= vth else 0
                    residue[i] = d - s
                    act[i] = new
                    msg = s >> state_exp
                    out[t, i] = msg
                    counts[i] += 1 if msg != 0 else 0
                    lo = min(lo, msg)
                    hi = max(hi, msg)
        span[b, 0], span[b, 1] = lo, hi


def _pair(fn):
    """(parallel, serial) compilations of one kernel."""
    return (njit(parallel=True, cache=True, nogil=True)(fn), njit(cache=True, nogil=True)(fn))


KERNELS = {"softif": _pair(_softif_py), "lif": _pair(_lif_py), "sigma_delta": _pair(_sigma_delta_py)}


def kernel(name: str, a: np.ndarray):
    """The parallel kernel for big calls (one at a time: _LOCK), the serial one for small ones."""
    if a.size < PARALLEL_MIN:
        return KERNELS[name][1]
    fn = KERNELS[name][0]

    def locked(*args):
        with _LOCK:
            return fn(*args)
    return locked


def flat(x: torch.Tensor) -> np.ndarray:
    """The memory-order 1-D numpy view of a dense (B, *shape) tensor (channels-last or not)."""
    if x.dim() == 4 and not x.is_contiguous():
        x = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    return x.contiguous().reshape(-1).numpy()


def _param(p, shape: tuple[int, ...], dtype=np.int64) -> np.ndarray:
    """A per-neuron parameter (int or (1, *shape) tensor in the states' layout) as (P,)."""
    size = int(np.prod(shape))
    if isinstance(p, int):
        return np.full(size, p, dtype=dtype)
    return flat(p.expand(1, *shape).contiguous(memory_format=_fmt(shape))).astype(dtype)


def _fmt(shape):
    return torch.channels_last if len(shape) == 3 else torch.contiguous_format


def _view(x: torch.Tensor, fmt) -> torch.Tensor | None:
    """x itself when it is a dense int32 tensor in layout ``fmt`` (kernels read its memory)."""
    return x if x.dtype == torch.int32 and x.is_contiguous(memory_format=fmt) else None


def segments(a_in: list[torch.Tensor], fmt):
    """Per-step inputs as few (start, stop, (stop - start, B * P) int32 array) as possible: a
    run of inputs evenly spaced in one buffer (consecutive rows of the synapses' layer-major
    output, or one buffer repeated: a static input's, stride 0) is one strided view, no copy."""
    n = a_in[0].numel()
    start = 0
    while start < len(a_in):
        first = _view(a_in[start], fmt)
        if first is None or n == 0:
            yield start, start + 1, flat(a_in[start].to(torch.int32).contiguous(memory_format=fmt))[None]
            start += 1
            continue
        base, stop, gap = first.untyped_storage().data_ptr(), start + 1, None
        while stop < len(a_in):
            x = _view(a_in[stop], fmt)
            if x is None or x.untyped_storage().data_ptr() != base:
                break
            g = x.data_ptr() - first.data_ptr()
            if gap is None:
                if g % (4 * (stop - start)) or not (g == 0 or g >= 4 * n):
                    break  # rows may not overlap
                gap = g
            if g != gap * (stop - start):
                break
            stop += 1
        step = 0 if gap is None else gap // 4
        yield start, stop, first.as_strided((stop - start, n), (step, 1)).numpy()
        start = stop


class Fused:
    """Runs ``runner``'s recurrence over time blocks with a kernel; the runner's states are
    the kernel's (in place), so ``runner.states()`` stays valid between blocks."""

    span = None  # (B, 2) running (min, max) of the messages, when the kernel tracks it

    def __init__(self, runner, shape: tuple[int, ...]):
        self.runner, self.shape, self.fmt = runner, tuple(shape), _fmt(shape)
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        self.prepare()

    def run(self, a_in: list[torch.Tensor], out: np.ndarray, counts: np.ndarray) -> int:
        """Steps of ``a_in`` done (messages into out[:n], counts added); the caller steps the
        runner itself through the rest."""
        raise NotImplementedError


class FusedSoftIF(Fused):
    def prepare(self):
        r = self.runner
        self.vth = _param(r.vth, self.shape)
        self.bias = (_param(r.bias_eff, self.shape) if r.has_bias
                     else np.zeros(int(np.prod(self.shape)), np.int64))
        self.v = flat(r.v)

    def run(self, a_in, out, counts):
        self.prepare()
        for t0, t1, a in segments(a_in, self.fmt):
            kernel("softif", a)(a, self.v, self.vth, self.bias, out[t0:t1], counts)
        return len(a_in)


class FusedLif(Fused):
    def prepare(self):
        r = self.runner
        self.vth = _param(r.vth, self.shape)
        self.bias = (_param(r.bias_eff, self.shape) if r.has_bias
                     else np.zeros(int(np.prod(self.shape)), np.int64))
        self.u, self.v = flat(r.u), flat(r.v)

    def run(self, a_in, out, counts):
        r = self.runner
        self.prepare()
        for t0, t1, a in segments(a_in, self.fmt):
            kernel("lif", a)(a, self.u, self.v, self.vth, self.bias, r.i_decay, r.v_decay, bool(r.wrap_u), out[t0:t1],
                 counts)
        return len(a_in)


class FusedSigmaDelta(Fused):
    def prepare(self):
        r = self.runner
        self.sigma_mode = isinstance(r, SigmaDeltaRunner)
        size = int(np.prod(self.shape))
        self.bias = (_param(r.bias32, self.shape) if self.sigma_mode and r.has_bias
                     else np.zeros(size, np.int64))
        self.sigma = flat(r.sigma) if self.sigma_mode else np.zeros(0, np.int32)
        self.act, self.residue = flat(r.act), flat(r.residue)
        if self.span is None:
            batch = r.act.shape[0]
            self.span = np.tile(np.array([[np.iinfo(np.int64).max, np.iinfo(np.int64).min]]), (batch, 1))

    def run(self, a_in, out, counts):
        r = self.runner
        if not r.fast:
            return 0
        n = len(a_in)
        if self.sigma_mode:  # the steps the int32 path is proven exact for (SigmaDeltaRunner.step)
            n = 0
            while n < len(a_in) and r._safe(r.sigma_bound + (n + 1) * r.a_bound):
                n += 1
            r.sigma_bound += n * r.a_bound
        if n:
            self.prepare()  # the torch path swaps act with a scratch buffer: take the live ones
            # act swaps with the runner's scratch each torch step; here it is updated in place
            for t0, t1, a in segments(a_in[:n], self.fmt):
                kernel("sigma_delta", a)(a, self.sigma, self.act, self.residue, self.bias, int(r.vth), int(r.exp),
                             int(r.state_exp), self.sigma_mode, out[t0:t1], counts, self.span)
        return n


@singledispatch
def fused_for(runner, shape: tuple[int, ...]) -> Fused | None:
    """The fused form of a reset runner, or None where only its torch path is exact/implemented
    (graded or step-counted SoftIF, LIF with possible int32 wraps, widened SigmaDelta; other
    neuron types)."""
    return None


@fused_for.register
def _(runner: SoftIFRunner, shape):
    plain = runner.mode == DEFAULT_MODE and not runner.counted and runner.binary
    return FusedSoftIF(runner, shape) if plain else None


@fused_for.register
def _(runner: Lif, shape):
    return FusedLif(runner, shape) if runner.safe else None


@fused_for.register(DeltaRunner)
@fused_for.register(SigmaDeltaRunner)
def _(runner, shape):
    return FusedSigmaDelta(runner, shape) if runner.fast else None


# ---- MLI spiking max-pool stage (synapses.MLIStage) -------------------------------------------
@njit(parallel=True, cache=True, nogil=True)
def _mli(train, frame_of, batch, kernel_hw, stride, padding, out):
    """Per sample: cum += msg(t); total = maxpool(cum) (windows clipped to the input, as
    max_pool2d's -inf padding does); out(t) = total - sent; sent = total. train (nf*B, H, W, C),
    out (steps*B, H', W', C), channels-last memory."""
    _, h, w, c = train.shape
    _, ho, wo, _ = out.shape
    for b in prange(batch):
        cum = np.zeros((h, w, c), np.int64)
        sent = np.zeros((ho, wo, c), np.int64)
        for t in range(frame_of.shape[0]):
            src = train[frame_of[t] * batch + b]
            for y in range(h):
                for x in range(w):
                    for k in range(c):
                        cum[y, x, k] += src[y, x, k]
            dst = out[t * batch + b]
            for yo in range(ho):
                y0 = max(yo * stride[0] - padding[0], 0)
                y1 = min(yo * stride[0] - padding[0] + kernel_hw[0], h)
                for xo in range(wo):
                    x0 = max(xo * stride[1] - padding[1], 0)
                    x1 = min(xo * stride[1] - padding[1] + kernel_hw[1], w)
                    for k in range(c):
                        m = cum[y0, x0, k]
                        for y in range(y0, y1):
                            for x in range(x0, x1):
                                m = max(m, cum[y, x, k])
                        dst[yo, xo, k] = m - sent[yo, xo, k]
                        sent[yo, xo, k] = m


def nhwc(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) tensor -> (N, H, W, C) numpy view of its channels-last memory (a copy only
    when it is not channels-last)."""
    return x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).numpy()


def mli_train(pool, train: torch.Tensor, frame_of: list[int], batch: int, out: torch.Tensor) -> None:
    """synapses.MLIStage.train in one kernel: ``out`` (steps*B, C, H', W') channels-last."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    with _LOCK:
        _mli_call(pool, train, frame_of, batch, out)


def _mli_call(pool, train, frame_of, batch, out):
    _mli(nhwc(train), np.asarray(frame_of, np.int64), batch, np.asarray(pool.kernel, np.int64),
         np.asarray(pool.stride, np.int64), np.asarray(pool.padding, np.int64), nhwc(out))
