"""The fused neuron kernels (emulate/fused.py) give exactly what the torch runners give, and
what the numpy Lava reference of tests/test_emulate.py gives, on small random networks of every
target (SoftIF if-soft, CUBA with and without decays, SigmaDelta/Delta incl. a mid-run widening
to int64)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from loihi_conv.emulate import emulate, fused
from loihi_conv.emulate.fused import fused_for, segments
from loihi_conv.emulate.neurons import make_neuron
from loihi_conv.fixed import qir

_spec = importlib.util.spec_from_file_location("_emulate_reference_fused",
                                               Path(__file__).with_name("test_emulate.py"))
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)


def _net(rng, kind: str) -> qir.QNetwork:
    """in (2, 9, 9) -> conv (stride 1) -> pool-folded conv (stride 2) -> dense + a second dense
    from the conv block (two synapses summed) -> dense output."""
    def neuron(c):
        return {"if-soft": qir.SoftIF(vth=rng.integers(20, 200, c)),
                "cuba": qir.Cuba(vth=int(rng.integers(50, 300)), i_decay=4096, v_decay=0),
                "cuba-decay": qir.Cuba(vth=int(rng.integers(50, 300)), i_decay=700, v_decay=300),
                "sdnn": qir.SigmaDelta(vth=int(rng.integers(1, 9)))}[kind]
    pooled = np.repeat(np.repeat(2 * rng.integers(-60, 61, (5, 4, 2, 2)), 2, axis=2), 2, axis=3)
    out_neuron = qir.Sigma() if kind == "sdnn" else qir.Readout()
    first = qir.Delta(vth=2) if kind == "sdnn" else None
    return qir.QNetwork([
        qir.Block("in", (2, 9, 9), neuron=first),
        qir.Block("a", (4, 7, 7), [qir.ConvSyn("in", rng.integers(-60, 61, (4, 2, 3, 3)))],
                  neuron=neuron(4), bias=rng.integers(-30, 30, 4)),
        qir.Block("b", (5, 3, 3), [qir.ConvSyn("a", pooled, stride=(2, 2), padding=(1, 1))],
                  neuron=neuron(5), bias=rng.integers(-9, 9, 5)),
        qir.Block("c", (6,), [qir.DenseSyn("b", 2 * rng.integers(-100, 100, (6, 45))),
                              qir.DenseSyn("a", rng.integers(-20, 20, (6, 196)))],
                  neuron=neuron(6)),
        qir.Block("out", (3,), [qir.DenseSyn("c", rng.integers(-120, 121, (3, 6)))], neuron=out_neuron),
    ])


def _same(a, b):
    assert np.array_equal(a.output, b.output)
    assert (a.readout is None) == (b.readout is None)
    if a.readout is not None:
        assert np.array_equal(a.readout, b.readout)
    assert a.spike_counts.keys() == b.spike_counts.keys()
    for k in a.spike_counts:
        assert np.array_equal(a.spike_counts[k], b.spike_counts[k]), k



@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The kernels are opt-in (LOIHI_CONV_FUSED=1); these tests compare them with the runners."""
    monkeypatch.setattr(fused, "ENABLED", True)

@pytest.mark.parametrize("kind", ["if-soft", "cuba", "cuba-decay", "sdnn"])
@pytest.mark.parametrize("t_in", [1, 4])
def test_fused_equals_torch_runners_and_reference(one_thread, monkeypatch, kind, t_in):
    rng = np.random.default_rng(11 + t_in)
    q = _net(rng, kind)
    x = rng.integers(0, 40, (5, t_in, 2, 9, 9))
    if t_in == 1:
        x = x[:, 0]
    got = emulate(q, x, 14)
    monkeypatch.setattr(fused, "ENABLED", False)
    _same(got, emulate(q, x, 14))
    assert all(got.spike_counts[k].sum() > 0 for k in ("a", "b", "c"))
    xs = x if t_in > 1 else x[:, None]
    for n in range(len(xs)):  # against the numpy Lava reference, not only the torch runners
        ref = _ref.reference(q, xs[n], 14, "a_in")
        assert np.array_equal(got.output[n], ref[q.output.name]["s"])
        for k in ("a", "b", "c"):
            assert np.array_equal(got.spike_counts[k][n], (ref[k]["s"] != 0).sum(axis=0))


def test_fused_is_used_where_it_applies():
    """if-soft, CUBA and SigmaDelta get a kernel; graded SoftIF and Sigma keep the torch path."""
    rng = np.random.default_rng(3)
    for kind, has in (("if-soft", True), ("cuba", True), ("sdnn", True)):
        block = _net(rng, kind).blocks[1]
        runner = make_neuron(block.neuron, block)
        runner.reset(2, 100)
        assert (fused_for(runner, block.shape) is not None) == has
    graded = qir.Block("g", (3,), neuron=qir.SoftIF(vth=np.full(3, 5), mode="if-burst", max_units=3))
    runner = make_neuron(graded.neuron, graded)
    runner.reset(2, 100)
    assert fused_for(runner, (3,)) is None


def test_sigma_delta_widens_mid_block_and_stays_exact(one_thread, monkeypatch):
    """Large inputs: the kernel stops where int32 is no longer proven exact and the runner goes
    on in int64; results equal the torch path's."""
    rng = np.random.default_rng(5)
    q = qir.QNetwork([
        qir.Block("in", (8,)),
        qir.Block("a", (6,), [qir.DenseSyn("in", rng.integers(-128, 128, (6, 8)))],
                  neuron=qir.SigmaDelta(vth=3, spike_exp=3, state_exp=2)),
        qir.Block("out", (2,), [qir.DenseSyn("a", rng.integers(-9, 9, (2, 6)))], neuron=qir.Sigma()),
    ])
    x = rng.integers(-2 ** 17, 2 ** 17, (4, 30, 8))
    block = q.blocks[1]
    runner = make_neuron(block.neuron, block)
    runner.reset(4, 8 * 128 * 2 ** 17)
    assert runner.fast and not runner._safe(30 * runner.a_bound)  # widens within 30 steps
    got = emulate(q, x, 30)
    monkeypatch.setattr(fused, "ENABLED", False)
    _same(got, emulate(q, x, 30))


def test_segments_views_without_copies():
    buf = torch.arange(5 * 12, dtype=torch.int32).reshape(5, 3, 4)
    rows = [buf[1], buf[2], buf[3]]  # consecutive rows
    same = [buf[0]] * 3  # a static input
    mixed = [torch.zeros(3, 4, dtype=torch.int32)] + rows
    for steps, want in ((rows, [(0, 3)]), (same, [(0, 3)]), (mixed, [(0, 1), (1, 4)])):
        got = list(segments(steps, torch.contiguous_format))
        assert [(a, b) for a, b, _ in got] == want
        for a, b, arr in got:
            assert np.array_equal(arr, np.stack([s.reshape(-1).numpy() for s in steps[a:b]]))
    assert np.shares_memory(list(segments(rows, torch.contiguous_format))[0][2], buf.numpy())


@pytest.mark.parametrize("pool, graded", [(qir.SpikePool("mli", (3, 3), (2, 2), (1, 1)), False),
                                          (qir.SpikePool("mli", (3, 3), (2, 2), (0, 0), True), False),
                                          (qir.SpikePool("mli", (2, 2), (2, 2)), True)])
def test_fused_mli_pool_equals_torch_stage(one_thread, monkeypatch, pool, graded):
    """The MLI max-pool stage's kernel (padding, ceil mode, graded signed payloads) equals the
    torch stage step by step; the pooled block's messages and counts are compared."""
    rng = np.random.default_rng(9)
    src = (qir.SoftIF(vth=rng.integers(10, 40, 4), mode="if-buffered", max_units=2) if graded
           else qir.SoftIF(vth=rng.integers(10, 40, 4)))
    shape = pool.out_shape((4, 7, 7))
    q = qir.QNetwork([
        qir.Block("in", (2, 9, 9)),
        qir.Block("a", (4, 7, 7), [qir.ConvSyn("in", rng.integers(-60, 61, (4, 2, 3, 3)))], neuron=src,
                  bias=rng.integers(-5, 30, 4)),
        qir.Block("b", (3, *shape[1:]), [qir.ConvSyn("a", rng.integers(-90, 91, (3, 4, 1, 1)), pool=pool)],
                  neuron=qir.SoftIF(vth=rng.integers(5, 30, 3))),
        qir.Block("out", (2,), [qir.DenseSyn("b", rng.integers(-50, 50, (2, 3 * shape[1] * shape[2])))],
                  neuron=qir.Readout()),
    ])
    x = rng.integers(0, 40, (3, 2, 2, 9, 9))
    got = emulate(q, x, 12, record=["b"])
    monkeypatch.setattr(fused, "ENABLED", False)
    want = emulate(q, x, 12, record=["b"])
    _same(got, want)
    assert np.array_equal(got.states["b"]["v"], want.states["b"]["v"])
    assert got.spike_counts["b"].sum() > 0
