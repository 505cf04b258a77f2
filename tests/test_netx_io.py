"""NetX writer/reader: round trips, netx compatibility, refusals, and malformed-file handling.

No Lava simulation here (see test_lava.py); netx is only used to *build* our standard files.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from loihi_conv.base.errors import LoihiConvError, NetXFormatError
from loihi_conv.base.layout import chw_to_whc
from loihi_conv.fixed import qir
from netx_export import schema
from netx_export.compare import diff_networks
from netx_export.reader import load, read_info
from netx_export.validate import HardwareLimitWarning, extension_reasons
from netx_export.weights import lava_dense_encoding, netx_effective_dense
from netx_export.writer import save

LAVA_DL_TESTS = Path(__file__).resolve().parents[1] / ".venv/lib/python3.10/site-packages/tests" \
    / "lava/lib/dl/netx"


# ---- small networks (weights are 8-bit ints as the quantizer produces them) ----------------
def even(rng, shape, lo=-128, hi=127):
    """Mixed-sign even ints in [-256, 254] with both signs present (netx-safe dense weights)."""
    w = 2 * rng.integers(lo, hi + 1, shape)
    w.flat[0], w.flat[-1] = 2 * hi, 2 * lo
    return w


def cuba_net(seed=0) -> qir.QNetwork:
    """input(Cuba, leaky) -> conv (per-channel bias) -> flatten -> dense Readout."""
    rng = np.random.default_rng(seed)
    inp = qir.Block("in", (2, 6, 6), neuron=qir.Cuba(vth=10, i_decay=4096, v_decay=512))
    c1 = qir.Block("c1", (4, 3, 3), [qir.ConvSyn("in", even(rng, (4, 2, 3, 3), -8, 8),
                                                  stride=(2, 2), padding=(1, 1))],
                   bias=np.array([3, -2, 0, 7]), neuron=qir.Cuba(vth=20))
    out = qir.Block("out", (3,), [qir.DenseSyn("c1", even(rng, (3, 36), -20, 20))],
                    bias=np.array([1, 0, -1]), neuron=qir.Readout())
    return qir.QNetwork([inp, c1, out], input_scale=12.5, output_scale=0.25,
                        meta={"recipe": {"neuron": "if-zero", "T": 16}, "scales": [1.5, 2.0]})


def mlp_net(seed=1) -> qir.QNetwork:
    """input without neuron (graded ints) -> dense Cuba (delays) -> dense Readout."""
    rng = np.random.default_rng(seed)
    inp = qir.Block("x", (5,))
    h = qir.Block("h", (4,), [qir.DenseSyn("x", even(rng, (4, 5)), delay=np.array([0, 1, 2, 5]))],
                  bias=np.array([10, -10, 0, 4]), neuron=qir.Cuba(vth=100, i_decay=1024,
                                                                   v_decay=128))
    out = qir.Block("y", (2,), [qir.DenseSyn("h", rng.integers(0, 256, (2, 4)))],
                    neuron=qir.Readout())
    return qir.QNetwork([inp, h, out])


def sdnn_net(seed=2) -> qir.QNetwork:
    """Delta input -> conv SigmaDelta -> flatten -> dense Sigma (a lava-dl PilotNet in small)."""
    rng = np.random.default_rng(seed)
    inp = qir.Block("in", (2, 5, 5), neuron=qir.Delta(vth=3))
    c1 = qir.Block("c1", (3, 3, 3), [qir.ConvSyn("in", even(rng, (3, 2, 3, 3)))],
                   bias=np.array([5, 0, -5]), neuron=qir.SigmaDelta(vth=7))
    out = qir.Block("out", (2,), [qir.DenseSyn("c1", even(rng, (2, 27)))], neuron=qir.Sigma())
    return qir.QNetwork([inp, c1, out])


def ext_net(seed=3) -> qir.QNetwork:
    """SoftIF blocks, a residual fan-in (conv + 1x1 conv from the input) and a dense fan-in."""
    rng = np.random.default_rng(seed)
    inp = qir.Block("in", (2, 5, 5))
    c1 = qir.Block("c1", (3, 5, 5), [qir.ConvSyn("in", rng.integers(-6, 7, (3, 2, 3, 3)),
                                                  padding=(1, 1))],
                   bias=np.array([3, -2, 1]),
                   neuron=qir.SoftIF(vth=np.array([40, 60, 50]), v_init=np.array([20, 0, -5]),
                                     params={"reset": "subtract"}))
    c2 = qir.Block("c2", (3, 5, 5), [qir.ConvSyn("c1", rng.integers(-30, 31, (3, 3, 3, 3)),
                                                  padding=(1, 1)),
                                     qir.ConvSyn("in", rng.integers(-5, 6, (3, 2, 1, 1)))],
                   neuron=qir.SoftIF(vth=np.array([70, 50, 90])))
    out = qir.Block("out", (4,), [qir.DenseSyn("c2", even(rng, (4, 75), -10, 10)),
                                  qir.DenseSyn("c1", even(rng, (4, 75), -5, 5),
                                               delay=np.array([0, 1, 2, 3]))],
                    neuron=qir.Readout())
    return qir.QNetwork([inp, c1, c2, out], input_scale=4.0, meta={"recipe": "ext"})


def per_neuron_bias_net() -> qir.QNetwork:
    q = cuba_net()
    q.blocks[1].bias = np.arange(4 * 3 * 3).reshape(4, 3, 3) - 10
    return q


STANDARD = {"cuba": cuba_net, "mlp": mlp_net, "sdnn": sdnn_net, "bias3d": per_neuron_bias_net}


# ---- round trips ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STANDARD))
def test_standard_round_trip_is_exact(tmp_path, name):
    q = STANDARD[name]()
    assert extension_reasons(q) == []
    p = save(q, tmp_path / f"{name}.net")
    back = load(p)
    assert diff_networks(q, back) == []
    assert read_info(p)["format"] == 0
    with h5py.File(p) as f:
        assert schema.FORMAT_ATTR not in f.attrs
        assert all("synapses" not in g and "source" not in g for g in f["layer"].values())


def test_extension_round_trip_is_exact(tmp_path):
    q = ext_net()
    reasons = extension_reasons(q)
    assert any("SoftIF" in r for r in reasons) and any("fan-in" in r for r in reasons)
    p = save(q, tmp_path / "ext.net")
    back = load(p)
    assert diff_networks(q, back) == []
    assert back["c2"].synapses[1].source == "in" and back["out"].synapses[1].delay.tolist() == \
        [0, 1, 2, 3]
    assert back["c1"].neuron.params == {"reset": "subtract"}
    info = read_info(p)
    assert info["format"] == 1 and info["recipe"] == "ext" and info["input_scale"] == 4.0
    assert set(info["tool_versions"]) >= {"lava-nc", "lava-dl", "torch"}


def test_round_trip_of_every_neuron_variant(tmp_path):
    """Non-default Readout, exponents, a Delta outside the input, input bias: all survive."""
    rng = np.random.default_rng(4)
    inp = qir.Block("in", (4,), bias=np.array([1, 2, 3, 4]), neuron=qir.Cuba(vth=5, bias_exp=3))
    a = qir.Block("a", (3,), [qir.DenseSyn("in", even(rng, (3, 4)))],
                  neuron=qir.Readout(vth=1000, i_decay=10, v_decay=20))
    b = qir.Block("b", (3,), [qir.DenseSyn("a", even(rng, (3, 3)))],
                  neuron=qir.SigmaDelta(vth=2, spike_exp=3, state_exp=5))
    c = qir.Block("c", (3,), [qir.DenseSyn("b", even(rng, (3, 3)))], neuron=qir.Delta(vth=1))
    d = qir.Block("d", (2,), [qir.DenseSyn("c", even(rng, (2, 3)))], neuron=qir.Sigma())
    q = qir.QNetwork([inp, a, b, c, d])
    back = load(save(q, tmp_path / "v.net"))
    assert diff_networks(q, back) == []
    assert type(back["a"].neuron) is qir.Readout and type(back["c"].neuron) is qir.Delta


def test_extension_true_on_a_standard_network_still_round_trips(tmp_path):
    q = cuba_net()
    p = save(q, tmp_path / "forced.net", extension=True)
    assert read_info(p)["format"] == 1 and diff_networks(q, load(p)) == []


def test_integer_encoding_matches_netx_key_classes(tmp_path):
    p = save(cuba_net(), tmp_path / "enc.net")
    with h5py.File(p) as f:
        assert f["layer/1/weight"].dtype == np.float32  # copy_key, exact: slayer's convention
        assert f["layer/1/neuron/vThMant"].dtype == np.int64  # array_key: handed to Lava raw
        assert f["layer/1/stride"][()].tolist() == [2, 2]
        assert "messageBits" not in f["layer/1/neuron"]  # netx reads it as a sub-group
        assert schema.decode_str(f["layer/2/type"][()]) == "flatten"
    # values float32 cannot hold exactly are stored as integers (netx reads both with astype)
    big = schema.copy_key_array(np.array([2**24 + 1, -3]))
    assert big.dtype == np.int32 and big.tolist() == [2**24 + 1, -3]
    assert schema.copy_key_array(np.array([2**40])).dtype == np.int64


# ---- netx compatibility -----------------------------------------------------------------------
def _lava_effective(synapse) -> np.ndarray:
    """Weights a netx-built Dense really applies, in the file's units (pre-shift form)."""
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    w = np.asarray(synapse.weights.init)
    sign = synapse.proc_params.get("sign_mode") or determine_sign_mode(w)
    w = truncate_weights(clip_weights(w, sign, 8), sign, synapse.proc_params["num_weight_bits"])
    exp = synapse.proc_params["weight_exp"]
    assert exp <= 0 and not np.any(w.astype(np.int64) % (1 << -exp))
    return w.astype(np.int64) >> -exp


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_standard_files_build_in_unmodified_netx(tmp_path, name, capsys):
    from lava.lib.dl import netx

    q = STANDARD[name]()
    net = netx.hdf5.Network(net_config=str(save(q, tmp_path / f"{name}.net")))
    print(net)
    table = capsys.readouterr().out
    blocks = q.blocks if q.input.neuron is not None else q.blocks[1:]
    assert len(net.layers) == len(blocks)
    assert table.count("|Conv") + table.count("|Dense") + table.count("|Input") == len(blocks)
    for block, layer in zip(blocks, net.layers):
        assert tuple(layer.shape) == tuple(block.shape[::-1])  # netx works in (W,H,C)
        syn = getattr(layer, "synapse", None)
        if syn is not None and hasattr(syn, "weights"):  # dense: netx rescaled the weights
            assert np.array_equal(_lava_effective(syn), block.synapses[0].weight)
        if block.bias is not None:
            bias = layer.neuron.bias_mant.init if hasattr(layer.neuron, "bias_mant") \
                else layer.neuron.bias.init >> 12  # SigmaDelta stores bias << (6+6)
            want = np.broadcast_to(chw_to_whc(block.bias), tuple(block.shape[::-1]))
            assert np.array_equal(np.asarray(bias), want)


def test_netx_weight_replica_matches_lava(capsys):
    """netx_effective_dense replays netx + Lava; check it against the real functions."""
    from lava.lib.dl.netx.utils import optimize_weight_bits
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    rng = np.random.default_rng(5)
    cases = [np.array([[-1, -1, 0]]), np.array([[255, -3]]), np.array([[300, 2]]),
             np.array([[-3, 200]]), np.array([[-256, 254]]), np.array([[-4, -2]]),
             np.array([[-3, -5]]), np.array([[0, 255]]), np.array([[0, 256]])]
    for _ in range(400):
        lo, hi = sorted(rng.integers(-300, 300, 2))
        cases.append(rng.integers(lo, hi + 1, (3, 4)) * int(2 ** rng.integers(0, 3)))
    agree = 0
    for w in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            wq, nwb, exp, _ = optimize_weight_bits(w.copy())
        sign = determine_sign_mode(wq)
        applied = truncate_weights(clip_weights(wq, sign, 8), sign, nwb).astype(np.int64)
        # netx is exact iff every applied weight is W << -exp (the sum is shifted back once)
        real_exact = exp <= 0 and np.array_equal(applied, w.astype(np.int64) << -exp)
        eff, _ = netx_effective_dense(w)
        mine_exact = eff is not None and np.array_equal(eff, w)
        assert mine_exact == real_exact, w.tolist()
        agree += 1
        enc = lava_dense_encoding(w)
        if enc is not None:  # our builder's encoding is exact in real Lava too
            from lava.utils.weightutils import SignMode

            s = SignMode[enc.sign_mode]
            a = truncate_weights(clip_weights(enc.weights, s, 8), s, enc.num_weight_bits)
            got = a.astype(np.int64) << enc.weight_exp if enc.weight_exp >= 0 \
                else a.astype(np.int64) >> -enc.weight_exp
            assert np.array_equal(got, w) and not np.any(a % (1 << max(-enc.weight_exp, 0)))
    capsys.readouterr()
    assert agree == len(cases)


# ---- refusals ---------------------------------------------------------------------------------
def _with_dense(w) -> qir.QNetwork:
    q = mlp_net()
    q.blocks[2].synapses[0].weight = np.asarray(w)
    return q


MANGLES = {
    "all zero": (_with_dense(np.zeros((2, 4), int)), "OverflowError"),
    "mixed 255": (_with_dense(np.array([[255, -2, 0, 0], [2, 4, 6, 8]])), "[-256, 254]"),
    "excitatory 256": (_with_dense(np.array([[256, 2, 0, 0], [2, 4, 6, 8]])), "zeroes"),
    "power-of-two min": (_with_dense(np.array([[-1, -1, 0, 0], [0, -1, 0, 0]])), "sign mode"),
    "mixed below -256": (_with_dense(np.array([[-258, 2, 0, 0], [2, 4, 6, 8]])), "[-256, 254]"),
}


@pytest.mark.parametrize("case", sorted(MANGLES))
def test_writer_refuses_what_netx_would_mangle(tmp_path, case):
    q, words = MANGLES[case]
    with pytest.raises(LoihiConvError) as e:
        save(q, tmp_path / "bad.net")
    msg = str(e.value)
    assert "'y'" in msg and words in msg and "fix:" in msg
    assert list(tmp_path.iterdir()) == []  # no file, no temp file


def _set(q, fn):
    fn(q)
    return q


VALUE_ERRORS = {
    "vth over 17 bits": (lambda q: setattr(q.blocks[1].neuron, "vth", 131072), "vThMant = 131072"),
    "bias beyond int16": (lambda q: setattr(q.blocks[1], "bias", np.array([40000, 0, 0, 0])),
                          "40000"),
    "decay over 4096": (lambda q: setattr(q.blocks[1].neuron, "i_decay", 5000), "i_decay"),
    "delay over 62": (lambda q: setattr(q.blocks[1].synapses[0], "delay", np.array([0, 1, 2, 63])),
                      "delay = 63"),
    "float weights": (lambda q: setattr(q.blocks[1].synapses[0], "weight",
                                        q.blocks[1].synapses[0].weight + 0.5), "integers"),
    "dangling source": (lambda q: setattr(q.blocks[2].synapses[0], "source", "nope"), "'nope'"),
    "weight shape": (lambda q: setattr(q.blocks[2].synapses[0], "weight", np.ones((2, 3), int)),
                     "(2, 3)"),
}


@pytest.mark.parametrize("case", sorted(VALUE_ERRORS))
def test_writer_refuses_out_of_range_values(tmp_path, case):
    fn, words = VALUE_ERRORS[case]
    q = _set(mlp_net(), fn)
    with pytest.raises(LoihiConvError) as e:
        save(q, tmp_path / "bad.net")
    assert words in str(e.value) and "fix:" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_the_existing_file_untouched(tmp_path):
    p = save(mlp_net(), tmp_path / "net.net")
    before = p.read_bytes()
    with pytest.raises(LoihiConvError):
        save(MANGLES["all zero"][0], p)
    assert p.read_bytes() == before and sorted(tmp_path.iterdir()) == [p]


def test_unwritable_targets_are_user_errors(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(LoihiConvError, match="cannot write"):
        save(mlp_net(), tmp_path / "adir")  # a directory, not a file
    with pytest.raises(LoihiConvError, match="does not exist"):
        save(mlp_net(), tmp_path / "missing" / "n.net")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]


def test_extension_false_refuses_extension_networks(tmp_path):
    with pytest.raises(LoihiConvError, match="SoftIF"):
        save(ext_net(), tmp_path / "e.net", extension=False)
    assert list(tmp_path.iterdir()) == []


def test_conv_weights_beyond_24_bits_refused_beyond_8_bits_warned(tmp_path):
    q = cuba_net()
    q.blocks[1].synapses[0].weight[0, 0, 0, 0] = 300
    with pytest.warns(HardwareLimitWarning, match="8-bit"):
        save(q, tmp_path / "w.net")
    q.blocks[1].synapses[0].weight[0, 0, 0, 0] = 2**23
    with pytest.raises(LoihiConvError, match="24-bit"):
        save(q, tmp_path / "x.net")


def test_hardware_limits_warn_but_write(tmp_path):
    q = cuba_net()
    q.blocks[1].bias = np.array([5000, 0, 0, 0])
    with pytest.warns(HardwareLimitWarning, match="13-bit"):
        p = save(q, tmp_path / "b.net")
    assert load(p)["c1"].bias[0] == 5000


def test_dense_beyond_8_bit_mantissa_refused_even_for_extension(tmp_path):
    q = _with_dense(np.array([[301, -3, 0, 0], [2, 4, 6, 8]]) * 4)  # mantissa 301: 10 bits
    with pytest.raises(LoihiConvError, match="8-bit mantissa"):
        save(q, tmp_path / "m.net", extension=True)


# ---- reading lava-dl's files --------------------------------------------------------------------
def test_reads_lava_dl_tiny_net():
    q = load(LAVA_DL_TESTS / "tiny.net")
    assert [b.shape for b in q.blocks] == [(3, 16, 16), (24, 6, 6), (36, 1, 1)]
    assert all(type(b.neuron) is qir.Cuba for b in q.blocks)
    assert (q.input.neuron.vth, q.input.neuron.i_decay, q.input.neuron.v_decay) == (25, 4096, 1024)
    syn = q.blocks[1].synapses[0]
    assert syn.stride == (2, 2) and syn.weight.shape == (24, 3, 5, 5) and syn.source == "input"
    with h5py.File(LAVA_DL_TESTS / "tiny.net") as f:
        assert np.array_equal(syn.weight, f["layer/1/weight"][()][..., 0].astype(int))
        assert np.array_equal(q.blocks[2].bias, f["layer/2/bias"][()].astype(int))
    assert q.meta["netx_input_transform"] == {"weight": 36, "bias": 34}  # lava-dl's own test


def test_reads_lava_dl_mnist_net():
    q = load(LAVA_DL_TESTS / "mnist.net")
    assert [b.shape for b in q.blocks] == [(784,), (512,), (512,), (10,)]
    assert [type(b.neuron) for b in q.blocks] == [qir.Cuba] * 3 + [qir.Readout]
    assert q.blocks[1].neuron.v_decay == 123 and q.blocks[3].synapses[0].weight.shape == (10, 512)


def test_reads_lava_dl_pilotnet_sdnn():
    q = load(LAVA_DL_TESTS / "gts/pilotnet_sdnn/network.net")
    kinds = [type(b.neuron) for b in q.blocks]
    assert kinds == [qir.Delta] + [qir.SigmaDelta] * 7 + [qir.Sigma]
    assert q.input.shape == (3, 33, 100) and q.output.shape == (1,)
    conv3 = q.blocks[3].synapses[0]
    assert (conv3.stride, conv3.padding, q.blocks[3].shape) == ((2, 1), (1, 0), (64, 4, 22))
    dense = q.blocks[5].synapses[0]  # flatten folded: 64*2*20 inputs in PyTorch C order
    assert dense.weight.shape == (100, 64 * 2 * 20) and dense.source == q.blocks[4].name


# ---- malformed files --------------------------------------------------------------------------
def _edit(tmp_path, fn, name="m.net", net=None, content=True):
    p = save(net or cuba_net(), tmp_path / name)
    with h5py.File(p, "r+") as f:
        fn(f)
        if content and "layer" in f:  # re-seal the checksums so the edit itself is tested
            f.attrs[schema.CHECKSUM_ATTR] = schema.file_checksum(f)
    schema.seal_file(p)
    return p


def _move(f, src, dst):
    f.move(src, dst)


def _replace(f, path, data):
    del f[path]
    f[path] = data


MALFORMED = {
    "missing type": (lambda f: f["layer/1"].__delitem__("type"), "missing 'type'"),
    "conv shape": (lambda f: _replace(f, "layer/1/shape", [4, 4, 4]), "(H,W)"),
    "gap in indices": (lambda f: _move(f, "layer/3", "layer/5"), "contiguous"),
    "non-decimal layer": (lambda f: _move(f, "layer/3", "layer/x"), "decimal"),
    "unknown layer type": (lambda f: _replace(f, "layer/1/type", [b"pool"]), "'pool'"),
    "unknown neuron": (lambda f: _replace(f, "layer/1/neuron/type", [b"ALIF"]), "'ALIF'"),
    "string weight": (lambda f: _replace(f, "layer/1/weight", b"abc"), "dtype"),
    "fractional weight": (lambda f: f["layer/3/weight"].__setitem__((0, 0), 0.5), "non-integer"),
    "absurd size": (lambda f: (f["layer/3"].__delitem__("weight"),
                               f["layer/3"].create_dataset("weight", shape=(10**8 + 1,),
                                                           dtype="f4")), "elements"),
    "missing vThMant": (lambda f: f["layer/1/neuron"].__delitem__("vThMant"), "'vThMant'"),
    "no layer group": (lambda f: _move(f, "layer", "layers"), "'/layer'"),
    "flatten at end": (lambda f: f["layer"].__delitem__("3"), "'flatten'"),
    "future format": (lambda f: f.attrs.__setitem__(schema.FORMAT_ATTR, 99), "format 99"),
    "extension neuron in standard file": (
        lambda f: _replace(f, "layer/1/neuron/type", [b"SOFTIF"]), "needs the"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_reader_rejects_malformed_files(tmp_path, case):
    fn, words = MALFORMED[case]
    # the size check runs before the content checksum, which would read all 10^8 values
    p = _edit(tmp_path, fn, content=case != "absurd size")
    with pytest.raises(NetXFormatError) as e:
        load(p)
    assert words in str(e.value)


def test_reader_rejects_bad_extension_links(tmp_path):
    p = _edit(tmp_path, lambda f: _replace(f, "layer/4/source", 5), net=ext_net())
    with pytest.raises(NetXFormatError, match="'source' = 5"):
        load(p)
    p = _edit(tmp_path, lambda f: _move(f, "layer/4/synapses/1", "layer/4/synapses/2"),
              name="s.net", net=ext_net())
    with pytest.raises(NetXFormatError, match="named 1..n"):
        load(p)


def test_checksum_mismatch_is_detected(tmp_path):
    p = save(cuba_net(), tmp_path / "c.net")
    with h5py.File(p, "r+") as f:
        f["layer/1/weight"][0, 0, 0, 0] += 2  # a silent, well-formed edit
    with pytest.raises(NetXFormatError, match="digest"):  # the byte-level seal catches it
        load(p)
    schema.seal_file(p)  # an editor that re-seals the bytes still trips the content checksum
    with pytest.raises(NetXFormatError, match="checksum"):
        load(p)
    with h5py.File(p, "r+") as f:
        f.attrs["input_scale"] = 99.0
        f["layer/1/weight"][0, 0, 0, 0] -= 2
    schema.seal_file(p)
    with pytest.raises(NetXFormatError, match="checksum"):  # root attributes are covered too
        load(p)


def test_garbage_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.net"
    junk.write_bytes(b"this is not an HDF5 file\n" * 100)
    with pytest.raises(NetXFormatError, match="HDF5"):
        load(junk)
    good = save(cuba_net(), tmp_path / "good.net").read_bytes()
    for frac in (0.1, 0.5, 0.9):
        cut = tmp_path / f"cut{frac}.net"
        cut.write_bytes(good[: int(len(good) * frac)])
        with pytest.raises(NetXFormatError):
            load(cut)
    with pytest.raises(NetXFormatError, match="no such file"):
        load(tmp_path / "missing.net")


def test_random_byte_corruption_never_escapes_as_a_raw_error(tmp_path):
    good = save(cuba_net(), tmp_path / "good.net").read_bytes()
    rng = np.random.default_rng(6)
    outcomes = set()
    for k in range(40):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), 4):
            data[pos] ^= int(rng.integers(1, 256))
        p = tmp_path / f"c{k}.net"
        p.write_bytes(bytes(data))
        try:
            q = load(p)
            outcomes.add("ok")  # corruption in unused bytes: must still equal the original
            assert diff_networks(q, cuba_net()) == []
        except NetXFormatError:
            outcomes.add("rejected")
    assert "rejected" in outcomes
