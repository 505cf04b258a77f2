"""Lava side: the SoftIF process, building and running our files on Lava's CPU simulator.

Expected values come from (a) hand-computed numbers (SoftIF), (b) an independent numpy model
of docs/architecture.md's fixed-point equations written here, (c) ``loihi_conv.emulate`` and
(d) lava-dl's own ground truth for its PilotNet SDNN. Simulator tests are marked ``lava``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.fixed import qir
from netx_export.writer import save

LAVA_DL_TESTS = Path(__file__).resolve().parents[1] / ".venv/lib/python3.10/site-packages/tests" \
    / "lava/lib/dl/netx"


# ---- networks -----------------------------------------------------------------------------
def cuba_net() -> qir.QNetwork:
    """Leaky LIF input (time-varying or bias input) -> strided padded conv (bias) -> flatten
    -> dense Readout: exercises netx's conv flip, flatten order, Readout and decays."""
    rng = np.random.default_rng(10)
    inp = qir.Block("in", (2, 6, 5), neuron=qir.Cuba(vth=6, i_decay=4096, v_decay=512))
    c1 = qir.Block("c1", (3, 3, 3), [qir.ConvSyn("in", 2 * rng.integers(-4, 9, (3, 2, 3, 3)),
                                                  stride=(2, 2), padding=(1, 1))],
                   bias=np.array([2, -3, 1]), neuron=qir.Cuba(vth=8, i_decay=2048, v_decay=0))
    w = 2 * rng.integers(-60, 61, (4, 27))
    w[0, 0], w[1, 1] = 254, -256
    out = qir.Block("out", (4,), [qir.DenseSyn("c1", w)], bias=np.array([1, 0, -1, 2]),
                    neuron=qir.Readout())
    return qir.QNetwork([inp, c1, out])


def ext_net() -> qir.QNetwork:
    """Graded input (no neuron) -> SoftIF conv -> SoftIF conv with a residual 1x1 conv from the
    input (fan-in) -> Readout fed by two dense synapses (from (C,H,W) blocks, one delayed)."""
    rng = np.random.default_rng(11)
    inp = qir.Block("in", (2, 5, 5))
    c1 = qir.Block("c1", (3, 5, 5), [qir.ConvSyn("in", rng.integers(-6, 7, (3, 2, 3, 3)),
                                                  padding=(1, 1))],
                   bias=np.array([3, -2, 1]),
                   neuron=qir.SoftIF(vth=np.array([40, 60, 50]), v_init=np.array([20, 0, -5])))
    c2 = qir.Block("c2", (3, 5, 5), [qir.ConvSyn("c1", rng.integers(-30, 31, (3, 3, 3, 3)),
                                                  padding=(1, 1)),
                                     qir.ConvSyn("in", rng.integers(-5, 6, (3, 2, 1, 1)))],
                   neuron=qir.SoftIF(vth=np.array([70, 50, 90]), bias_exp=4),
                   bias=np.array([1, 2, -1]))
    out = qir.Block("out", (4,), [qir.DenseSyn("c2", 2 * rng.integers(-20, 21, (4, 75))),
                                  qir.DenseSyn("c1", 2 * rng.integers(-10, 11, (4, 75)),
                                               delay=np.array([0, 1, 2, 3]))],
                    neuron=qir.Readout())
    return qir.QNetwork([inp, c1, c2, out])


# ---- an independent numpy model of the fixed-point equations (architecture.md) -------------
M24 = 2**23


def _wrap24(x):
    return (x + M24) % (2 * M24) - M24


def _decay(x, d):
    y = x * (4096 - d)
    return np.sign(y) * (np.abs(y) >> 12)


def _per_channel(value, shape):
    v = np.asarray(value, dtype=np.int64)
    return v.reshape(v.shape + (1,) * (len(shape) - v.ndim)) if v.ndim == 1 else v


def _synapse_input(syn, src_msgs, t, shape):
    """Σ W·s(t-1-delay): every synapse holds its result one step, dense adds ``delay``."""
    if isinstance(syn, qir.ConvSyn):
        if t < 1:
            return np.zeros(shape, np.int64)
        s = torch.tensor(src_msgs[t - 1][None], dtype=torch.float64)
        y = torch.nn.functional.conv2d(s, torch.tensor(syn.weight, dtype=torch.float64),
                                       stride=syn.stride, padding=syn.padding,
                                       dilation=syn.dilation, groups=syn.groups)
        return _wrap24(y[0].numpy().astype(np.int64))
    w = np.asarray(syn.weight, np.int64)
    d = np.zeros_like(w) if syn.delay is None else np.broadcast_to(
        np.asarray(syn.delay).reshape(w.shape[0], -1), w.shape)
    a = np.zeros(w.shape[0], np.int64)
    for k in np.unique(d):
        if t - 1 - k >= 0:
            a += (np.where(d == k, w, 0) @ src_msgs[t - 1 - k].reshape(-1)).astype(np.int64)
    return a


def reference(qnet, x, steps, inject="a_in"):
    """(steps, *shape) input -> (messages per block, states per block), all (steps, *shape)."""
    msgs = {b.name: [] for b in qnet.blocks}
    states = {b.name: {} for b in qnet.blocks}
    st = {}
    for t in range(steps):
        for b in qnet.blocks:
            shape, n = tuple(b.shape), b.neuron
            if n is None:
                msgs[b.name].append(x[t])
                continue
            a = np.zeros(shape, np.int64)
            bias = np.zeros(shape, np.int64) if b.bias is None else \
                np.broadcast_to(_per_channel(b.bias, shape), shape)
            if b.is_input:
                a = a + (x[t] if inject == "a_in" else 0)
                bias = x[0] if inject == "bias" else bias  # the image replaces the bias
            for syn in b.synapses:
                a = a + _synapse_input(syn, msgs[syn.source], t, shape).reshape(shape)
            if isinstance(n, qir.SoftIF):  # architecture.md, SoftIF
                th = np.broadcast_to(_per_channel(n.vth, shape) << 6, shape)
                v0 = 0 if n.v_init is None else _per_channel(n.v_init, shape) << 6
                v = st.get(b.name, np.broadcast_to(v0, shape))
                v = np.clip(v + (a << 6) + (bias << n.bias_exp), -(M24 - 1), M24 - 1)
                s = v >= th
                st[b.name] = v - s * th
                rec = {"v": st[b.name]}
            else:  # Cuba/Readout: Lava LIF bit-accurate (reference doc 3.4)
                u, v = st.get(b.name, (np.zeros(shape, np.int64), np.zeros(shape, np.int64)))
                u = _decay(u, n.i_decay) + (a << 6)
                u = np.where(u > M24, u - 2 * M24, u)
                u = np.where(u <= -M24, u + 2 * M24, u)
                v = np.clip(_decay(v, n.v_decay) + u + (bias << n.bias_exp), -(M24 - 1),
                            M24 - 1)
                s = v > (n.vth << 6)
                v = np.where(s, 0, v)
                st[b.name] = (u, v)
                rec = {"u": u, "v": v}
            msgs[b.name].append(s.astype(np.int64))
            for k, val in rec.items():
                states[b.name].setdefault(k, []).append(np.array(val))
    return ({k: np.stack(v) for k, v in msgs.items()},
            {b: {k: np.stack(v) for k, v in d.items()} for b, d in states.items()})


def _emulate(qnet, x, steps, inject):
    """loihi_conv.emulate's result for one sample (x is (T_in, *shape))."""
    from loihi_conv.emulate import emulate

    r = emulate(qnet, x[None] if inject == "a_in" else x[:1], steps, inject=inject, record=True)
    return r.output[0], {b: {k: v[0] for k, v in d.items() if k != "s"} for b, d in
                         r.states.items()}, None if r.readout is None else r.readout[0]


def _check(res, qnet, x, steps, inject="a_in"):
    """Lava result == numpy model == emulator, for the output, every state and the readout."""
    xs = np.asarray(x)[np.arange(steps) % len(x)]
    msgs, states = reference(qnet, xs, steps, inject)
    assert np.array_equal(res.output, msgs[qnet.output.name])
    for b, d in res.states.items():
        for k, v in d.items():
            assert np.array_equal(v, states[b][k]), (b, k)
    assert np.array_equal(res.readout, states[qnet.output.name]["u"][-1])
    e_out, e_states, e_readout = _emulate(qnet, np.asarray(x), steps, inject)
    assert np.array_equal(res.output, e_out)
    for b, d in res.states.items():
        for k, v in d.items():
            assert np.array_equal(v, e_states[b][k]), (b, k)
    assert np.array_equal(res.readout, e_readout)


# ---- tests ----------------------------------------------------------------------------------
@pytest.mark.lava
@pytest.mark.parametrize("tag", ["fixed_pt", "floating_pt"])
def test_softif_process_hand_computed(tag):
    """Two channels, values worked out by hand from the SoftIF equations."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    from netx_export.procs.softif_process import SoftIF  # first: makes Lava importable (lava_env)

    a = np.array([[1, 0, 2, 0, 200000], [5, 4, 1, -3, 0]])  # (channels, steps)
    neuron = SoftIF(shape=(2,), vth=[3, 5], v_init=[1, 0], bias=[1, 0], bias_exp=6)
    src = io.source.RingBuffer(data=a)
    sink = io.sink.RingBuffer(shape=(2,), buffer=5)
    src.s_out.connect(neuron.a_in)
    neuron.s_out.connect(sink.a_in)
    mon = Monitor()  # Lava's own probes: independent of our runner's recorders
    mon.probe(neuron.v, 5)
    try:
        neuron.run(condition=RunSteps(num_steps=5), run_cfg=Loihi2SimCfg(select_tag=tag))
        s = np.asarray(sink.data.get())
        v = np.asarray(mon.get_data()[neuron.name]["v"])
    finally:
        neuron.stop()
    # ch0: vth 3 -> 192, v0 = 1<<6, bias 1<<6 per step; step 5 saturates at 2^23-1 (fixed)
    # ch1: vth 5 -> 320; '>=' fires at exactly 320 (steps 1 and 3)
    assert s.tolist() == [[1, 0, 1, 0, 1], [1, 0, 1, 0, 0]]
    last = 8388607 - 192 if tag == "fixed_pt" else 128 + 200000 * 64 + 64 - 192
    assert v.T.tolist() == [[0, 64, 64, 128, last], [0, 256, 0, -192, -192]]


@pytest.mark.lava
def test_standard_cuba_network_through_netx_and_our_builder(tmp_path):
    from netx_export.reader import read_info
    from netx_export.runner import LavaRunner

    q = cuba_net()
    p = save(q, tmp_path / "cuba.net")
    assert read_info(p)["format"] == 0
    rng = np.random.default_rng(12)
    x1, x2 = rng.integers(0, 9, (3, 2, 6, 5)), rng.integers(0, 9, (2, 6, 5))
    steps = 9
    with LavaRunner(p) as r:  # unmodified netx.hdf5.Network
        first = r.run(x1, steps, probes="all")
        second = r.run(x2, steps, probes="all")  # reused runtime, states reset in between
        again = r.run(x1, steps, probes="all")
        assert r._c.net.engine == "netx" and r.timing["samples"] == 3
    _check(first, q, x1, steps)
    _check(second, q, x2[None], steps)
    assert np.array_equal(again.output, first.output)
    assert first.states["c1"]["v"].any() and first.readout.any()  # not a dead network
    with LavaRunner(p, engine="loihi-conv") as r:  # our builder, static input as bias
        own = r.run(x2, steps, probes=["out"], inject="bias")
    _check(own, q, x2[None], steps, inject="bias")


@pytest.mark.lava
def test_graded_input_without_input_neuron_into_dense_through_netx(tmp_path):
    """Input ints go straight to the first synapse (netx's net.inp, graded); a dense synapse
    fed by a (C,H,W) input needs netx's flatten order (PyTorch C order)."""
    from netx_export.runner import LavaRunner

    rng = np.random.default_rng(14)
    q = qir.QNetwork([
        qir.Block("in", (2, 3, 3)),
        qir.Block("h", (5,), [qir.DenseSyn("in", 2 * rng.integers(-20, 21, (5, 18)))],
                  neuron=qir.Cuba(vth=30)),
        qir.Block("o", (3,), [qir.DenseSyn("h", 2 * rng.integers(-20, 21, (3, 5)))],
                  neuron=qir.Readout())])
    x = rng.integers(0, 6, (3, 2, 3, 3))
    with LavaRunner(save(q, tmp_path / "g.net")) as r:
        res = r.run(x, 7, probes="all")
        assert r._c.net.engine == "netx"
    _check(res, q, x, 7)
    assert res.readout.any()


@pytest.mark.lava
def test_extension_network_softif_residual(tmp_path):
    from netx_export.reader import read_info
    from netx_export.runner import LavaRunner

    q = ext_net()
    p = save(q, tmp_path / "ext.net")
    assert read_info(p)["format"] == 1
    rng = np.random.default_rng(13)
    x1, x2 = rng.integers(-3, 9, (4, 2, 5, 5)), rng.integers(0, 9, (2, 5, 5))
    steps = 8
    with LavaRunner(p) as r:
        first = r.run(x1, steps, probes="all")
        second = r.run(x2, steps, probes="all")
        assert r._c.net.engine == "loihi-conv"
    _check(first, q, x1, steps)
    _check(second, q, x2[None], steps)
    assert first.states["c2"]["v"].any() and first.readout.any()


@pytest.mark.lava
@pytest.mark.parametrize("engine", ["netx", "loihi-conv"])
def test_reproduces_lava_dl_pilotnet_sdnn_ground_truth(engine):
    """lava-dl's test_pilotnet_sdnn: input.npy into the input neuron's a_in for 9 steps.
    Two samples in a row: the second starts from reset SigmaDelta states and buffers."""
    from netx_export.runner import LavaRunner

    gt_dir = LAVA_DL_TESTS / "gts/pilotnet_sdnn"
    x_whc = np.load(gt_dir / "input.npy")[..., 0]  # (W, H, C) = (100, 33, 3), one frame
    gt = np.load(gt_dir / "output.npy")  # (1, 9): the Sigma output per step
    with LavaRunner(gt_dir / "network.net", engine=engine) as r:
        first = r.run(x_whc.transpose(2, 1, 0), steps=9, probes={"conv1": ["act"]})
        second = r.run(x_whc.transpose(2, 1, 0), steps=9, probes={"conv1": ["act"]})
    assert first.output.shape == (9, 1)
    assert np.array_equal(first.output.T, gt) and np.array_equal(second.output.T, gt)
    assert first.states["conv1"]["act"].shape == (9, 24, 16, 49)
    assert np.array_equal(first.states["conv1"]["act"], second.states["conv1"]["act"])


def test_hardware_without_lava_loihi_explains_itself(tmp_path):
    from netx_export.lava_env import prepare

    prepare()  # other tests may have fixed multiprocessing's start method (see lava_env)
    from lava.utils import loihi

    from netx_export.runner import LavaRunner

    if loihi.is_installed():
        pytest.skip("lava-loihi is installed: the optional Loihi 2 backend is available")
    with pytest.raises(LoihiConvError, match="INRC"):
        LavaRunner(save(cuba_net(), tmp_path / "c.net"), hardware=True)


def test_runner_rejects_bad_requests_before_lava_runs(tmp_path):
    from netx_export.runner import LavaRunner

    with LavaRunner(save(ext_net(), tmp_path / "e.net")) as r:
        with pytest.raises(LoihiConvError, match="input shape"):
            r.run(np.zeros((2, 4, 5), int), 5)
        with pytest.raises(LoihiConvError, match="non-integer"):
            r.run(np.full((2, 5, 5), 0.5), 5)
        with pytest.raises(LoihiConvError, match="unknown probe"):
            r.run(np.zeros((2, 5, 5), int), 5, probes=["nope"])
        with pytest.raises(LoihiConvError, match="no state 'u'"):
            r.run(np.zeros((2, 5, 5), int), 5, probes={"c1": ["u"]})
        assert r._c is None  # nothing was compiled


def test_lava_imports_after_another_library_fixed_the_start_method():
    """torch DataLoaders (loihi_conv.convert) fix multiprocessing's start method; Lava's import
    then raised "context has already been set" until lava_env.prepare() undoes it."""
    import subprocess
    import sys

    code = ("import multiprocessing as mp; mp.get_start_method(); {prep}"
            "import lava.magma.core.process.process")
    prep = "from netx_export.lava_env import prepare; prepare(); "
    root = Path(__file__).resolve().parents[1]
    bare = subprocess.run([sys.executable, "-c", code.format(prep="")], cwd=root,
                          capture_output=True, text=True)
    fixed = subprocess.run([sys.executable, "-c", code.format(prep=prep)], cwd=root,
                           capture_output=True, text=True)
    assert bare.returncode != 0 and "context has already been set" in bare.stderr
    assert fixed.returncode == 0, fixed.stderr


def test_build_refuses_netx_for_extension_networks():
    from netx_export.build import build

    with pytest.raises(LoihiConvError, match="extension"):
        build(ext_net(), engine="netx")
    via_netx = build(cuba_net())  # a standard QNetwork goes through netx (via a temp file)
    assert via_netx.engine == "netx" and len(via_netx.netx.layers) == 3
    net = build(cuba_net(), engine="loihi-conv")  # builds processes, does not run them
    assert [b.name for b in net.blocks] == ["in", "c1", "out"]
    dense = net["out"].synapses[0]
    w = cuba_net().blocks[2].synapses[0].weight
    # mixed-sign even weights in [-256, 254]: Lava's 8-bit signed mantissa x2, no exponent
    assert dense.proc_params["weight_exp"] == 0 and dense.proc_params["num_weight_bits"] == 8
    assert np.array_equal(np.asarray(dense.weights.init), w)
