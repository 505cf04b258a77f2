"""Spiking max-pool in the fixed-point path: the quantizer's fold (avg -> linear pool, the others
-> a ``qir.SpikePool`` stage), the emulator's integer stages, the real zoo model, its export
(NetX extension only; tests/test_pool_lava.py runs it on Lava).

Layouts: PyTorch order everywhere; message trains (N, T, C, H, W) ints; records (N, steps, ...).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loihi_conv import api
from loihi_conv.app import models
from loihi_conv.base import limits
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.normalize import to_snn
from loihi_conv.emulate import Emulator, emulate, emulator_predictions
from loihi_conv.fixed import qir
from loihi_conv.fixed.quantize import fold, quantize
from loihi_conv.fixed.quantize.blocks import block_input
from loihi_conv.fixed.quantize.blocks import forward as fold_forward
from loihi_conv.frontend import ir
from loihi_conv.frontend.ops import apply, forward, infer_shapes
from loihi_conv.snn.pooling import AvgReplacement, RateGate

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

POOL = qir.SpikePool("mli", (3, 3), (2, 2), (0, 0), True)  # overlapping windows, ceil mode


# ---- helpers -----------------------------------------------------------------------------------
def snn_graph(pool: dict, scheme: str, hw: int = 8, head: str = "conv", model: str = "if-soft",
              params: dict | None = None, seed: int = 0) -> ir.Graph:
    """x (1, hw, hw) -> conv -> neuron -> MaxPool2d(**pool) -> [conv -> neuron ->] flatten ->
    linear, converted with per-channel max thresholds and ``max_pool=scheme``."""
    g = torch.Generator().manual_seed(seed)
    nodes = [ir.Input("x", (), (1, hw, hw)),
             ir.Conv2d("c1", ("x",), weight=torch.randn(4, 1, 3, 3, generator=g),
                       bias=0.1 * torch.rand(4, generator=g), padding=(1, 1)),
             ir.ReLU("n1", ("c1",)), ir.MaxPool2d("p", ("n1",), **pool)]
    if head == "conv":
        nodes += [ir.Conv2d("c2", ("p",), weight=torch.randn(3, 4, 2, 2, generator=g), bias=None),
                  ir.ReLU("n2", ("c2",)), ir.Flatten("f", ("n2",))]
    else:
        nodes += [ir.Flatten("f", ("p",))]
    ann = infer_shapes(ir.Graph({n.name: n for n in nodes[:-1]}, nodes[-2].name))
    n_in = int(np.prod(ann[nodes[-1].inputs[0]].shape))
    nodes += [ir.Linear("o", ("f",), weight=torch.randn(5, n_in, generator=g), bias=None)]
    ann = infer_shapes(ir.Graph({n.name: n for n in nodes}, "o"))
    x = images(64, hw, seed + 1)
    acts = forward(ann, x, record=True)[1]
    th = {n.name: acts[n.name].amax((0, 2, 3)).clamp(min=0.1) for n in ann.of_type(ir.ReLU)}
    snn = to_snn(ann, th, model, params=params or {})
    snn.meta["recipe"] = {"max_pool": scheme}
    return snn


def f64(node: ir.Node) -> ir.Node:
    """The node with float64 parameters (to compare with the float64 fold exactly)."""
    return ir.clone_node(node, **{k: getattr(node, k).double() for k in ("weight", "bias")
                                  if getattr(node, k, None) is not None})


def images(n: int, hw: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, hw, hw, generator=torch.Generator().manual_seed(seed))


def pool_net(scheme: str, shape=(2, 8, 8), pool: qir.SpikePool = POOL) -> qir.QNetwork:
    """Input block -> identity depthwise conv behind a ``scheme`` pool -> Readout: its
    ``u`` grows by 64 x the pooled message each step (one step later)."""
    sp = qir.SpikePool(scheme, pool.kernel, pool.stride, pool.padding, pool.ceil_mode)
    c = shape[0]
    syn = qir.ConvSyn("x", weight=np.ones((c, 1, 1, 1), np.int64), groups=c, pool=sp)
    return qir.QNetwork([qir.Block("x", shape), qir.Block("p", sp.out_shape(shape), [syn], neuron=qir.Readout())])


def pooled_messages(qnet: qir.QNetwork, trains: np.ndarray) -> np.ndarray:
    """The pooled message of every input step (N, T, C, H', W'), read off the Readout's u."""
    steps = trains.shape[1] + 1
    u = emulate(qnet, trains, steps, record=["p"]).states["p"]["u"].astype(np.int64)
    d = np.diff(u, axis=1, prepend=0)
    assert not d[:, 0].any() and not (d % 64).any()  # one step of synaptic delay; a << 6
    return d[:, 1:] // 64


def windows(h: int, w: int, pool: qir.SpikePool) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(out y, out x, real positions in row-major order) of every pooling window, by hand."""
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel, pool.stride, pool.padding
    _, oh, ow = pool.out_shape((1, h, w))
    out = []
    for oy in range(oh):
        for ox in range(ow):
            pos = [(y, x) for y in range(oy * sh - ph, oy * sh - ph + kh)
                   for x in range(ox * sw - pw, ox * sw - pw + kw) if 0 <= y < h and 0 <= x < w]
            out.append((oy, ox, pos))
    return out


def spike_trains(shape, T: int, seed: int, top: int = 1, p: float = 0.3) -> np.ndarray:
    """Random integer message trains (N, T, *shape) in [0, top] (binary for top=1)."""
    rng = np.random.default_rng(seed)
    size = (shape[0], T) + tuple(shape[1:])
    return (rng.random(size) < p) * rng.integers(1, top + 1, size)


# ---- avg: folded as an average pool, exactly the float scheme ----------------------------------
@pytest.mark.parametrize("pool, head", [
    (dict(kernel_size=(2, 2), stride=(2, 2)), "conv"),
    (dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)), "conv"),
    (dict(kernel_size=(2, 2), stride=(2, 2), ceil_mode=True), "conv"),  # 8x8: ceil adds no window
    (dict(kernel_size=(3, 3), stride=(2, 2), ceil_mode=True), "flatten"),  # partial window: dense
])
def test_avg_fold_equals_the_float_avg_scheme(pool, head):
    snn = snn_graph(pool, "avg", head=head)
    blocks = fold(snn)
    assert all(s.pool is None for b in blocks for s in b.synapses)
    v = torch.rand(16, *snn["n1"].shape, generator=torch.Generator().manual_seed(5)).double()
    want = AvgReplacement().step(snn["p"], {}, v)  # the float SNN's op on spike values
    for name in (("c2",) if head == "conv" else ("f", "o")):  # then the linear nodes up to the block
        want = apply(f64(snn[name]), want)
    got = block_input(blocks[2], {"n1": v})  # the block fed through the pool
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-10)


def test_avg_with_a_partial_ceil_window_before_a_conv_is_refused():
    snn = snn_graph(dict(kernel_size=(3, 3), stride=(2, 2), ceil_mode=True), "avg")
    why = r"AvgPool2d 'p' \(a MaxPool2d becomes one under max_pool='avg'\).*ceil_mode=True"
    with pytest.raises(LoihiConvError, match=why) as err:
        fold(snn)
    assert "ceil_mode=False" in err.value.fix


def test_avg_quantizes_to_plain_synapses_that_export(tmp_path):
    snn = snn_graph(dict(kernel_size=(2, 2), stride=(2, 2)), "avg")
    x = images(200, 8, 7)
    qnet = quantize(snn, "if-soft", 32, calib=x)
    assert all(s.pool is None for b in qnet.blocks for s in b.synapses)
    api.save(qnet, tmp_path / "avg.net")
    res = api.simulate(snn, x, [32], record=False)
    agree = (emulator_predictions(qnet, x, 32) == res.predictions(32).numpy()).mean()
    assert agree > 0.9


# ---- the emulator's integer stages --------------------------------------------------------------
@pytest.mark.parametrize("top", [1, 3])  # binary spikes, graded messages
def test_emulator_mli_is_the_integer_identity_and_sends_the_max_cumulative_input(top):
    trains = spike_trains((3, 2, 8, 8), 30, seed=top, top=top)
    out = pooled_messages(pool_net("mli"), trains)
    # the identity: cum += msg, total = maxpool(cum), out = total - sent (independent loops)
    cum = np.cumsum(trains, axis=1)
    total = np.zeros(out.shape, np.int64)
    for oy, ox, pos in windows(8, 8, POOL):
        total[..., oy, ox] = np.max([cum[..., y, x] for y, x in pos], axis=0)
    assert np.array_equal(out, np.diff(total, axis=1, prepend=0))
    # cumulative output = max of the window's cumulative inputs, at every step
    assert np.array_equal(np.cumsum(out, axis=1), total)
    assert out.min() >= 0 and out.max() <= top  # within the source's message range
    assert out.shape[-2:] == (4, 4) == F.max_pool2d(torch.zeros(1, 8, 8), 3, 2, ceil_mode=True).shape[-2:]


@pytest.mark.parametrize("scheme", ["mli", "rate-gate", "spike-max"])
def test_streaming_and_layer_major_emulation_agree(scheme):
    qnet = pool_net(scheme)
    trains = spike_trains((2, 2, 8, 8), 12, seed=3, top=2)
    batch = emulate(qnet, trains, 13, record=["p"]).states["p"]["u"]
    em = Emulator(qnet)
    em.reset(2, 2)
    for t in range(13):
        em.step(torch.from_numpy(trains[:, t % 12]))
        assert np.array_equal(em.states("p")["u"].numpy(), batch[:, t])


def test_rate_gate_passes_one_neurons_messages_per_window():
    trains = spike_trains((2, 2, 8, 8), 40, seed=11, top=1, p=0.4)
    out = pooled_messages(pool_net("rate-gate"), trains)
    # reference: r += (m << 12) - (r >> 3); the gate is the first position with the largest r
    r = np.zeros(trains.shape[:1] + trains.shape[2:], np.int64)
    gates = []
    for t in range(trains.shape[1]):
        r = r - (r >> limits.RATE_DECAY_SHIFT) + (trains[:, t].astype(np.int64) << limits.RATE_INPUT_SHIFT)
        gates.append(r.copy())
    switches = 0
    for oy, ox, pos in windows(8, 8, POOL):
        rs = np.stack([np.stack(gates, 1)[..., y, x] for y, x in pos])  # (positions, N, T, C)
        ms = np.stack([trains[..., y, x] for y, x in pos])
        winner = rs.argmax(0)  # first index on ties, row-major like max_pool2d
        assert np.array_equal(out[..., oy, ox], np.take_along_axis(ms, winner[None], 0)[0])
        switches += int((np.diff(winner, axis=1) != 0).sum())
    assert switches > 0  # the gate moves between neurons, still passing one at a time
    assert set(np.unique(out)) <= {0, 1}


def test_float_and_integer_rate_gates_share_the_decay():
    # Same trains (theta = 1): the float gate (decay 7/8) and the integer shift rule pick the
    # same neuron except on near-ties that the integer floor breaks differently.
    trains = spike_trains((2, 2, 8, 8), 60, seed=4, p=0.35)
    out = pooled_messages(pool_net("rate-gate"), trains)
    node = ir.MaxPool2d("p", ("n",), kernel_size=(3, 3), stride=(2, 2), ceil_mode=True)
    gate = RateGate()
    x = torch.from_numpy(trains).double()
    state = gate.init_state(node, x[:, 0])
    flt = torch.stack([gate.step(node, state, x[:, t]) for t in range(x.shape[1])], 1).numpy()
    assert RateGate.decay == 1 - 2 ** -limits.RATE_DECAY_SHIFT
    assert (flt == out).mean() >= 0.99  # (with the old decay 0.9: 0.96)


def test_emulator_refuses_a_malformed_pool():
    qnet = pool_net("mli")
    qnet.blocks[1].synapses[0].pool.scheme = "median"
    with pytest.raises(LoihiConvError, match="unknown spiking max-pool scheme 'median'"):
        emulate(qnet, np.zeros((1, 2, 8, 8), np.int64), 2)
    qnet = pool_net("mli")
    qnet.blocks[1].synapses[0].pool.kernel = (12, 12)
    with pytest.raises(LoihiConvError, match="does not fit the source shape"):
        emulate(qnet, np.zeros((1, 2, 8, 8), np.int64), 2)


# ---- quantizer placements -----------------------------------------------------------------------
def test_pool_stage_and_rate_model_in_the_fold():
    snn = snn_graph(dict(kernel_size=(3, 3), stride=(2, 2), ceil_mode=True), "rate-gate", head="flatten")
    blocks = fold(snn)
    (syn,) = blocks[2].synapses
    assert syn.source == "n1" and syn.pool.scheme == "rate-gate"
    assert (syn.pool.kernel, syn.pool.stride, syn.pool.ceil_mode) == ((3, 3), (2, 2), True)
    assert syn.weight.shape == (5, 4 * 4 * 4)  # weights see the pooled (4, 4, 4) source
    x = images(16, 8, 2).double()  # the rate model (max of clipped rates) is the SNN IR's ANN
    assert torch.allclose(fold_forward(blocks, x)["o"], forward(snn, x.float()).double(), atol=1e-4)


def test_max_pool_of_the_input_is_a_spike_max_stage_and_misplaced_pools_are_refused():
    g = torch.Generator().manual_seed(0)
    nodes = [ir.Input("x", (), (1, 8, 8)), ir.MaxPool2d("p", ("x",)),
             ir.Conv2d("c", ("p",), weight=torch.randn(2, 1, 3, 3, generator=g), padding=(1, 1)),
             ir.Neuron("n", ("c",), threshold=torch.ones(2)), ir.Flatten("f", ("n",)),
             ir.Linear("o", ("f",), weight=torch.randn(3, 32, generator=g))]
    snn = infer_shapes(ir.Graph({n.name: n for n in nodes}, "o", meta={"recipe": {"max_pool": "avg"}}))
    (syn,) = fold(snn)[1].synapses
    assert syn.source == "x" and syn.pool.scheme == "spike-max"  # the float SNN's ANN max
    # A max-pool after a conv (before the ReLU) is not a stage on a population's out-port.
    nodes = [ir.Input("x", (), (1, 8, 8)),
             ir.Conv2d("c", ("x",), weight=torch.randn(2, 1, 1, 1, generator=g)),
             ir.Neuron("n", ("c",), threshold=torch.ones(2)),
             ir.Conv2d("c2", ("n",), weight=torch.randn(2, 2, 1, 1, generator=g)),
             ir.MaxPool2d("mp", ("c2",)), ir.Neuron("n2", ("mp",), threshold=torch.ones(2)),
             ir.Flatten("f", ("n2",)), ir.Linear("o", ("f",), weight=torch.randn(2, 32, generator=g))]
    snn = infer_shapes(ir.Graph({n.name: n for n in nodes}, "o"))
    with pytest.raises(LoihiConvError, match="MaxPool2d 'mp' is fed by 'c2'") as err:
        quantize(snn, "if-soft", 8)
    assert "max_pool='avg'" in err.value.fix


@pytest.mark.parametrize("scheme", ["mli", "rate-gate"])
@pytest.mark.parametrize("model, params, top", [("if-soft", {}, 1), ("if-multibit", {"s_max": 2}, 2)])
def test_pooled_spiking_sources_run_the_same_streaming_and_layer_major(scheme, model, params, top):
    # Binary or multi-bit (up to 2 units) sources: the pooled trains stay uint8 (int8 kernels in
    # the layer-major run) and must equal the streaming run (float kernels) bit for bit.
    snn = snn_graph(dict(kernel_size=(3, 3), stride=(2, 2), ceil_mode=True), scheme, model=model,
                    params=params)
    x = images(100, 8, 9)
    qnet = quantize(snn, "if-soft", 16, calib=x)
    x_int = torch.round(x * qnet.input_scale).to(torch.int64)
    steps = 16 + qnet.depth
    res = emulate(qnet, x_int, steps, record=["n1"])
    assert res.states["n1"]["s"].max() == top  # what reaches the pool
    em = Emulator(qnet)
    em.reset(len(x_int), int(x_int.abs().max()), static_input=True)
    for t in range(steps):
        out = em.step(x_int)[qnet.output.name]
        assert np.array_equal(out.numpy(), res.output[:, t])
    assert np.array_equal(em.states(qnet.output.name)["u"].numpy(), res.readout)


def test_sdnn_refuses_spiking_pools():
    snn = snn_graph(dict(kernel_size=(2, 2), stride=(2, 2)), "mli")
    with pytest.raises(LoihiConvError, match="target 'sdnn' cannot run the spiking max-pool"):
        quantize(snn, "sdnn", 8, calib=images(32, 8, 1))


# ---- the zoo model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo_mli(one_thread):
    ref = models.resolve("mnist_cnn_maxpool", progress=False)
    recipe = api.Recipe(max_pool="mli")
    calib = api.calibration_data(ref.dataset, recipe)
    snn = api.convert(ref.module, calib, recipe, input_shape=ref.input_shape)
    qnet = api.quantize(snn, "if-soft", timesteps=64, calib=calib)
    return snn, qnet


def test_mnist_cnn_maxpool_mli_emulator_matches_the_float_snn(zoo_mli):
    snn, qnet = zoo_mli
    assert [s.pool.scheme for b in qnet.blocks for s in b.synapses if s.pool] == ["mli", "mli"]
    x, y = api.test_data("mnist", 200)
    res = api.simulate(snn, x, [64], record=False)
    flt = res.predictions(64).numpy()
    emu = emulator_predictions(qnet, x, 64)
    acc_f, acc_e = (flt == y.numpy()).mean(), (emu == y.numpy()).mean()
    assert acc_f > 0.95 and abs(acc_e - acc_f) <= 0.01
    assert (emu == flt).mean() >= 0.97


def test_the_spiking_pool_exports_as_an_extension_but_not_as_standard_netx(zoo_mli, tmp_path):
    from netx_export import load, read_info

    _, qnet = zoo_mli
    with pytest.raises(LoihiConvError, match="spiking max-pool stage \\('mli'\\)") as err:
        api.save(qnet, tmp_path / "std.net", extension=False)
    assert "max_pool='avg'" in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp file
    path = api.save(qnet, tmp_path / "mli.net")  # the extension carries the stage
    assert read_info(path)["format"] == 1
    pools = [[vars(s.pool) for b in net.blocks for s in b.synapses if s.pool] for net in (load(path), qnet)]
    assert pools[0] == pools[1] and len(pools[0]) == 2


@pytest.mark.parametrize("scheme", ["spike-max", "mli", "rate-gate"])
def test_binary_spikes_of_a_large_population_pool_like_the_recorded_spikes(scheme):
    """Regression: uint8 0/1 spikes of a (2, 16, 16) population, pooled layer-major (the
    channels-last uint8 max-pool of torch 2.3 refuses planes of more than 255 values)."""
    shape, c = (2, 16, 16), 2
    ident = qir.ConvSyn("x", weight=np.ones((c, 1, 1, 1), np.int64), groups=c)
    sp = qir.SpikePool(scheme, (2, 2), (2, 2))
    pooled = qir.ConvSyn("n", weight=np.ones((c, 1, 1, 1), np.int64), groups=c, pool=sp)
    qnet = qir.QNetwork([qir.Block("x", shape),
                         qir.Block("n", shape, [ident], neuron=qir.SoftIF(vth=np.ones(c, np.int64))),
                         qir.Block("p", sp.out_shape(shape), [pooled], neuron=qir.Readout())])
    trains = spike_trains((3,) + shape, 20, seed=5)
    res = emulate(qnet, trains, 22, record=["n", "p"])
    spikes = res.states["n"]["s"].astype(np.int64)  # (N, steps, 2, 16, 16), 0/1
    assert spikes.sum() > 100
    got = np.diff(res.states["p"]["u"].astype(np.int64), axis=1, prepend=0)[:, 1:] // 64
    em = Emulator(qnet)  # the streaming path on the same trains
    em.reset(3, 1)
    for t in range(22):
        em.step(torch.from_numpy(trains[:, t % 20]))
        assert np.array_equal(em.states("p")["u"].numpy(), res.states["p"]["u"][:, t])
    if scheme == "spike-max":
        want = F.max_pool2d(torch.from_numpy(spikes[:, :-1]).flatten(0, 1).double(), 2).numpy()
        assert np.array_equal(got.reshape(want.shape), want)
    else:  # mli: the cumulative max; rate-gate: one neuron's spikes per window
        assert got.min() >= 0 and got.max() <= 1


@pytest.mark.parametrize("scheme", ["spike-max", "rate-gate"])
def test_negative_messages_pool_by_their_true_max(scheme):
    """Regression: torch 2.3's channels-last integer max-pool reads negative values as 0; the
    emulator pools negative (signed graded) messages by their real order."""
    trains = -spike_trains((2, 2, 8, 8), 10, seed=9, top=3, p=0.7)  # values in [-3, 0]
    got = pooled_messages(pool_net(scheme), trains)
    top = F.max_pool2d(torch.from_numpy(trains).flatten(0, 1).double(), POOL.kernel, POOL.stride,
                       ceil_mode=POOL.ceil_mode).numpy().reshape(got.shape)
    assert top.min() < 0
    if scheme == "spike-max":
        assert np.array_equal(got, top)
    else:  # the gate passes one real message of each window: never above the window's max
        assert got.min() < 0 and (got <= top).all()
