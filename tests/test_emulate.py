"""The batched emulator vs a plain per-sample numpy transcription of lava-nc 0.10.0's fixed-point
models (and vs real Lava processes, marked ``lava``).

The reference below copies Lava's numpy code line by line (int16/int32 Var dtypes, int32
channels, ``recv`` = ``np.zeros(shape, declared_dtype) + sum of received``), one sample at a
time, in PyTorch (C, H, W) order. tests/test_emulate_props.py loads it from this file.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.emulate import Emulator, emulate
from loihi_conv.emulate.arith import float_to_int32_x86
from loihi_conv.emulate.synapses import ConvRunner, DenseRunner, ExactLinear
from loihi_conv.fixed import qir

# ---- plain numpy reference (one sample, loops are fine) ------------------------------------


def per_channel_np(value, shape):
    """Scalar / (C,) / full-shape -> array of ``shape`` (Lava's bias broadcast, in CHW)."""
    v = np.asarray(0 if value is None else value, dtype=np.int64)
    if v.ndim == 1 and len(shape) == 3:
        v = v.reshape(-1, 1, 1)
    return np.broadcast_to(v, shape).copy()


def recv(shape, declared, parts):
    """PyInPortVectorDense.recv: zeros of the declared dtype plus every incoming message."""
    acc = np.zeros(shape, declared)
    for p in parts:
        acc = acc + p
    return acc


class RefLif:
    """AbstractPyLifModelFixed + PyLifModelBitAcc with netx's du = iDecay - 1, dv = vDecay."""
    declared = np.int16

    def __init__(self, n, shape, bias):
        self.u = np.zeros(shape, np.int32)
        self.v = np.zeros(shape, np.int32)
        self.du, self.dv, self.vth = n.i_decay - 1, n.v_decay, n.vth
        self.bias_mant = np.zeros(shape, np.int16)
        self.bias_mant[:] = per_channel_np(bias, shape)  # int16 Var: wraps
        self.bias_exp = np.full(shape, n.bias_exp, np.int16)

    def step(self, a_in):
        bias_mant = self.bias_mant.copy().astype(np.int32)
        with np.errstate(all="ignore"):
            effective_bias = np.where(self.bias_exp >= 0, np.left_shift(bias_mant, self.bias_exp),
                                      np.right_shift(bias_mant, -self.bias_exp))
        effective_vth = np.left_shift(self.vth, 6)
        decayed_curr = np.int64(self.u) * (4096 - (self.du + 1))
        decayed_curr = np.sign(decayed_curr) * np.right_shift(np.abs(decayed_curr), 12)
        decayed_curr = np.int32(decayed_curr)
        activation_in = np.left_shift(a_in, 6)
        decayed_curr += activation_in
        wrapped_curr = np.where(decayed_curr > 2 ** 23, decayed_curr - 2 ** 24, decayed_curr)
        wrapped_curr = np.where(wrapped_curr <= -2 ** 23, decayed_curr + 2 ** 24, wrapped_curr)
        self.u[:] = wrapped_curr
        decayed_volt = np.int64(self.v) * (4096 - self.dv)
        decayed_volt = np.sign(decayed_volt) * np.right_shift(np.abs(decayed_volt), 12)
        decayed_volt = np.int32(decayed_volt)
        updated_volt = decayed_volt + self.u + effective_bias
        self.v[:] = np.clip(updated_volt, -np.int32(2 ** 23) + 1, np.int32(2 ** 23) - 1)
        s = self.v > effective_vth
        self.v[s] = 0
        return s.astype(np.int32)  # the int32 out channel

    def states(self):
        return {"u": self.u, "v": self.v}


class RefSoftIF:
    """docs/architecture.md SoftIF in exact int64; its a_in sums int32 channels like any InPort."""
    declared = np.int32

    def __init__(self, n, shape, bias):
        self.vth6 = per_channel_np(n.vth, shape) << 6
        self.v = per_channel_np(n.v_init, shape) << 6
        self.bias_eff = per_channel_np(bias, shape) << n.bias_exp

    def step(self, a):
        v = np.clip(self.v + (a.astype(np.int64) << 6) + self.bias_eff, -(2 ** 23 - 1), 2 ** 23 - 1)
        s = v >= self.vth6
        self.v = v - s * self.vth6
        return s.astype(np.int32)

    def states(self):
        return {"v": self.v}


def delta_dynamics(self, act_data):
    """AbstractDeltaModel.delta_dynamics (cum_error=False)."""
    delta = act_data - self.act + self.residue
    s_out = np.where(np.abs(delta) >= self.vth, delta, 0)
    self.residue = delta - s_out
    return s_out


class RefDelta:
    declared = np.int32

    def __init__(self, n, shape, bias):
        self.spike_exp = np.array([n.spike_exp], np.int32)
        self.state_exp = np.array([n.state_exp], np.int32)
        self.vth = np.array(n.vth * (1 << (n.spike_exp + n.state_exp))).astype(np.int32)
        self.act = np.zeros(shape, np.int32)
        self.residue = np.zeros(shape, np.int32)

    def step(self, a_in):  # PyDeltaModelFixed.run_spk
        a_in_data = np.left_shift(a_in, self.spike_exp + self.state_exp)
        s_out_scaled = delta_dynamics(self, a_in_data)
        s_out = np.right_shift(s_out_scaled, self.state_exp)
        self.act = a_in_data
        return s_out

    def states(self):
        return {"act": self.act, "residue": self.residue}


class RefSigmaDelta(RefDelta):
    def __init__(self, n, shape, bias):
        super().__init__(n, shape, bias)
        scaled = per_channel_np(bias, shape).astype(np.int32) * (1 << (n.spike_exp + n.state_exp))
        self.bias = np.zeros(shape, np.int32)
        self.bias[:] = scaled
        self.sigma = np.zeros(shape, np.int32)

    def step(self, a_in):  # PySigmaDeltaModelFixed.run_spk (act_mode RELU)
        self.sigma = a_in + self.sigma
        act = np.maximum(self.sigma + self.bias, 0)
        s_out_scaled = delta_dynamics(self, act)
        self.act = act
        return np.right_shift(s_out_scaled, self.state_exp)

    def states(self):
        return {"sigma": self.sigma, "act": self.act, "residue": self.residue}


class RefSigma:
    declared = np.int32

    def __init__(self, n, shape, bias):
        self.sigma = np.zeros(shape, np.int32)

    def step(self, a_in):
        self.sigma = a_in + self.sigma
        return self.sigma

    def states(self):
        return {"sigma": self.sigma}


REF_NEURONS = {qir.Cuba: RefLif, qir.Readout: RefLif, qir.SoftIF: RefSoftIF,
               qir.Delta: RefDelta, qir.SigmaDelta: RefSigmaDelta, qir.Sigma: RefSigma}
GRADED = (qir.Delta, qir.SigmaDelta, qir.Sigma)


class RefDense:
    """PyDenseModelBitAcc / PyDelayDenseModelBitAcc with effective weights (weight_exp 0)."""

    def __init__(self, syn, src_shape, dst_shape, graded):
        self.w = np.asarray(syn.weight).astype(np.int32)
        self.graded, self.dst_shape = graded, dst_shape
        self.delays = None
        if syn.delay is not None:
            d = np.asarray(syn.delay)
            self.delays = np.repeat(d[:, None], self.w.shape[1], 1) if d.ndim == 1 else d
            self.a_buff = np.zeros((self.w.shape[0], int(self.delays.max()) + 1), np.int32)
        else:
            self.a_buff = np.zeros(self.w.shape[0], np.int32)

    def send(self):
        out = self.a_buff if self.delays is None else self.a_buff[:, 0]
        return np.asarray(out).astype(np.int32).reshape(self.dst_shape)  # int32 channel

    def receive(self, msg):
        s_in = recv(self.w.shape[1], bool, [msg.reshape(-1)])  # C-order flatten (netx)
        if not self.graded:
            s_in = s_in.astype(bool)
        if self.delays is None:
            self.a_buff = self.w.dot(s_in) if self.graded else self.w[:, s_in].sum(axis=1)
            return
        max_delay = self.a_buff.shape[-1] - 1
        wgts = np.vstack([np.where(self.delays == k, self.w, 0) for k in range(max_delay + 1)])
        a_accum = np.reshape(np.sum(wgts * s_in, axis=1), (max_delay + 1, self.w.shape[0])).T
        self.a_buff[:, 0] = 0
        self.a_buff = np.roll(self.a_buff, -1)
        self.a_buff += a_accum


class RefConv:
    """PyConvModelFixed: float64 correlation, astype(int32), 24-bit signed_clamp."""

    def __init__(self, syn, src_shape, dst_shape, graded):
        self.syn, self.graded, self.dst_shape = syn, graded, dst_shape
        self.w = np.asarray(syn.weight).astype(np.int32)
        self.a_buf = np.zeros(dst_shape, np.int32)

    def send(self):
        return self.a_buf

    def receive(self, msg):
        s_in = recv(msg.shape, np.int32, [msg])
        if not self.graded:
            s_in = s_in.astype(bool)
        co, cig, kh, kw = self.w.shape
        (sh, sw), (ph, pw), (dh, dw), g = (self.syn.stride, self.syn.padding, self.syn.dilation,
                                           self.syn.groups)
        xp = np.pad(s_in.astype(np.float64), ((0, 0), (ph, ph), (pw, pw)))
        _, ho, wo = self.dst_shape
        y = np.zeros(self.dst_shape)
        for o in range(co):
            grp = o // (co // g)
            for c in range(cig):
                for i in range(kh):
                    for j in range(kw):
                        patch = xp[grp * cig + c, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                                   j * dw: j * dw + sw * (wo - 1) + 1: sw]
                        y[o] += self.w[o, c, i, j] * patch
        with np.errstate(invalid="ignore"):
            y = y.astype(np.int32)
        base = 1 << 24
        self.a_buf = (y + base // 2) % base - base // 2


def reference(qnet, x, steps, inject="a_in"):
    """One sample: x (T_in, *input_shape). Returns {block: {state: (steps, *shape)}} incl. 's'."""
    blocks = qnet.blocks
    shapes = {b.name: tuple(b.shape) for b in blocks}
    graded = {b.name: b.neuron is None or isinstance(b.neuron, GRADED) for b in blocks}
    neurons, syns = {}, []
    for i, b in enumerate(blocks):
        if b.neuron is not None:
            bias = x[0] if (i == 0 and inject == "bias") else b.bias
            neurons[b.name] = REF_NEURONS[type(b.neuron)](b.neuron, shapes[b.name], bias)
        for s in b.synapses:
            cls = RefConv if isinstance(s, qir.ConvSyn) else RefDense
            syns.append((b.name, s.source, cls(s, shapes[s.source], shapes[b.name],
                                               graded[s.source])))
    rec = {b.name: {} for b in blocks}
    for t in range(1, steps + 1):
        x_t = x[(t - 1) % len(x)].astype(np.int32)  # the RingBuffer's int32 Var
        sent = {id(r): r.send() for _, _, r in syns}  # every synapse sends a_buf(t-1) first
        msgs = {}
        for i, b in enumerate(blocks):
            n = neurons.get(b.name)
            if n is None:
                msgs[b.name] = x_t
                continue
            parts = ([x_t] if inject == "a_in" else []) if i == 0 else \
                [sent[id(r)] for dst, _, r in syns if dst == b.name]
            msgs[b.name] = n.step(recv(shapes[b.name], n.declared, parts))
        for _, src, r in syns:
            r.receive(msgs[src])
        for b in blocks:
            states = dict(neurons[b.name].states()) if b.name in neurons else {}
            states["s"] = msgs[b.name]
            for k, v in states.items():
                rec[b.name].setdefault(k, []).append(np.array(v, dtype=np.int64))
    return {name: {k: np.stack(v) for k, v in st.items()} for name, st in rec.items()}


def assert_matches_reference(qnet, x, steps, inject="a_in", **kw):
    """Emulate a batch and require every block's states and messages to equal the reference."""
    res = emulate(qnet, x, steps, inject=inject, record=True, **kw)
    xs = np.asarray(x)
    if xs.ndim == len(qnet.input.shape) + 1:
        xs = xs[:, None]
    for n in range(xs.shape[0]):
        ref = reference(qnet, xs[n], steps, inject)
        for name, states in ref.items():
            for k, want in states.items():
                got = res.states[name][k][n]
                assert np.array_equal(got, want), (
                    f"sample {n}, block {name}, state {k}: first mismatch at "
                    f"{np.argwhere(got != want)[0]}")
        assert np.array_equal(res.output[n], ref[qnet.output.name]["s"])
    return res


# ---- random networks of every block / neuron type ------------------------------------------


def lif_net(rng, wmax=255):
    """Graded input -> conv(stride, pad, groups) Cuba(decays) -> conv(dilation) SoftIF,
    fan-in of three dense synapses (two with delays, one from the input) Cuba -> dense Readout."""
    w1 = rng.integers(-wmax, wmax + 1, (4, 1, 3, 3))
    w2 = rng.integers(-wmax, wmax + 1, (3, 4, 2, 2))
    c2 = qir.ConvSyn("a", w2, dilation=(2, 1))
    d_b = qir.DenseSyn("b", 2 * rng.integers(-128, 128, (5, 3 * 1 * 3)),
                       delay=rng.integers(0, 4, (5, 9)))
    d_a = qir.DenseSyn("a", 2 * rng.integers(-128, 128, (5, 4 * 3 * 4)))
    d_in = qir.DenseSyn("in", rng.integers(-20, 20, (5, 2 * 5 * 4)), delay=rng.integers(0, 3, 5))
    return qir.QNetwork([
        qir.Block("in", (2, 5, 4)),
        qir.Block("a", (4, 3, 4), [qir.ConvSyn("in", w1, stride=(2, 1), padding=(1, 1), groups=2)],
                  bias=rng.integers(-500, 500, 4),
                  neuron=qir.Cuba(vth=int(rng.integers(200, 3000)),
                                  i_decay=int(rng.integers(0, 4097)),
                                  v_decay=int(rng.integers(0, 4097)))),
        qir.Block("b", (3, 1, 3), [c2], bias=rng.integers(-200, 200, (3, 1, 3)),
                  neuron=qir.SoftIF(vth=rng.integers(100, 4000, 3),
                                    v_init=rng.integers(-50, 50, 3))),
        qir.Block("c", (5,), [d_b, d_a, d_in], neuron=qir.Cuba(vth=int(rng.integers(100, 2000)))),
        qir.Block("out", (3,), [qir.DenseSyn("c", rng.integers(0, 256, (3, 5)), delay=[0, 2, 5])],
                  bias=rng.integers(-9, 9, 3), neuron=qir.Readout()),
    ])


def sdnn_net(rng):
    """Delta input -> conv SigmaDelta -> dense SigmaDelta -> dense Sigma."""
    return qir.QNetwork([
        qir.Block("in", (2, 4, 4), neuron=qir.Delta(vth=int(rng.integers(1, 30)))),
        qir.Block("h1", (3, 2, 2), [qir.ConvSyn("in", rng.integers(-255, 256, (3, 2, 3, 3)),
                                                stride=(2, 2), padding=(1, 1))],
                  bias=rng.integers(-20, 20, 3),
                  neuron=qir.SigmaDelta(vth=int(rng.integers(1, 40)))),
        qir.Block("h2", (4,), [qir.DenseSyn("h1", rng.integers(-255, 256, (4, 12)))],
                  bias=rng.integers(-20, 20, 4),
                  neuron=qir.SigmaDelta(vth=int(rng.integers(1, 40)))),
        qir.Block("out", (2,), [qir.DenseSyn("h2", rng.integers(-255, 256, (2, 4)))],
                  neuron=qir.Sigma()),
    ])


def bias_net(rng):
    """Cuba input neuron driven through its bias (inject='bias') -> dense Cuba."""
    return qir.QNetwork([
        qir.Block("in", (6,), neuron=qir.Cuba(vth=300, i_decay=4096, v_decay=1024)),
        qir.Block("out", (3,), [qir.DenseSyn("in", 2 * rng.integers(-128, 128, (3, 6)))],
                  neuron=qir.Cuba(vth=100, i_decay=2000, v_decay=100)),
    ])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lif_softif_network_matches_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-30, 60, (3, 3, 2, 5, 4))  # time-varying, T_in=3 < steps (ring wraps)
    res = assert_matches_reference(lif_net(rng), x, steps=14)
    assert res.spike_counts["a"].sum() > 0 and res.spike_counts["b"].sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_sdnn_network_matches_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-200, 200, (3, 4, 2, 4, 4))
    res = assert_matches_reference(sdnn_net(rng), x, steps=10)
    assert np.abs(res.states["h1"]["residue"]).max() > 0  # the drift path is exercised


def test_bias_injection_matches_reference_and_wraps_int16():
    rng = np.random.default_rng(3)
    x = rng.integers(-40000, 40000, (4, 6))  # beyond int16: Lava's bias_mant wraps
    assert_matches_reference(bias_net(rng), x, steps=9, inject="bias")


def test_static_input_equals_repeated_input_and_chunking_is_invisible():
    rng = np.random.default_rng(4)
    q = lif_net(rng)
    x = rng.integers(-30, 60, (5, 2, 5, 4))
    static = emulate(q, x, 12, record=True, batch_size=2)
    repeated = emulate(q, np.repeat(x[:, None], 3, axis=1), 12, record=True, batch_size=5)
    assert np.array_equal(static.output, repeated.output)
    for name in static.states:
        for k in static.states[name]:
            assert np.array_equal(static.states[name][k], repeated.states[name][k])
    assert np.array_equal(static.readout, repeated.readout)


def test_readout_spike_counts_and_streaming_emulator():
    rng = np.random.default_rng(5)
    q = lif_net(rng)
    x = rng.integers(-30, 60, (2, 4, 2, 5, 4))
    res = emulate(q, x, 11, record=["a", "out"])
    assert set(res.states) == {"a", "out"}
    assert np.array_equal(res.readout, res.states["out"]["u"][:, -1])
    assert np.array_equal(res.spike_counts["a"], res.states["a"]["s"].sum(axis=1))
    em = Emulator(q)
    em.reset(2, x_bound=int(np.abs(x).max()))
    for t in range(11):
        msgs = em.step(torch.as_tensor(x[:, t % 4]))
        assert np.array_equal(msgs["out"].numpy(), res.output[:, t])
        assert np.array_equal(em.states("a")["v"].numpy(), res.states["a"]["v"][:, t])


def test_one_step_delay_per_synapse():
    """A chain of k synapses first responds at step k + 1 (reference doc §3.1)."""
    chain = [qir.Block("in", (1,))]
    for k in range(1, 4):
        chain.append(qir.Block(f"l{k}", (1,), [qir.DenseSyn(chain[-1].name, np.array([[200]]))],
                               neuron=qir.Cuba(vth=10)))
    res = emulate(qir.QNetwork(chain), np.array([[1]]), 6, record=True)
    for k in range(1, 4):
        assert res.states[f"l{k}"]["s"][0, :, 0].tolist() == [0] * k + [1] * (6 - k)


@pytest.mark.parametrize("int64_path", [False, True])
def test_boundaries_threshold_equality_and_u_wrap(int64_path):
    """v == vth<<6: LIF does not spike (strict '>'), SoftIF does ('>='); |delta| == vth: SigmaDelta
    sends ('>='); u == +-2^23 after a<<6: Lava keeps +2^23 and maps -2^23 to +2^23.
    ``int64_path``: a huge weight on an always-zero input forces the general (int64) code path."""
    vth, huge = 37, 2 ** 20 if int64_path else 0

    def syn(w):
        return [qir.DenseSyn("in", np.array([[w, huge]]))]

    q = qir.QNetwork([
        qir.Block("in", (2,)),
        qir.Block("lif", (1,), syn(vth), neuron=qir.Cuba(vth=vth, v_decay=4096)),  # v = u
        qir.Block("sif", (1,), syn(vth), neuron=qir.SoftIF(vth=np.array([vth]))),
        qir.Block("sd", (1,), syn(vth), neuron=qir.SigmaDelta(vth=vth, spike_exp=0, state_exp=0)),
        qir.Block("up", (1,), syn(2 ** 17), neuron=qir.Cuba(vth=2 ** 17 - 1)),
        qir.Block("down", (1,), syn(-(2 ** 17)), neuron=qir.Cuba(vth=2 ** 17 - 1)),
    ])
    em = Emulator(q)
    em.reset(1, x_bound=1)
    assert (em.by_name["lif"].neuron.dtype == torch.int64) == int64_path
    res = assert_matches_reference(q, np.array([[1, 0]]), 3)
    assert res.states["lif"]["s"][0, 1:, 0].tolist() == [0, 0]
    assert res.states["sif"]["s"][0, 1:, 0].tolist() == [1, 1]
    assert res.states["sd"]["s"][0, 1:, 0].tolist() == [vth, vth]  # sigma grows by vth
    assert res.states["up"]["u"][0, 1:, 0].tolist() == [2 ** 23, 2 ** 23]
    assert res.states["down"]["u"][0, 1:, 0].tolist() == [2 ** 23, 2 ** 23]


def test_lif_overflow_corners_match_reference():
    """Graded input so large that a<<6 wraps int32 and u wraps 24-bit, leaky decays of negative
    states (rounding toward zero), biases beyond int16, saturating v."""
    rng = np.random.default_rng(8)
    q = qir.QNetwork([
        qir.Block("in", (3,)),
        qir.Block("l", (4,), [qir.DenseSyn("in", rng.integers(-255, 256, (4, 3)))],
                  bias=np.array([40000, -40000, 4095, -4096]),
                  neuron=qir.Cuba(vth=2 ** 17 - 1, i_decay=1234, v_decay=777)),
        qir.Block("r", (2,), [qir.DenseSyn("l", rng.integers(-255, 256, (2, 4))),
                              qir.DenseSyn("in", rng.integers(-255, 256, (2, 3)))],
                  neuron=qir.Readout()),
    ])
    x = rng.integers(-2 ** 31, 2 ** 31, (3, 5, 3))
    res = assert_matches_reference(q, x, 12)
    assert res.states["l"]["v"].max() == 2 ** 23 - 1 or res.states["l"]["s"].any()


def test_v_sum_wraps_int32_before_saturating():
    """u near 2^31 (a<<6 wrapped, then the 24-bit wrap) plus a bias of 32767<<12: Lava's int32 sum
    wraps negative before the clip, so v saturates at -(2^23-1) and does not spike."""
    a = 2 ** 25 - 2 ** 14  # a << 6 = 2^31 - 2^20 -> u = 2^31 - 2^20 - 2^24
    q = qir.QNetwork([
        qir.Block("in", (1,)),
        qir.Block("l", (1,), [qir.DenseSyn("in", np.array([[1]]))], bias=np.array([32767]),
                  neuron=qir.Cuba(vth=10, bias_exp=12)),
    ])
    res = assert_matches_reference(q, np.array([[a]]), 2)
    assert res.states["l"]["v"][0, 1, 0] == -(2 ** 23 - 1)
    assert res.states["l"]["s"][0, 1, 0] == 0


def test_conv_wraps_at_24_bits_and_dense_at_32_bits():
    conv = ConvRunner(qir.ConvSyn("in", np.full((1, 1, 1, 1), 3)), (1, 1, 1), (1, 1, 1))
    dense = DenseRunner(qir.DenseSyn("in", np.array([[255, 1]])), (2,), (1,))
    conv.reset(1)
    dense.reset(1)
    # 3*2^22 wraps to -2^22; 3*(2^30+5) >= 2^31 becomes int32 min in Lava's astype (not 15),
    # which is 0 after the 24-bit wrap.
    for x, want in [(2 ** 22, -(2 ** 22)), (2 ** 30 + 5, 0), (-(2 ** 21), 3 * -(2 ** 21))]:
        conv.receive(torch.tensor([[[[x]]]]), abs(x))
        assert int(conv.send()) == want
    dense.receive(torch.tensor([[2 ** 30, 7]]), 2 ** 30)
    assert int(dense.send()) == 255 * 2 ** 30 + 7 - 64 * 2 ** 32  # int32 dot product wraps


def test_exact_linear_is_exact_beyond_float64():
    rng = np.random.default_rng(6)
    w = rng.integers(-2 ** 20, 2 ** 20, (7, 9))
    s = rng.integers(-2 ** 31, 2 ** 31, (4, 9))
    op = ExactLinear(w, torch.nn.functional.linear)
    got = op(torch.as_tensor(s), 2 ** 31).numpy()
    want = np.array([[sum(int(a) * int(b) for a, b in zip(row, x)) for row in w] for x in s])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("k, stride", [(3, 1), (5, 1), (6, 2)])
def test_float32_conv_path_is_exact_at_cnn_scale(k, stride):
    """Messages scaled so sums reach the float32 bound 2^24 at realistic conv sizes (oneDNN must
    not use an inexact algorithm such as Winograd): the float32 path equals the float64 path."""
    rng = np.random.default_rng(9)
    w = rng.choice([-255, 255], (32, 16, k, k))
    op = ExactLinear(w, lambda s, wt: torch.nn.functional.conv2d(s, wt, stride=stride))
    m = 2 ** 24 // op.bound(1)  # largest |message| for which the float32 path is chosen
    assert op.bound(m) <= 2 ** 24 < op.bound(m + 1)
    x = rng.integers(-m, m + 1, (8, 16, 24, 24))
    x = torch.as_tensor(np.where(rng.random(x.shape) < 0.5, m, x)).contiguous(
        memory_format=torch.channels_last)
    with torch.backends.nnpack.flags(enabled=False):
        fast = op(x, m)
        exact = op(x, 2 ** 20)  # float64 path
    assert fast.dtype == torch.int32 and exact.dtype == torch.int64
    assert torch.equal(fast.to(torch.int64), exact)
    assert int(exact.abs().max()) > 2 ** 21  # the sums really are large


def test_float32_dense_path_is_exact_at_the_bound():
    rng = np.random.default_rng(10)
    op = ExactLinear(rng.choice([-255, 255], (10, 3200)), torch.nn.functional.linear)
    m = 2 ** 24 // op.bound(1)
    x = torch.as_tensor(np.where(rng.random((64, 3200)) < 0.5, m, rng.integers(-m, m + 1,
                                                                               (64, 3200))))
    fast, exact = op(x, m), op(x, 2 ** 20)
    assert fast.dtype == torch.int32 and torch.equal(fast.to(torch.int64), exact)


def test_float_to_int32_matches_numpy_astype():
    y = np.array([0, 5, -(2 ** 31), 2 ** 31 - 1, 2 ** 31, -(2 ** 31) - 1, 3 * 2 ** 40])
    with np.errstate(invalid="ignore"):
        want = y.astype(np.float64).astype(np.int32)
    assert np.array_equal(float_to_int32_x86(torch.as_tensor(y)).numpy(), want)


@pytest.mark.parametrize("bad, match", [
    (lambda q: emulate(q, np.full((1, 2, 5, 4), 0.5), 3), "non-integer"),
    (lambda q: emulate(q, np.zeros((1, 3, 5, 4)), 3), "shape"),
    (lambda q: emulate(q, np.full((1, 2, 5, 4), 2 ** 40), 3), "int32"),
    (lambda q: emulate(q, np.zeros((1, 2, 5, 4)), 0), "steps"),
    (lambda q: emulate(q, np.zeros((1, 2, 5, 4)), 3, inject="bias"), "inject='bias'"),
    (lambda q: emulate(q, np.zeros((1, 2, 5, 4)), 3, inject="spikes"), "inject"),
    (lambda q: emulate(q, np.zeros((1, 2, 5, 4)), 3, record=["nope"]), "unknown blocks"),
])
def test_user_errors_are_explained(bad, match):
    with pytest.raises(LoihiConvError, match=match):
        bad(lif_net(np.random.default_rng(7)))


def _one_block_net(syn, shape=(2,), neuron=None):
    return qir.QNetwork([qir.Block("in", (2, 4, 4)),
                         qir.Block("b", shape, [syn], neuron=neuron or qir.Cuba(vth=1))])


@pytest.mark.parametrize("net, match", [
    (lambda: _one_block_net(qir.ConvSyn("in", np.ones((3, 2, 3, 3), int)), (3, 4, 4)),
     "produces shape"),
    (lambda: _one_block_net(qir.DenseSyn("in", np.ones((2, 32), int), delay=np.full(2, 63))),
     "delays"),
    (lambda: _one_block_net(qir.DenseSyn("in", np.ones((2, 5), int))), "weight shape"),
    (lambda: _one_block_net(qir.DenseSyn("in", np.ones((2, 32), int)), neuron=object()),
     "no model for neuron"),
    (lambda: _one_block_net(qir.DenseSyn("in", np.ones((2, 32), int)),
                            neuron=qir.Cuba(vth=1, i_decay=5000)), "i_decay"),
    (lambda: _one_block_net(qir.DenseSyn("nowhere", np.ones((2, 32), int))), "unknown block"),
])
def test_malformed_networks_are_explained(net, match):
    with pytest.raises(LoihiConvError, match=match):
        Emulator(net())


# ---- real Lava processes (bit-exact, raw Lava arithmetic) ---------------------------------


def _lava_run(procs, probes, sources, T):
    """Run the Lava graph; returns ({name: spikes (T, *shape)}, {(name, var): (T, *shape)})."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    from loihi_conv.base.layout import lava_to_torch, monitor_to_torch

    sinks = {n: io.sink.RingBuffer(shape=p.s_out.shape, buffer=T) for n, p in procs.items()}
    for n, p in procs.items():
        p.s_out.connect(sinks[n].a_in)
    mons = {}
    for n, var in probes:
        mons[n, var] = Monitor()  # one Monitor per Var: a Monitor probing several fails to compile
        mons[n, var].probe(getattr(procs[n], var), T)
    sources[0].run(condition=RunSteps(num_steps=T), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    try:
        spikes = {n: lava_to_torch(s.data.get()) for n, s in sinks.items()}
        states = {(n, v): monitor_to_torch(m.get_data()[procs[n].name][v])
                  for (n, v), m in mons.items()}
    finally:
        sources[0].stop()
    return spikes, states


def _lava_conv(w, input_shape_chw, stride=(1, 1), padding=(0, 0), graded=True):
    """Lava Conv from a PyTorch correlation weight (the NetX transform: flip, to (Co,kW,kH,Ci))."""
    from lava.proc.conv.process import Conv
    c, h, wd = input_shape_chw
    return Conv(weight=w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1), input_shape=(wd, h, c),
                stride=stride[::-1], padding=padding[::-1], num_message_bits=16 if graded else 0)


def _compare(res, spikes, states):
    for n, s in spikes.items():
        assert np.array_equal(res.states[n]["s"][0], s), f"spikes of {n}"
    for (n, v), want in states.items():
        assert np.array_equal(res.states[n][v][0], want), f"{v} of {n}"


@pytest.mark.lava
def test_lif_network_bit_exact_with_lava():
    """conv (stride, pad, graded input) -> LIF with decays and bias; fan-in of a spiking and a
    graded dense into one LIF; DelayDense -> accumulator (du=-1, dv=4096)."""
    from lava.proc import io
    from lava.proc.dense.process import DelayDense, Dense
    from lava.proc.lif.process import LIF

    from loihi_conv.base.layout import torch_to_lava

    rng = np.random.default_rng(1)
    T, (C, H, W) = 8, (2, 5, 4)
    x = rng.integers(-40, 80, (T, C, H, W))
    wc = rng.integers(-60, 60, (4, C, 3, 3))
    q = qir.QNetwork([
        qir.Block("in", (C, H, W)),
        qir.Block("l1", (4, 3, 2), [qir.ConvSyn("in", wc, stride=(2, 1), padding=(1, 0))],
                  bias=rng.integers(-300, 300, 4), neuron=qir.Cuba(vth=900, i_decay=1000,
                                                                    v_decay=300)),
        qir.Block("l2", (6,), [qir.DenseSyn("l1", 2 * rng.integers(-128, 128, (6, 24))),
                               qir.DenseSyn("in", 2 * rng.integers(-40, 40, (6, C * H * W)))],
                  neuron=qir.Cuba(vth=500)),
        qir.Block("l3", (3,), [qir.DenseSyn("l2", 2 * rng.integers(-128, 128, (3, 6)),
                                            delay=rng.integers(0, 4, (3, 6)))],
                  bias=np.array([5, -7, 0]), neuron=qir.Readout()),
    ])
    b = {blk.name: blk for blk in q.blocks}
    src = io.source.RingBuffer(data=torch_to_lava(x).astype(np.int32))
    conv = _lava_conv(wc, (C, H, W), stride=(2, 1), padding=(1, 0))
    lif = {n: LIF(shape=tuple(b[n].shape[::-1]), vth=b[n].neuron.vth, du=b[n].neuron.i_decay - 1,
                  dv=b[n].neuron.v_decay, bias_exp=6,
                  bias_mant=per_channel_np(b[n].bias, b[n].shape).transpose()[()])
           for n in ("l1", "l2", "l3")}
    d_l1 = Dense(weights=b["l2"].synapses[0].weight)
    d_in = Dense(weights=b["l2"].synapses[1].weight, num_message_bits=16)
    dd = DelayDense(weights=b["l3"].synapses[0].weight, delays=b["l3"].synapses[0].delay)
    src.s_out.connect(conv.s_in)
    conv.a_out.connect(lif["l1"].a_in)
    lif["l1"].s_out.transpose([2, 1, 0]).flatten().connect(d_l1.s_in)  # NetX flatten (CHW order)
    src.s_out.transpose([2, 1, 0]).flatten().connect(d_in.s_in)
    d_l1.a_out.connect(lif["l2"].a_in)
    d_in.a_out.connect(lif["l2"].a_in)  # InPort fan-in sums
    lif["l2"].s_out.connect(dd.s_in)
    dd.a_out.connect(lif["l3"].a_in)
    spikes, states = _lava_run(lif, [(n, v) for n in lif for v in ("u", "v")], [src], T)
    res = emulate(q, x[None], T, record=True)
    assert spikes["l1"].sum() > 0 and spikes["l2"].sum() > 0
    _compare(res, spikes, states)


@pytest.mark.lava
def test_sdnn_network_bit_exact_with_lava():
    """Delta (a_in input) -> graded conv -> SigmaDelta (bias, residue drift) -> graded dense
    -> Sigma."""
    from lava.proc import io
    from lava.proc.dense.process import Dense
    from lava.proc.sdn.process import Delta, Sigma, SigmaDelta

    from loihi_conv.base.layout import torch_to_lava

    rng = np.random.default_rng(2)
    T, (C, H, W) = 8, (2, 4, 4)
    x = rng.integers(-64, 64, (T, C, H, W)) * 4
    wc = 2 * rng.integers(-64, 64, (3, C, 3, 3))
    wd = 2 * rng.integers(-128, 128, (5, 3 * H * W))
    bias = rng.integers(-3, 4, 3)
    q = qir.QNetwork([
        qir.Block("in", (C, H, W), neuron=qir.Delta(vth=30)),
        qir.Block("sd", (3, H, W), [qir.ConvSyn("in", wc, padding=(1, 1))], bias=bias,
                  neuron=qir.SigmaDelta(vth=60)),
        qir.Block("out", (5,), [qir.DenseSyn("sd", wd)], neuron=qir.Sigma()),
    ])
    src = io.source.RingBuffer(data=torch_to_lava(x).astype(np.int32))
    procs = {"in": Delta(shape=(W, H, C), vth=30, spike_exp=6, state_exp=6),
             "sd": SigmaDelta(shape=(W, H, 3), vth=60, spike_exp=6, state_exp=6,
                              bias=per_channel_np(bias, (3, H, W)).transpose().astype(np.int32)),
             "out": Sigma(shape=(5,))}
    conv = _lava_conv(wc, (C, H, W), padding=(1, 1))
    dense = Dense(weights=wd, num_message_bits=16)
    src.s_out.connect(procs["in"].a_in)
    procs["in"].s_out.connect(conv.s_in)
    conv.a_out.connect(procs["sd"].a_in)
    procs["sd"].s_out.transpose([2, 1, 0]).flatten().connect(dense.s_in)
    dense.a_out.connect(procs["out"].a_in)
    probes = [("in", "residue"), ("sd", "sigma"), ("sd", "act"), ("sd", "residue"),
              ("out", "sigma")]
    spikes, states = _lava_run(procs, probes, [src], T)
    res = emulate(q, x[None], T, record=True)
    assert np.abs(states["in", "residue"]).max() > 0 and np.abs(states["sd", "residue"]).max() > 0
    _compare(res, spikes, states)


# ---- layer-major schedule == streaming schedule ----------------------------------------------


def _all_results_equal(a, b):
    assert np.array_equal(a.output, b.output)
    assert (a.readout is None) == (b.readout is None)
    if a.readout is not None:
        assert np.array_equal(a.readout, b.readout)
    assert a.states.keys() == b.states.keys() and a.spike_counts.keys() == b.spike_counts.keys()
    for name in a.states:
        for k in a.states[name]:
            assert np.array_equal(a.states[name][k], b.states[name][k]), (name, k)
    for name in a.spike_counts:
        assert np.array_equal(a.spike_counts[name], b.spike_counts[name]), name


def even_weight_net(rng):
    """lif_net with even 8-bit-mantissa conv weights (w = 2q, q int8): the int8 kernels run."""
    q = lif_net(rng)
    q["b"].synapses[0].weight = 2 * rng.integers(-128, 128, (3, 4, 2, 2))
    return q


@pytest.mark.parametrize("make, inject, t_in", [(lif_net, "a_in", 3), (lif_net, "a_in", 1),
                                                (even_weight_net, "a_in", 2),
                                                (sdnn_net, "a_in", 4), (bias_net, "bias", 1)])
def test_layer_major_equals_streaming(monkeypatch, make, inject, t_in):
    """Every block's spikes and states at every step, spike counts and readout are identical
    under both schedules (feed-forward networks run layer-major by default)."""
    from loihi_conv.emulate import engine
    rng = np.random.default_rng(7)
    q = make(rng)
    shape = tuple(q.input.shape)
    x = (rng.integers(-40, 60, (5, t_in, *shape)) if inject == "a_in"
         else rng.integers(-40000, 40000, (5, *shape)))
    assert engine._feed_forward(q)
    layer_major = emulate(q, x, 13, inject=inject, record=True, batch_size=3)
    monkeypatch.setattr(engine, "_feed_forward", lambda qnet: False)
    streaming = emulate(q, x, 13, inject=inject, record=True, batch_size=3)
    _all_results_equal(layer_major, streaming)
    assert sum(int(c.sum()) for c in streaming.spike_counts.values()) > 0


def test_layer_major_slices_and_chunks_are_invisible(monkeypatch):
    """Tiny neuron slices and one-sample chunks give the same results as one big chunk."""
    from loihi_conv.emulate import engine
    rng = np.random.default_rng(8)
    q = even_weight_net(rng)
    x = rng.integers(-30, 60, (4, 2, 2, 5, 4))
    whole = emulate(q, x, 9, record=True)
    monkeypatch.setattr(engine, "SLICE_ELEMS", 1)
    monkeypatch.setattr(engine, "TRAIN_BYTES", 1)
    _all_results_equal(whole, emulate(q, x, 9, record=True))


def test_recurrent_network_runs_streaming_and_matches_reference():
    """A self-connected block is not feed-forward: it takes the streaming schedule."""
    from loihi_conv.emulate import engine
    rng = np.random.default_rng(9)
    q = qir.QNetwork([
        qir.Block("in", (4,)),
        qir.Block("h", (3,), [qir.DenseSyn("in", rng.integers(-60, 60, (3, 4))),
                              qir.DenseSyn("h", 2 * rng.integers(-128, 128, (3, 3)))],
                  neuron=qir.Cuba(vth=200, i_decay=1000)),
        qir.Block("out", (2,), [qir.DenseSyn("h", rng.integers(-255, 256, (2, 3)))],
                  neuron=qir.Readout()),
    ])
    assert not engine._feed_forward(q)
    res = assert_matches_reference(q, rng.integers(-30, 60, (3, 4)), steps=10)
    assert res.spike_counts["h"].sum() > 0
