"""The spiking max-pool stage (qir.SpikePool) in the NetX extension and on Lava.

The process model's integer rules are checked against PyTorch's max_pool2d (the definition the
qir docstring names) and against the emulator's stages; the extension keys round trip and bad
values are refused; on Lava's CPU simulator (fixed_pt) a pooled network equals the emulator at
every step, with the pool's own states checked against numpy recursions over the recorded
source payloads. Layouts: PyTorch order everywhere (messages (C, H, W), records (steps, ...)).
"""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from loihi_conv.base import limits
from loihi_conv.base.errors import LoihiConvError, NetXFormatError
from loihi_conv.emulate import emulate
from loihi_conv.emulate.synapses import POOL_STAGES
from loihi_conv.fixed import qir
from netx_export import schema
from netx_export.compare import diff_networks
from netx_export.procs import pool as procpool
from netx_export.reader import load, read_info
from netx_export.writer import save

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

MLI = qir.SpikePool("mli", (3, 3), (2, 2), (0, 0), True)  # overlapping windows, ceil mode


def geometries(n: int, seed: int):
    """Random PyTorch-legal pools and (C, H, W) sources they fit: padding <= kernel/2, ceil mode
    on and off (with partial last windows)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        k = tuple(int(v) for v in rng.integers(1, 5, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        shape = (int(rng.integers(1, 3)), int(rng.integers(k[0], 9)), int(rng.integers(k[1], 9)))
        yield k, s, p, bool(rng.integers(0, 2)), shape


# ---- the process model's integer rules (numpy, no simulator) ----------------------------------
def test_numpy_max_pool_is_torch_max_pool2d_with_its_tie_and_padding_rules():
    rng = np.random.default_rng(0)
    cases = 0
    for k, s, p, ceil, shape in geometries(200, 1):
        pool = qir.SpikePool("spike-max", k, s, p, ceil)
        rank = rng.integers(-2, 2, shape)  # many ties, and negative values (padding must not win)
        value = rng.permutation(np.prod(shape)).reshape(shape)  # distinct: shows which one won
        want, idx = F.max_pool2d(torch.from_numpy(rank)[None], k, s, p, ceil_mode=ceil,
                                 return_indices=True)
        assert np.array_equal(procpool.max_pool(rank, pool), want[0].numpy())
        gated = value.reshape(shape[0], -1)[np.arange(shape[0])[:, None], idx[0].flatten(1).numpy()]
        assert np.array_equal(procpool.gated_max(rank, value, pool), gated.reshape(want.shape[1:]))
        cases += 1
    assert cases == 200
    # by hand: an all-negative map with padding and a ceil overhang stays negative (a padded
    # zero would win a zero-padded max), and a tie picks the first position in row-major order
    pool = qir.SpikePool("spike-max", (2, 2), (2, 2), (1, 1), True)
    assert procpool.max_pool(np.full((1, 3, 3), -5), pool).tolist() == [[[-5, -5], [-5, -5]]]
    rank = np.array([[[1, 0, 1], [1, 0, 0], [0, 0, 1]]])
    value = np.array([[[10, 11, 12], [13, 14, 15], [16, 17, 18]]])
    tie = qir.SpikePool("rate-gate", (2, 2), (1, 1))
    assert procpool.gated_max(rank, value, tie).tolist() == [[[10, 12], [13, 18]]]


@pytest.mark.parametrize("scheme", qir.POOL_SCHEMES)
def test_process_rules_equal_the_emulator_stages_on_signed_graded_trains(scheme):
    rng = np.random.default_rng(2)
    for k, s, p, ceil, shape in geometries(40, 3):
        pool = qir.SpikePool(scheme, k, s, p, ceil)
        stage = POOL_STAGES[scheme](pool)
        stage.reset(1)
        state = procpool.initial_state(pool, shape)
        for _ in range(8):
            msg = rng.integers(-3, 4, shape) * (rng.random(shape) < 0.5)
            want = stage.step(torch.from_numpy(msg)[None]).numpy()[0]
            assert np.array_equal(procpool.step(pool, state, msg), want)


# ---- the NetX extension keys ------------------------------------------------------------------
def pooled_net(neuron=lambda c: qir.SoftIF(vth=np.full(c, 9))) -> qir.QNetwork:
    """Every scheme, on conv and dense synapses, first and further (fan-in) synapses, with
    padding and ceil mode: in (2,8,8) -> a (3,8,8) -> b (4,4,4) [mli from a; spike-max from the
    input, padded] -> o (5,) [rate-gate from b, ceil mode; mli from a, padded + ceil]."""
    rng = np.random.default_rng(4)
    sm = qir.SpikePool("spike-max", (3, 3), (2, 2), (1, 1), False)  # in 8x8 -> 4x4
    rg = qir.SpikePool("rate-gate", (3, 3), (2, 2), (1, 1), True)  # b 4x4 -> 3x3
    ml = qir.SpikePool("mli", (3, 3), (3, 3), (1, 1), True)  # a 8x8 -> 3x3 (ceil; 2x2 floor)
    return qir.QNetwork([
        qir.Block("in", (2, 8, 8)),
        qir.Block("a", (3, 8, 8), [qir.ConvSyn("in", rng.integers(-4, 6, (3, 2, 3, 3)), padding=(1, 1))],
                  neuron=neuron(3)),
        qir.Block("b", (4, 4, 4), [qir.ConvSyn("a", rng.integers(-4, 6, (4, 3, 1, 1)), pool=MLI),
                                   qir.ConvSyn("in", rng.integers(-4, 6, (4, 2, 1, 1)), pool=sm)],
                  neuron=neuron(4)),
        qir.Block("o", (5,), [qir.DenseSyn("b", 2 * rng.integers(-9, 9, (5, 36)), pool=rg),
                              qir.DenseSyn("a", 2 * rng.integers(-9, 9, (5, 27)), pool=ml)],
                  neuron=qir.Readout())])


def test_every_scheme_round_trips_and_marks_the_file_as_an_extension(tmp_path):
    qnet = pooled_net(lambda c: qir.Cuba(vth=9))  # standard NetX but for the pools
    path = save(qnet, tmp_path / "pooled.net")
    assert read_info(path)["format"] == schema.FORMAT_VERSION
    back = load(path)
    assert diff_networks(qnet, back) == []
    pools = [(b.name, k, dataclasses.astuple(s.pool)) for b in back.blocks
             for k, s in enumerate(b.synapses) if s.pool is not None]
    assert pools == [("b", 0, ("mli", (3, 3), (2, 2), (0, 0), True)),
                     ("b", 1, ("spike-max", (3, 3), (2, 2), (1, 1), False)),
                     ("o", 0, ("rate-gate", (3, 3), (2, 2), (1, 1), True)),
                     ("o", 1, ("mli", (3, 3), (3, 3), (1, 1), True))]
    assert back["a"].synapses[0].pool is None
    with h5py.File(path, "r") as f:
        first = f["layer/2/spikePool"]  # the layer group holds its first synapse
        assert first["scheme"][()][0] == b"mli" and first["kernel"][()].tolist() == [3, 3]
        assert int(first["ceilMode"][()]) == 1
        further = f["layer/4/synapses/1/spikePool"]  # layer 3 is the flatten before dense 'o'
        assert further["scheme"][()][0] == b"mli" and further["stride"][()].tolist() == [3, 3]
        assert "spikePool" not in f["layer/1"]


def test_standard_netx_refuses_the_pool_with_the_reason_and_the_fix(tmp_path):
    qnet = pooled_net(lambda c: qir.Cuba(vth=9))
    with pytest.raises(LoihiConvError, match="standard NetX cannot express.*spiking max-pool "
                                             "stage \\('mli'\\) on the synapse from 'a'") as err:
        save(qnet, tmp_path / "std.net", extension=False)
    assert "max_pool='avg'" in str(err.value) and "extension" in err.value.fix
    assert not list(tmp_path.iterdir())  # nothing written
    from netx_export.build import build

    with pytest.raises(LoihiConvError, match="netx cannot build it"):
        build(qnet, engine="netx")


def _bad(**changes) -> qir.QNetwork:
    qnet = pooled_net()
    syn = qnet["b"].synapses[0]
    syn.pool = dataclasses.replace(syn.pool, **changes)
    return qnet


@pytest.mark.parametrize("qnet,match", [
    (_bad(scheme="median"), "unknown scheme 'median'"),
    (_bad(padding=(2, 2)), "does not fit"),  # padding > kernel / 2
    (_bad(kernel=(9, 9)), "does not fit"),  # larger than the 8x8 source
    (_bad(stride=(0, 2)), "does not fit"),
    (_bad(kernel=[3, 3]), "tuples of ints"),
    (_bad(ceil_mode=1), "ceil_mode=1"),
    (_bad(ceil_mode=False), r"conv of 'a \(pooled\)'.*\(3, 3\)"),  # weights see the pooled shape
])
def test_bad_pools_are_clear_errors_and_nothing_is_written(qnet, match, tmp_path):
    with pytest.raises(LoihiConvError, match=match) as err:
        save(qnet, tmp_path / "bad.net")
    assert err.value.fix
    assert not list(tmp_path.iterdir())


def test_a_pool_on_a_vector_source_is_refused(tmp_path):
    qnet = qir.QNetwork([qir.Block("in", (4,)), qir.Block("o", (2,), [qir.DenseSyn(
        "in", np.ones((2, 4), np.int64), pool=qir.SpikePool("mli", (1, 1), (1, 1)))], neuron=qir.Readout())])
    with pytest.raises(LoihiConvError, match=r"not \(C,H,W\)"):
        save(qnet, tmp_path / "vec.net")


def _edit(tmp_path, fn, net=None):
    """Save, edit the file with h5py, re-seal it (so the edit itself is what the reader sees)."""
    p = save(net or pooled_net(), tmp_path / "m.net")
    with h5py.File(p, "r+") as f:
        fn(f)
        f.attrs[schema.CHECKSUM_ATTR] = schema.file_checksum(f)
    schema.seal_file(p)
    return p


def _set(path, value):
    def fn(f):
        del f[path]
        f[path] = value
    return fn


CUBA = dict(neuron=lambda c: qir.Cuba(vth=9))  # no SOFTIF: the pool is the file's only extension


@pytest.mark.parametrize("edit,match,net", [
    (lambda f: f.attrs.__delitem__(schema.FORMAT_ATTR), "without the 'loihi_conv_format'", CUBA),
    (_set("layer/2/spikePool/scheme", np.array([b"median"], "S16")), "unknown scheme 'median'", {}),
    (_set("layer/2/spikePool/ceilMode", 2), "'ceilMode' = 2", {}),
    (_set("layer/2/spikePool/padding", [2, 2]), "does not fit", {}),
    (lambda f: f["layer/2/spikePool"].__delitem__("kernel"), "missing 'kernel'", {}),
    (lambda f: f["layer/2/spikePool"].create_dataset("dilation", data=[1, 1]), "unknown key", {}),
])
def test_reader_refuses_malformed_pool_groups(edit, match, net, tmp_path):
    with pytest.raises(NetXFormatError, match=match) as err:
        load(_edit(tmp_path, edit, pooled_net(**net)))
    assert err.value.fix


# ---- Lava, bit for bit --------------------------------------------------------------------------
def lava_compare(qnet, samples, steps, probes):
    """Run ``samples`` on one compiled network; assert every output payload and every recorded
    state equals the emulator's at every step. Returns [(lava result, emulator result)]."""
    from netx_export.runner import LavaRunner

    with LavaRunner(qnet) as r:
        runs = [r.run(x, steps, probes=probes) for x in samples]
        assert r.timing["samples"] == len(samples)
    out = []
    for x, lava in zip(samples, runs):
        emu = emulate(qnet, x[None], steps, record=True)
        assert np.array_equal(lava.output, emu.output[0])
        compared = 0
        for block, st in lava.states.items():
            for name, values in st.items():
                if name in emu.states[block]:
                    assert np.array_equal(values, emu.states[block][name][0]), (block, name)
                    compared += 1
        assert compared >= 4
        out.append((lava, emu))
    return out


def mli_net() -> qir.QNetwork:
    """Graded input (2,8,8) -> b (binary SoftIF) and g (if-burst, up to 3 units) -> p (SoftIF
    4x4) fed by two overlapping ceil-mode mli stages (b: 3/2 -> 4x4; g: 3/2 padded -> 5x5,
    then a 2x2 conv) -> Readout (dense)."""
    rng = np.random.default_rng(7)
    mli_pad = qir.SpikePool("mli", (3, 3), (2, 2), (1, 1), True)
    return qir.QNetwork([
        qir.Block("in", (2, 8, 8)),
        qir.Block("b", (3, 8, 8), [qir.ConvSyn("in", rng.integers(-3, 8, (3, 2, 3, 3)), padding=(1, 1))],
                  bias=np.array([1, 0, -1]), neuron=qir.SoftIF(vth=np.array([40, 60, 50]))),
        qir.Block("g", (2, 8, 8), [qir.ConvSyn("in", rng.integers(-3, 8, (2, 2, 3, 3)), padding=(1, 1))],
                  neuron=qir.SoftIF(vth=np.array([12, 18]), mode="if-burst", max_units=3)),
        qir.Block("p", (4, 4, 4), [qir.ConvSyn("b", rng.integers(-6, 12, (4, 3, 1, 1)), pool=MLI),
                                   qir.ConvSyn("g", rng.integers(-6, 12, (4, 2, 2, 2)), pool=mli_pad)],
                  neuron=qir.SoftIF(vth=np.array([20, 30, 25, 35]))),
        qir.Block("o", (3,), [qir.DenseSyn("p", 2 * rng.integers(-20, 21, (3, 64)))], neuron=qir.Readout())])


@pytest.mark.lava
def test_mli_pools_on_binary_and_graded_sources_equal_the_emulator_on_lava():
    qnet = mli_net()
    steps = 12
    rng = np.random.default_rng(8)
    samples = [rng.integers(0, 8, (steps, 2, 8, 8)) for _ in range(2)]
    probes = {"b": None, "g": None, "o": None,
              "p": ["v", "pool0.cum", "pool0.sent", "pool1.cum", "pool1.sent"]}
    graded = 0
    for lava, emu in lava_compare(qnet, samples, steps, probes):
        st = lava.states["p"]
        for k, src, pool in ((0, "b", MLI), (1, "g", qnet["p"].synapses[1].pool)):
            payload = emu.states[src]["s"][0].astype(np.int64)  # (steps, C, H, W)
            assert payload.any()
            cum = np.cumsum(payload, axis=0)  # restarts with each sample: reset in-graph
            assert np.array_equal(st[f"pool{k}.cum"], cum)
            sent = F.max_pool2d(torch.from_numpy(cum), pool.kernel, pool.stride, pool.padding,
                                ceil_mode=pool.ceil_mode).numpy()
            assert np.array_equal(st[f"pool{k}.sent"], sent)
        assert emu.states["b"]["s"][0].max() == 1 and emu.states["g"]["s"][0].max() == 3
        graded += int((np.diff(st["pool1.sent"], axis=0) > 1).sum())  # pooled messages > 1
    assert graded > 0  # so the conv behind the graded pool must take graded messages


def gate_net() -> qir.QNetwork:
    """Graded input (2,8,8) -> [spike-max stage (the input's max-pool, 2/2) -> conv] c
    (if-buffered: signed payloads, 3x4x4) and [conv] d (if-burst, 2x8x8) -> Readout fed by a
    rate-gate stage on d (3/2, padded, ceil: 5x5) and an mli stage on c (its cumulative input
    is the net count sent, >= 0, so the pooled messages are signed but the states are not)."""
    rng = np.random.default_rng(9)
    return qir.QNetwork([
        qir.Block("in", (2, 8, 8)),
        qir.Block("c", (3, 4, 4), [qir.ConvSyn("in", rng.integers(-4, 9, (3, 2, 3, 3)), padding=(1, 1),
                                               pool=qir.SpikePool("spike-max", (2, 2), (2, 2)))],
                  bias=np.array([-10, -15, -12]),
                  neuron=qir.SoftIF(vth=np.array([30, 40, 35]), mode="if-buffered", max_units=2)),
        qir.Block("d", (2, 8, 8), [qir.ConvSyn("in", rng.integers(-3, 8, (2, 2, 3, 3)), padding=(1, 1))],
                  neuron=qir.SoftIF(vth=np.array([15, 20]), mode="if-burst", max_units=3)),
        qir.Block("o", (3,), [qir.DenseSyn("d", 2 * rng.integers(-20, 21, (3, 50)),
                                           pool=qir.SpikePool("rate-gate", (3, 3), (2, 2), (1, 1), True)),
                              qir.DenseSyn("c", 2 * rng.integers(-20, 21, (3, 12)),
                                           pool=qir.SpikePool("mli", (2, 2), (2, 2)))],
                  neuron=qir.Readout())])


@pytest.mark.lava
def test_spike_max_rate_gate_and_signed_mli_equal_the_emulator_on_lava():
    qnet = gate_net()
    steps = 14
    rng = np.random.default_rng(10)
    samples = []
    for _ in range(2):  # an image, then silence: c's bias pulls v down, so it sends -n
        x = rng.integers(0, 5, (steps, 2, 8, 8))
        x[6:] = 0
        samples.append(x)
    probes = {"c": None, "d": None, "o": ["u", "v", "pool0.rate", "pool1.cum", "pool1.sent"]}
    signed = 0
    for lava, emu in lava_compare(qnet, samples, steps, probes):
        st = lava.states["o"]
        burst = emu.states["d"]["s"][0].astype(np.int64)
        assert burst.max() == 3
        r, want = np.zeros(burst.shape[1:], np.int64), []
        for m in burst:  # r += (m << 12) - (r >> 3), from 0 at each sample's start
            r = r + (m << limits.RATE_INPUT_SHIFT) - (r >> limits.RATE_DECAY_SHIFT)
            want.append(r)
        assert np.array_equal(st["pool0.rate"], np.stack(want))
        buffered = emu.states["c"]["s"][0].astype(np.int64)
        assert (buffered > 0).any() and (buffered < 0).any()
        assert np.array_equal(st["pool1.cum"], np.cumsum(buffered, axis=0))
        pooled = np.diff(st["pool1.sent"], axis=0, prepend=0)  # what the dense synapse received
        signed += int((pooled < 0).sum())
    assert signed > 0


def test_message_bits_behind_a_pool_are_the_sources():
    """A binary source's pooled spikes stay binary (bool cast is exact), a graded source's pool
    feeds a graded synapse; built only, nothing runs."""
    from netx_export.build import build

    net = build(mli_net())
    bits = [int(np.asarray(s.num_message_bits.init).reshape(-1)[0]) for s in net["p"].synapses]
    assert bits[0] == 0 and bits[1] > 0
    assert [p is not None for p in net["p"].pools] == [True, True] and net["b"].pools == [None]
    assert net["p"].pools[1].shape_out == (5, 5, 2)  # Lava (W', H', C)


# ---- the zoo model ------------------------------------------------------------------------------
@pytest.mark.lava
def test_mnist_cnn_maxpool_with_mli_verifies_bit_exact_on_lava(tmp_path):
    from loihi_conv import api
    from loihi_conv.app import models
    from loihi_conv.app.verify import verify

    ref = models.resolve("mnist_cnn_maxpool", progress=False)
    recipe = api.Recipe(max_pool="mli")
    calib = api.calibration_data(ref.dataset, recipe)
    snn = api.convert(ref.module, calib, recipe, input_shape=ref.input_shape)
    qnet = load(save(api.quantize(snn, "if-soft", timesteps=16, calib=calib), tmp_path / "m.net"))
    assert [s.pool.scheme for b in qnet.blocks for s in b.synapses if s.pool] == ["mli", "mli"]
    x, _ = api.test_data("mnist", 2)
    ver = verify(qnet, x, 16)
    assert ver.total_compared > 100_000 and ver.total_mismatches == 0
    assert ver.lava_predictions == ver.emulator_predictions
