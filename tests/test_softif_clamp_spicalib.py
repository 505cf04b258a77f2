"""Voltage clamping and SpiCalib in the fixed-point SoftIF (qir.SoftIF.clamp_steps /
spicalib_beta): emulator semantics, quantizer mapping from the float SNN, NetX extension keys,
and the Lava process bit for bit.

Expected values come from the unclamped emulator run shifted in time, from hand-computed SpiCalib
thresholds, from the float models (loihi_conv/snn/neurons/spicalib.py, simulate) and from Lava itself.
Layouts: emulator inputs (N, T_in, *shape) PyTorch order; recorded states (N, steps, *shape).
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.methods import clamp
from loihi_conv.emulate import emulate
from loihi_conv.fixed import qir
from loihi_conv.fixed.quantize import quantize
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons import get_neuron_model
from loihi_conv.snn.simulate import simulate
from netx_export import validate
from netx_export.reader import load
from netx_export.writer import save

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ---- one SoftIF block fed by the graded input (weight 1: it integrates x[t-1] at step t) -------
def one_block(mode="if-soft", units=1, clamp_steps=0, beta=None, vth=(10, 7), v_init=None,
              bias=None) -> qir.QNetwork:
    c = len(vth)
    return qir.QNetwork([
        qir.Block("in", (c,)),
        qir.Block("h", (c,), [qir.DenseSyn("in", np.eye(c, dtype=np.int64))],
                  bias=None if bias is None else np.array(bias),
                  neuron=qir.SoftIF(vth=np.array(vth), v_init=None if v_init is None else np.array(v_init),
                                    mode=mode, max_units=units, clamp_steps=clamp_steps,
                                    spicalib_beta=beta))])


def states(qnet, x, steps) -> dict[str, np.ndarray]:
    """Block h's recorded states and payload 's' for input x (T_in, C), sample 0: (steps, C)."""
    res = emulate(qnet, np.asarray(x)[None], steps, record=["h"])
    return {k: v[0] for k, v in res.states["h"].items()}


# ---- clamping ----------------------------------------------------------------------------------
def input_block(mode="if-soft", units=1, clamp_steps=0) -> qir.QNetwork:
    """A SoftIF *input* neuron (v_init, bias) into a Readout: it integrates x[t-1] at step t
    (no synapse delay), so any step's input can be given to it."""
    return qir.QNetwork([
        qir.Block("h", (2,), bias=np.array([2, -1]),
                  neuron=qir.SoftIF(vth=np.array([10, 7]), v_init=np.array([3, -2]), mode=mode,
                                    max_units=units, clamp_steps=clamp_steps)),
        qir.Block("o", (1,), [qir.DenseSyn("h", np.array([[1, 1]]))], neuron=qir.Readout())])


@pytest.mark.parametrize("mode,units", [("if-soft", 1), ("if-burst", 3), ("if-buffered", 2)])
def test_clamped_block_is_held_then_runs_like_an_unclamped_neuron_started_later(mode, units):
    c, steps = 4, 20
    x = np.random.default_rng(0).integers(-8, 25, (steps, 2))  # (T_in, C) time series, mixed sign
    held = states(input_block(mode, units, clamp_steps=c), x, steps)
    # steps 1..c: no input, no bias, v at v_init << 6, nothing sent
    assert not held["s"][:c].any()
    assert (held["v"][:c] == np.array([3, -2]) * 64).all()
    assert held["t"][:, 0].tolist() == list(range(1, steps + 1))
    # afterwards: an unclamped neuron started at step c, i.e. whose step k gets x[c + k - 1]
    free = states(input_block(mode, units), x[c:], steps - c)
    assert "t" not in free  # no counter without clamping or SpiCalib
    for k in ("s", "v") + (("vb",) if mode == "if-buffered" else ()):
        assert np.array_equal(held[k][c:], free[k]), k
    assert held["s"][c:].any()


def test_each_layer_is_silent_for_exactly_its_clamp_steps():
    """A 3-block chain clamped d*l (d = 2): block l first integrates at step 2l+1 but first
    receives input at step l+1, so block l's first spike comes no earlier than step 2l+1."""
    d, steps = 2, 24
    blocks = [qir.Block("in", (1,))]
    for level in (1, 2, 3):
        src = blocks[-1].name
        blocks.append(qir.Block(f"h{level}", (1,), [qir.DenseSyn(src, np.array([[8]]))],
                                bias=np.array([1]),
                                neuron=qir.SoftIF(vth=np.array([6]), v_init=np.array([level]),
                                                  clamp_steps=d * level)))
    qnet = qir.QNetwork(blocks)
    res = emulate(qnet, np.full((1, 1, 1), 5), steps, record=True)
    for level in (1, 2, 3):
        st = {k: v[0, :, 0] for k, v in res.states[f"h{level}"].items()}
        held = d * level
        assert not st["s"][:held].any() and (st["v"][:held] == level * 64).all()
        # the bias alone moves v on the first unclamped step
        assert st["v"][held] != level * 64 and st["s"][held:].any()


# ---- SpiCalib ------------------------------------------------------------------------------------
def test_spicalib_takes_back_the_spikes_of_a_neuron_that_fires_early_then_stays_silent():
    """Neuron 0 gets 12 for three steps (vth 10: spikes at steps 2, 3, 4), then -5 for ever:
    N = 3, t' = 4, phi = 4/3. With beta 2 it is flagged when 3 (t - 4) > 4 + 3*2, i.e. from
    step 8; three corrections bring the net count back to 0. Neuron 1 (constant 7, vth 10)
    fires regularly with gaps <= phi and is never corrected, even with beta 0."""
    steps = 30
    x = np.zeros((steps, 2), np.int64)
    x[:3, 0], x[3:, 0], x[:, 1] = 12, -5, 7
    for beta in (2, 0):
        calib = states(one_block(beta=beta), x, steps)
        plain = states(one_block(), x, steps)
        s0 = calib["s"][:, 0]
        assert plain["s"][:, 0].nonzero()[0].tolist() == [1, 2, 3]  # steps 2, 3, 4
        first = 4 + (4 + 3 * beta) // 3 + 1  # first t with 3 (t - 4) > 4 + 3 beta
        assert ((s0 < 0).nonzero()[0] + 1).tolist() == [first, first + 1, first + 2]
        assert s0.sum() == 0 and calib["net"][-1, 0] == 0 and (calib["net"][:, 0] >= 0).all()
        assert calib["n_spikes"][-1, 0] == 3 and calib["t_last"][-1, 0] == 4
        assert np.array_equal(calib["s"][:, 1], plain["s"][:, 1]) and plain["s"][:, 1].sum() > 10
        assert np.array_equal(calib["v"], plain["v"])  # the membrane is never touched


@pytest.mark.parametrize("mode,units,params", [("if-soft", 1, {}), ("if-burst", 3, {"burst": 3}),
                                               ("if-buffered", 2, {"s_max": 2})])
def test_fixed_point_spicalib_equals_the_float_model_spike_for_spike(mode, units, params):
    """The float SpiCalib neuron (theta = vth, current = a) and the SoftIF emulator (v in units
    of 1/64) compute the same integer monitor: identical payloads, also with clamping (the float
    neuron is not stepped while clamped, as in simulate)."""
    steps, c, clamp_steps, beta = 80, 64, 3, 2
    rng = np.random.default_rng(1)
    # bursts of positive input, then pauses and negative input: corrections happen
    x = np.where(rng.random((steps, c)) < 0.3, rng.integers(5, 30, (steps, c)), rng.integers(-12, 3, (steps, c)))
    x[40:] = np.minimum(x[40:], 0)
    vth = rng.integers(8, 16, c)
    fixed = states(one_block(mode, units, clamp_steps, beta, vth=tuple(vth)), x, steps)["s"]
    node = ir.Neuron("h", (), model="spicalib", threshold=torch.tensor(vth, dtype=torch.float64),
                     params={"base": mode, "beta": beta, **params})
    model = get_neuron_model("spicalib")
    state = model.init_state((1, c), node, torch.float64)
    a = np.concatenate([np.zeros((1, c), np.int64), x[:-1]])  # a(t) = x[t-2]: one synapse step
    flt = np.zeros_like(fixed)
    for t in range(clamp_steps, steps):
        flt[t] = model.step(state, torch.tensor(a[t:t + 1], dtype=torch.float64)).numpy()[0]
    assert (fixed < 0).sum() > 10 and (fixed > 0).sum() > 50  # both mechanisms exercised
    assert np.array_equal(fixed, flt)


def test_spicalib_messages_are_signed_graded_and_bounded():
    for mode, units, low in (("if-soft", 1, -1), ("if-burst", 3, -1), ("if-buffered", 2, -3)):
        from loihi_conv.emulate.neurons import make_neuron

        block = one_block(mode, units, beta=1).blocks[1]
        runner = make_neuron(block.neuron, block)
        assert not runner.binary and runner.msg_bound == max(units, -low)
        assert set(runner.state_names) == {"v", "t", "n_spikes", "t_last", "net"} | (
            {"vb"} if mode == "if-buffered" else set())


# ---- quantizer: float SNN -> SoftIF ------------------------------------------------------------
@pytest.mark.parametrize("case", ["clamp", "spicalib", "spicalib-burst+clamp"])
def test_quantized_clamping_and_spicalib_follow_the_float_snn(case, small_snn):
    """Float SNN (delay=1) vs the quantized network in the emulator. Tolerance: the integer
    weights, biases and thresholds are rounded at a scale of a few hundred units per threshold
    (relative error ~1e-3), so a few spikes shift by a step; a shifted spike can move a SpiCalib
    correction too. Per neuron, the units sent differ by < 3% of the window on average and the
    counts correlate > 0.99; clamping and corrections must really be in both runs."""
    model, params = {"clamp": ("if-soft", {}), "spicalib": ("spicalib", {"beta": 1}),
                     "spicalib-burst+clamp": ("spicalib", {"beta": 1, "base": "if-burst", "burst": 3})}[case]
    graph = small_snn(model, params)
    if "clamp" in case:
        graph = clamp(graph, 1)  # layer l held for its first l steps (Recipe.clamp_delay=1)
    x = 2 * torch.rand(16, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    T = 32
    qnet = quantize(graph, "if-soft", T, calib=x)
    for level, name in enumerate(("n1", "n2"), start=1):
        n = qnet[name].neuron
        assert n.clamp_steps == (level if "clamp" in case else 0)
        assert n.spicalib_beta == params.get("beta")
        assert n.mode == params.get("base", "if-soft" if model == "spicalib" else model)
    sim = simulate(graph, x, [T], record="neuron")
    steps = sim.steps(T)
    res = emulate(qnet, torch.round(x.double() * qnet.input_scale).long(), steps, record=["n1", "n2", "fc"])
    for name in ("n1", "n2"):
        payload = res.states[name]["s"]  # (N, steps, C, H, W)
        units_q = payload.sum(1).astype(np.float64)
        units_f = sim.counts[T][name].double().numpy()
        assert np.corrcoef(units_q.ravel(), units_f.ravel())[0, 1] > 0.99, name
        assert np.abs(units_q - units_f).mean() / sim.window(T, name) < 0.03, name
        if "clamp" in case:
            held = qnet[name].neuron.clamp_steps
            assert not payload[:, :held].any()
    if model == "spicalib":  # corrections happened in the fixed point ...
        assert (res.states["n2"]["s"] < 0).sum() > 10
        # ... in the float SNN too: fewer units than the base model sends
        base = simulate(small_snn(params.get("base", "if-soft"), params), x, [T])
        assert float(sim.counts[T]["n2"].sum()) < float(base.counts[T]["n2"].sum())
    out_q = res.states["fc"]["v"][:, -1] / qnet.output_scale
    out_f = sim.output[T].double().numpy()
    assert np.abs(out_q - out_f).mean() < 0.1 * np.abs(out_f).mean()
    assert (out_q.argmax(1) == out_f.argmax(1)).mean() >= 0.85


def test_non_integer_beta_is_refused_on_the_exact_target(small_snn):
    with pytest.raises(LoihiConvError, match="beta=2.5 is not an integer") as err:
        quantize(small_snn("spicalib", {"beta": 2.5}), "if-soft", 8)
    assert "integer beta" in err.value.fix
    with pytest.raises(LoihiConvError, match="'spicalib' has no mapping on target 'cuba'"):
        quantize(small_snn("spicalib", {"beta": 2}), "cuba", 8)


# ---- NetX extension ------------------------------------------------------------------------------
def two_blocks(clamp_steps=0, beta=None) -> qir.QNetwork:
    rng = np.random.default_rng(2)
    return qir.QNetwork([
        qir.Block("in", (2, 4, 4)),
        qir.Block("c1", (3, 4, 4), [qir.ConvSyn("in", rng.integers(-5, 6, (3, 2, 3, 3)), padding=(1, 1))],
                  neuron=qir.SoftIF(vth=np.array([20, 30, 25]), clamp_steps=clamp_steps,
                                    spicalib_beta=beta)),
        qir.Block("out", (4,), [qir.DenseSyn("c1", 2 * rng.integers(-20, 21, (4, 48)))],
                  neuron=qir.Readout())])


def test_clamp_steps_and_beta_round_trip_and_are_absent_when_unused(tmp_path):
    back = load(save(two_blocks(3, 5), tmp_path / "both.net"))
    assert (back["c1"].neuron.clamp_steps, back["c1"].neuron.spicalib_beta) == (3, 5)
    back = load(save(two_blocks(0, 0), tmp_path / "beta0.net"))  # beta 0 is on, not absent
    assert (back["c1"].neuron.clamp_steps, back["c1"].neuron.spicalib_beta) == (0, 0)
    plain = save(two_blocks(), tmp_path / "plain.net")
    with h5py.File(plain, "r") as f:
        assert not {"clampSteps", "spiCalibBeta"} & set(f["layer/1/neuron"].keys())
    with h5py.File(tmp_path / "both.net", "r") as f:
        n = f["layer/1/neuron"]
        assert int(n["clampSteps"][()]) == 3 and int(n["spiCalibBeta"][()]) == 5
    back = load(plain)
    assert (back["c1"].neuron.clamp_steps, back["c1"].neuron.spicalib_beta) == (0, None)


@pytest.mark.parametrize("clamp_steps,beta,match", [(-1, None, "clamp_steps = -1"),
                                                    (70000, None, "clamp_steps = 70000"),
                                                    (2.5, None, "clamp_steps 2.5 is not an int"),
                                                    (True, None, "clamp_steps True is not an int"),
                                                    (0, -2, "spicalib_beta = -2"),
                                                    (0, 1.5, "spicalib_beta 1.5 is not an int")])
def test_bad_clamp_steps_and_beta_are_clear_errors(clamp_steps, beta, match, tmp_path):
    qnet = two_blocks(clamp_steps, beta)
    with pytest.raises(LoihiConvError, match=match) as err:
        validate.check_ranges(qnet)
    assert err.value.fix
    with pytest.raises(LoihiConvError, match=match):
        save(qnet, tmp_path / "bad.net")
    assert not list(tmp_path.iterdir())  # nothing written


# ---- Lava, bit for bit -----------------------------------------------------------------------------
def lava_net(seed: int = 3) -> qir.QNetwork:
    """Graded input -> c1 (binary mode + SpiCalib, clamp 1) -> c2 (burst + SpiCalib, clamp 2;
    fan-in from the input) -> out (buffered + SpiCalib, clamp 3; dense from c2): conv and dense
    synapses receive signed SpiCalib payloads, and the output's payloads are recorded."""
    rng = np.random.default_rng(seed)

    def softif(vth, clamp_steps, beta, mode="if-soft", units=1):
        return qir.SoftIF(vth=np.array(vth), mode=mode, max_units=units, clamp_steps=clamp_steps,
                          spicalib_beta=beta)

    return qir.QNetwork([
        qir.Block("in", (2, 5, 5)),
        qir.Block("c1", (3, 5, 5), [qir.ConvSyn("in", rng.integers(-2, 9, (3, 2, 3, 3)), padding=(1, 1))],
                  bias=np.array([1, -2, 0]), neuron=softif([20, 30, 25], 1, 1)),
        qir.Block("c2", (4, 3, 3), [qir.ConvSyn("c1", rng.integers(-10, 31, (4, 3, 3, 3)),
                                                stride=(2, 2), padding=(1, 1)),
                                    qir.ConvSyn("in", rng.integers(-4, 5, (4, 2, 1, 1)), stride=(2, 2))],
                  neuron=softif([40, 50, 30, 60], 2, 0, "if-burst", 3)),
        qir.Block("out", (3,), [qir.DenseSyn("c2", 2 * rng.integers(-10, 21, (3, 36)))],
                  bias=np.array([2, 0, -1]), neuron=softif([30, 25, 40], 3, 2, "if-buffered", 2))])


@pytest.mark.lava
def test_emulator_equals_lava_fixed_point_with_clamping_and_spicalib(tmp_path):
    from netx_export.runner import LavaRunner

    qnet = lava_net()
    path = save(qnet, tmp_path / "clamp_spicalib.net")
    steps = 14
    rng = np.random.default_rng(5)
    samples = []
    for _ in range(2):  # strong positive input first, then negative: early firing, then silence
        x = rng.integers(-2, 9, (steps, 2, 5, 5))
        x[5:] = -rng.integers(0, 6, (steps - 5, 2, 5, 5))
        samples.append(x)
    with LavaRunner(path) as r:
        runs = [r.run(x, steps, probes="all") for x in samples]  # one compiled net, reset between
    negatives = 0
    for x, lava in zip(samples, runs):
        emu = emulate(qnet, x[None], steps, record=True)
        assert np.array_equal(lava.output, emu.output[0])  # the output block's payloads
        compared = set()
        for block, st in lava.states.items():
            for name, values in st.items():
                assert np.array_equal(values, emu.states[block][name][0]), (block, name)
                compared.add((block, name))
        assert {(b, k) for b in ("c1", "c2", "out") for k in ("v", "t", "n_spikes", "t_last", "net")} <= compared
        assert (lava.states["c1"]["t"][:, 0, 0, 0] == np.arange(1, steps + 1)).all()  # restarted
        for block, held in (("c1", 1), ("c2", 2), ("out", 3)):
            s = emu.states[block]["s"][0]
            assert not s[:held].any() and s[held:].any(), block
            negatives += int((s < 0).sum())
    assert negatives > 0  # SpiCalib corrections travelled through the synapses
