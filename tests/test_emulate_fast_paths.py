"""The emulator's fast paths (pool-folded convs, channels-last dense flatten, int8 kernels on
small uint8 payloads, time-blocked layer-major schedule, buffer reuse) against the numpy Lava
reference in tests/test_emulate.py and against plain float64 convolution."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loihi_conv.emulate import emulate
from loihi_conv.emulate.synapses import ConvRunner, DenseRunner, block_factor, block_sum
from loihi_conv.fixed import qir

_spec = importlib.util.spec_from_file_location("_emulate_reference",
                                               Path(__file__).with_name("test_emulate.py"))
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)


def pooled_kernel(rng, co, ci, k, block, lo=-128, hi=128, scale=2):
    """A conv kernel constant on ``block``-sized tiles: an average pool folded into the conv."""
    v = scale * rng.integers(lo, hi, (co, ci, k, k))
    return np.repeat(np.repeat(v, block[0], axis=2), block[1], axis=3)


def lava_conv(s: np.ndarray, w: np.ndarray, stride, padding, groups=1) -> np.ndarray:
    """Lava PyConvModelFixed: exact correlation, astype(int32) (x86: out of range -> INT32_MIN),
    then the 24-bit wrap. s (N, C, H, W) int, w (Co, Ci/g, kH, kW) int."""
    y = F.conv2d(torch.from_numpy(s.astype(np.float64)), torch.from_numpy(w.astype(np.float64)),
                 None, stride, padding, 1, groups).numpy()
    y = y.astype(np.int64)
    y = np.where((y < -2 ** 31) | (y > 2 ** 31 - 1), -2 ** 31, y)
    return ((y + 2 ** 23) % 2 ** 24) - 2 ** 23


def test_block_factor_finds_folded_pools_only():
    rng = np.random.default_rng(0)
    w = pooled_kernel(rng, 3, 2, 3, (2, 2))
    assert np.array_equal(block_factor(w, (2, 2), (1, 1)), w[:, :, ::2, ::2])
    assert block_factor(w, (1, 1), (1, 1)) is None  # nothing to fold
    assert block_factor(w, (2, 2), (2, 1)) is None  # dilated
    assert block_factor(w, (4, 4), (1, 1)) is None  # 6 is not a multiple of 4
    w2 = w.copy()
    w2[0, 0, 0, 1] += 1
    assert block_factor(w2, (2, 2), (1, 1)) is None


@pytest.mark.parametrize("dtype, lo, hi", [(torch.bool, 0, 2), (torch.uint8, 0, 2),
                                           (torch.uint8, 0, 128), (torch.uint8, 0, 256),
                                           (torch.int32, -128, 128),
                                           (torch.int32, -2 ** 31, 2 ** 31)])
def test_block_sum_is_exact(dtype, lo, hi):
    """Sum pooling of odd-sized inputs (the ragged edge is dropped), any payload range."""
    rng = np.random.default_rng(1)
    s = rng.integers(lo, hi, (3, 16, 7, 9), dtype=np.int64)
    t = torch.from_numpy(s).to(dtype).contiguous(memory_format=torch.channels_last)
    got, bound = block_sum(t, (2, 3), max(abs(lo), hi - 1))
    want = s[:, :, :6, :9].reshape(3, 16, 3, 2, 3, 3).sum(axis=(3, 5))
    assert np.array_equal(got.to(torch.int64).numpy(), want)
    assert bound == 6 * max(abs(lo), hi - 1) and np.abs(want).max() <= bound


@pytest.mark.parametrize("stride, padding, groups", [((2, 2), (0, 0), 1), ((2, 2), (1, 1), 2),
                                                     ((3, 1), (0, 2), 1)])
@pytest.mark.parametrize("payload", ["spikes", "uint8", "uint8_wide", "graded", "huge"])
def test_pool_folded_conv_matches_lava(stride, padding, groups, payload):
    """ConvRunner on a pool-folded kernel equals Lava's conv for binary spikes, uint8 payloads
    that take the int8 kernel (<= 127) or not (> 127), graded [-128, 127] payloads and sums
    beyond 2^23 and 2^31 (wraps), streaming (receive) and layer-major (apply)."""
    rng = np.random.default_rng(2)
    w = pooled_kernel(rng, 4, 4 // groups, 2, stride)
    if payload == "huge":
        w = w * 2 ** 3
    src = (4, 9, 8)
    lo, hi, dtype = {"spikes": (0, 2, torch.uint8), "uint8": (0, 128, torch.uint8),
                     "uint8_wide": (0, 256, torch.uint8), "graded": (-128, 128, torch.int32),
                     "huge": (-2 ** 16, 2 ** 16, torch.int32)}[payload]
    s = rng.integers(lo, hi, (5, *src))
    syn = qir.ConvSyn("a", w, stride=stride, padding=padding, groups=groups)
    want = lava_conv(s, w, stride, padding, groups)
    runner = ConvRunner(syn, src, want.shape[1:])
    assert runner.block == stride
    x = torch.from_numpy(s).to(dtype).contiguous(memory_format=torch.channels_last)
    m = max(abs(lo), hi - 1)
    runner.reset(5)
    runner.receive(x, m)
    assert np.array_equal(runner.send().numpy(), want)
    assert np.array_equal(runner.apply(x, m)[0].numpy(), want)
    if payload == "huge":
        assert np.abs(want).max() > 0 and runner.bound(m) >= 2 ** 31  # the wrap paths ran


def test_apply_output_is_recomputed_into_the_same_buffer():
    """apply reuses its output buffer: a second call with other messages gives their sums."""
    rng = np.random.default_rng(3)
    w = pooled_kernel(rng, 2, 3, 2, (2, 2))
    runner = ConvRunner(qir.ConvSyn("a", w, stride=(2, 2)), (3, 8, 8), (2, 3, 3))
    a = rng.integers(0, 2, (6, 3, 8, 8))
    b = rng.integers(0, 2, (4, 3, 8, 8))
    cl = lambda s: torch.from_numpy(s).to(torch.uint8).contiguous(  # noqa: E731
        memory_format=torch.channels_last)
    ya = runner.apply(cl(a), 1)[0].clone()
    yb = runner.apply(cl(b), 1)[0]
    assert np.array_equal(ya.numpy(), lava_conv(a, w, (2, 2), (0, 0)))
    assert np.array_equal(yb.numpy(), lava_conv(b, w, (2, 2), (0, 0)))


@pytest.mark.parametrize("dtype, lo, hi", [(torch.uint8, 0, 2), (torch.int32, -128, 128)])
def test_dense_from_channels_last_source_keeps_netx_flatten_order(dtype, lo, hi):
    """A channels-last (C, H, W) source flattens in C order (NetX) although it is read in
    memory order: same sums as from a C-contiguous copy and as numpy."""
    rng = np.random.default_rng(4)
    src = (3, 4, 5)
    w = 2 * rng.integers(-128, 128, (7, 60))
    s = rng.integers(lo, hi, (6, *src))
    runner = DenseRunner(qir.DenseSyn("a", w), src, (7,))
    want = s.reshape(6, -1) @ w.T
    x = torch.from_numpy(s).to(dtype)
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        assert np.array_equal(runner.apply(t, max(abs(lo), hi - 1))[0].numpy(), want)
        runner.reset(6)
        runner.receive(t, max(abs(lo), hi - 1))
        assert np.array_equal(runner.send().numpy(), want)


def pooled_cnn(rng):
    """Graded input -> conv Cuba -> pool-folded conv (stride 2, padding 1) SoftIF -> dense from a
    conv block (channels-last flatten) Cuba -> dense Readout: the MNIST CNN's shape."""
    return qir.QNetwork([
        qir.Block("in", (2, 10, 10)),
        qir.Block("a", (4, 8, 8), [qir.ConvSyn("in", rng.integers(-60, 61, (4, 2, 3, 3)))],
                  neuron=qir.Cuba(vth=300, i_decay=4096, v_decay=0), bias=rng.integers(-50, 50, 4)),
        qir.Block("b", (6, 4, 4), [qir.ConvSyn("a", pooled_kernel(rng, 6, 4, 2, (2, 2)),
                                               stride=(2, 2), padding=(1, 1))],
                  neuron=qir.SoftIF(vth=rng.integers(20, 200, 6)), bias=rng.integers(-9, 9, 6)),
        qir.Block("c", (5,), [qir.DenseSyn("b", 2 * rng.integers(-128, 128, (5, 96)))],
                  neuron=qir.Cuba(vth=100, i_decay=4096, v_decay=0)),
        qir.Block("out", (3,), [qir.DenseSyn("c", rng.integers(-255, 256, (3, 5)))],
                  neuron=qir.Readout()),
    ])


@pytest.mark.parametrize("t_in", [1, 3])
def test_pooled_cnn_matches_reference(one_thread, t_in):
    rng = np.random.default_rng(5)
    q = pooled_cnn(rng)
    res = _ref.assert_matches_reference(q, rng.integers(0, 64, (3, t_in, 2, 10, 10)), steps=12)
    assert all(res.spike_counts[k].sum() > 0 for k in ("a", "b", "c"))


def test_time_blocks_and_count_flushes_are_invisible(one_thread, monkeypatch):
    """One-step time blocks and count flushes every 2 steps give the same results as the
    defaults and as the streaming schedule."""
    from loihi_conv.emulate import engine
    rng = np.random.default_rng(6)
    q = pooled_cnn(rng)
    x = rng.integers(0, 64, (5, 2, 2, 10, 10))
    whole = emulate(q, x, 11, record=True)
    monkeypatch.setattr(engine, "BLOCK_BYTES", 1)
    monkeypatch.setattr(engine, "COUNT_FLUSH", 2)
    _ref._all_results_equal(whole, emulate(q, x, 11, record=True, batch_size=2))
    monkeypatch.setattr(engine, "_feed_forward", lambda qnet: False)
    _ref._all_results_equal(whole, emulate(q, x, 11, record=True))
    assert whole.spike_counts["b"].sum() > 0


def test_spike_counts_past_255_steps(one_thread, monkeypatch):
    """Neurons that fire every step for 300 steps count 300 (uint8 partial counts are flushed
    before they wrap), in both schedules."""
    from loihi_conv.emulate import engine
    q = qir.QNetwork([
        qir.Block("in", (2,)),
        qir.Block("a", (3,), [qir.DenseSyn("in", np.ones((3, 2), np.int64))],
                  neuron=qir.Cuba(vth=0, i_decay=4096, v_decay=0), bias=np.array([1, 1, 0])),
        qir.Block("out", (1,), [qir.DenseSyn("a", np.ones((1, 3), np.int64))],
                  neuron=qir.Readout()),
    ])
    x = np.zeros((4, 2), np.int64)
    layer_major = emulate(q, x, 300, record=["a"])
    assert np.array_equal(layer_major.spike_counts["a"], np.tile([300, 300, 0], (4, 1)))
    assert np.array_equal(layer_major.spike_counts["a"],
                          layer_major.states["a"]["s"].sum(axis=1, dtype=np.int64))
    monkeypatch.setattr(engine, "_feed_forward", lambda qnet: False)
    _ref._all_results_equal(layer_major, emulate(q, x, 300, record=["a"]))


@pytest.mark.parametrize("mode, units", [("if-burst", 3), ("if-multibit", 4), ("if-buffered", 2)])
def test_graded_payloads_through_pooled_conv_and_dense(one_thread, monkeypatch, mode, units):
    """Graded (and, for if-buffered, negative) payloads: the layer-major schedule (int8 kernels
    for non-negative payloads, float ones for signed) equals the streaming one (float kernels on
    the int32 messages)."""
    from loihi_conv.emulate import engine
    rng = np.random.default_rng(7)
    q = pooled_cnn(rng)
    q.blocks[1].neuron = qir.SoftIF(vth=rng.integers(20, 60, 4), mode=mode, max_units=units)
    q.blocks[2].neuron = qir.SoftIF(vth=rng.integers(20, 200, 6), mode=mode, max_units=units)
    x = rng.integers(0, 64, (4, 2, 2, 10, 10))
    layer_major = emulate(q, x, 10, record=True)
    s = layer_major.states["a"]["s"]
    assert s.max() > 1 and (mode != "if-buffered" or s.min() < 0 or
                            layer_major.states["b"]["s"].min() < 0)
    monkeypatch.setattr(engine, "_feed_forward", lambda qnet: False)
    _ref._all_results_equal(layer_major, emulate(q, x, 10, record=True))
