"""`loihi-conv inspect` / loihi_conv.app.resources on lava-dl's own NetX files and on ours.

Expected values are read from the files with h5py directly (not through netx_export.load) and
counted by brute force, so the inspector's reading and counting are checked independently.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from loihi_conv.app.cli import main
from loihi_conv.app.resources import LIMITS, conv_taps, inspect_file, inspect_network, mantissa_bits
from loihi_conv.fixed import qir

NETX = Path(__file__).resolve().parents[1] / ".venv/lib/python3.10/site-packages/tests/lava/lib/dl/netx"
TINY, MNIST, PILOTNET = NETX / "tiny.net", NETX / "mnist.net", NETX / "gts/pilotnet_sdnn/network.net"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _layers(path: Path) -> list[dict]:
    """Every layer group of a NetX file as plain numpy values, read with h5py ('flatten' layers,
    which netx folds into the next dense layer, left out)."""
    out = []
    with h5py.File(path, "r") as f:
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            d = {k: g[k][()] for k in g.keys() if isinstance(g[k], h5py.Dataset)}
            d["type"] = g["type"][()][0].decode()
            if d["type"] == "flatten":
                continue
            if "neuron" in g:
                d["neuron"] = {k: g["neuron"][k][()] for k in g["neuron"].keys()}
            out.append(d)
    return out


def _brute_conv_synapses(in_hw, out_hw, k, stride, pad, dil) -> tuple[int, int]:
    """(sum over output positions of kernel taps on real input, max taps) by looping."""
    total, peak = 0, 0
    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            n = sum(1 for ky in range(k[0]) for kx in range(k[1])
                    if 0 <= oy * stride[0] - pad[0] + ky * dil[0] < in_hw[0]
                    and 0 <= ox * stride[1] - pad[1] + kx * dil[1] < in_hw[1])
            total, peak = total + n, max(peak, n)
    return total, peak


def _bits(w: np.ndarray) -> int:
    """Signed-mantissa bits by another route: strip the common power of two via gcd."""
    nz = np.abs(w[w != 0]).astype(np.int64)
    g = int(np.gcd.reduce(nz))
    shift = (g & -g).bit_length() - 1  # largest power of two dividing every weight
    return int(np.ceil(np.log2(nz.max() // (1 << shift) + 1))) + int(w.min() < 0)


@pytest.mark.parametrize("path", [TINY, PILOTNET], ids=["tiny", "pilotnet"])
def test_conv_layers_match_file(path):
    ins = inspect_file(path)
    layers = _layers(path)
    assert [lr.kind for lr in ins.layers] == [d["type"] for d in layers]
    for lr, d in zip(ins.layers[1:], layers[1:]):
        if d["type"] != "conv":
            continue
        w = d["weight"].reshape(d["weight"].shape[:4])
        prev = tuple(int(v) for v in layers[lr.index - 1]["shape"])
        shape = tuple(int(v) for v in d["shape"])
        assert lr.shape == shape and lr.neurons == int(np.prod(shape))
        assert lr.weight_range == (int(w.min()), int(w.max()))
        assert lr.weight_bits == _bits(w)
        assert lr.bias_range == (int(d["bias"].min()), int(d["bias"].max()))
        taps, peak = _brute_conv_synapses(prev[1:], shape[1:], w.shape[2:], d["stride"], d["padding"], d["dilation"])
        assert lr.synapse_count == taps * w.shape[1] * w.shape[0]
        assert lr.fan_in == peak * w.shape[1]
        assert lr.memory_bytes == lr.synapse_count  # one byte (8-bit weight) per synapse, no delays
        assert lr.params["vth"] == int(d["neuron"]["vThMant"])


def test_tiny_lif_parameters_and_input_transform():
    ins = inspect_file(TINY)
    n0 = _layers(TINY)[0]["neuron"]
    assert ins.layers[0].neuron == "Cuba"  # LOIHI neurons read as Lava LIF
    assert ins.layers[0].params == {"vth": int(n0["vThMant"]), "du": int(n0["iDecay"]), "dv": int(n0["vDecay"]),
                                    "bias_exp": 6}
    assert ins.layers[0].cores == (1, 1)  # the input population has neurons on chip
    assert not ins.warnings and not ins.extension
    assert any("Input.transform" in n and "36" in n for n in ins.notes)  # the unused input weight


def test_mnist_dense_counts_and_readout():
    ins = inspect_file(MNIST)
    layers = _layers(MNIST)
    assert [lr.kind for lr in ins.layers] == ["input", "dense", "dense", "dense"]
    for lr, d in zip(ins.layers[1:], layers[1:]):
        w = d["weight"]
        assert lr.synapse_count == w.size and lr.fan_in == w.shape[1]
        assert lr.weight_range == (int(w.min()), int(w.max())) and lr.weight_bits == _bits(w)
        assert lr.bias_range is None
    assert ins.layers[-1].neuron == "Readout" and ins.layers[-1].params["vth"] == 131072
    assert ins.synapses == sum(d["weight"].size for d in layers[1:])
    assert ins.neurons == 784 + 512 + 512 + 10
    # 784x512 8-bit synapses exceed one core at the tutorial-derived packing (42,885 per core)
    assert ins.layers[1].cores == (1, int(np.ceil(784 * 512 / LIMITS["synapses_per_core"].value)))
    assert not ins.warnings  # netx's default readout threshold is a note, not a warning
    assert any("131072" in n for n in ins.notes)


def test_pilotnet_sdnn_neurons_and_totals():
    ins = inspect_file(PILOTNET)
    assert ins.layers[0].neuron == "Delta" and ins.layers[-1].neuron == "Sigma"
    assert {lr.neuron for lr in ins.layers[1:-1]} == {"SigmaDelta"}
    layers = _layers(PILOTNET)
    for lr, d in zip(ins.layers[1:-1], layers[1:-1]):
        assert lr.params == {"vth": int(d["neuron"]["vThMant"]), "spike_exp": 6, "state_exp": 6}
    assert ins.neurons == sum(int(np.prod(d["shape"])) for d in layers)
    assert ins.synapses == sum(lr.synapse_count for lr in ins.layers)
    assert ins.cores == (sum(lr.cores[0] for lr in ins.layers), sum(lr.cores[1] for lr in ins.layers))
    assert any("graded spikes" in n for n in ins.notes)


def _problem_net() -> qir.QNetwork:
    """Host input -> SoftIF conv with a 9-bit weight and a 14-bit bias -> dense Readout."""
    rng = np.random.default_rng(0)
    w = 2 * rng.integers(-60, 61, (4, 1, 3, 3))
    w[0, 0, 0, 0] = 255  # odd and > 127: a 9-bit signed mantissa
    conv = qir.Block("conv", (4, 4, 4), [qir.ConvSyn("in", w, padding=(0, 0))], bias=np.array([5000, -3, 0, 7]),
                     neuron=qir.SoftIF(vth=np.array([300, 400, 500, 600])))
    out = qir.Block("out", (3,), [qir.DenseSyn("conv", 2 * rng.integers(-50, 51, (3, 64)))], neuron=qir.Readout())
    return qir.QNetwork([qir.Block("in", (1, 6, 6)), conv, out], input_scale=10.0, meta={"target": "if-soft"})


def test_our_file_hardware_warnings(tmp_path):
    import netx_export

    with pytest.warns(netx_export.HardwareLimitWarning):
        path = netx_export.save(_problem_net(), tmp_path / "p.net")
    ins = inspect_file(path)
    text = "\n".join(ins.warnings)
    assert "conv: SoftIF" in text and "microcode" in text
    assert "need 9 bits (-" in text and "255" in text
    assert "bias -3..5000 needs 14 bits" in text
    assert ins.info["format"] == 1 and ins.extension  # SoftIF needs the extension
    conv = ins.layers[1]
    assert conv.synapse_count == 4 * 16 * 9 and conv.fan_in == 9  # no padding: every tap is real
    assert conv.params["vth"] == [300, 600]
    data = json.loads(json.dumps(ins.to_dict()))
    assert data["totals"]["synapses"] == 4 * 16 * 9 + 3 * 64 and data["warnings"] == ins.warnings


def test_threshold_and_delay_limits_in_memory():
    net = _problem_net()
    net.blocks[1].neuron = qir.Cuba(vth=200_000)
    net.blocks[2].synapses[0].delay = np.full(3, 63)
    ins = inspect_network(net)
    text = "\n".join(ins.warnings)
    assert "vThMant 200000 exceeds 17 bits" in text
    assert "reach 63 steps" in text
    assert ins.layers[2].memory_bytes == int(np.ceil(3 * 64 * (8 + 6) / 8))  # delays cost 6 bits each
    clean = _problem_net()
    clean.blocks[1].neuron = qir.Cuba(vth=300)
    clean.blocks[1].synapses[0].weight[0, 0, 0, 0] = 254
    clean.blocks[1].bias = np.array([4095, -4096, 0, 1])
    assert inspect_network(clean).warnings == []


def test_counting_helpers_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(50):
        size, k, s, p, d = (int(rng.integers(lo, hi)) for lo, hi in ((3, 12), (1, 5), (1, 4), (0, 3), (1, 3)))
        out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        if out < 1:
            continue
        brute = [sum(0 <= o * s - p + j * d < size for j in range(k)) for o in range(out)]
        assert conv_taps(size, k, s, p, d).tolist() == brute
    for _ in range(50):
        w = rng.integers(-300, 300, 20) * (1 << int(rng.integers(0, 4)))
        assert mantissa_bits(w) == _bits(w)


# ---- CLI --------------------------------------------------------------------------------------
def _cli(*args: str):
    return CliRunner(mix_stderr=False).invoke(main, list(args))


def test_cli_inspect_json_and_errors(tmp_path):
    res = _cli("inspect", str(TINY), "--json", str(tmp_path / "t.json"))
    assert res.exit_code == 0, res.output
    assert "conv1" in res.output and "Loihi 2 limits used" in res.output
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["totals"]["synapses"] == sum(lr["synapse_count"] for lr in data["layers"])
    assert data["limits"]["vth_max"]["value"] == 131071
    assert _cli("inspect", str(tmp_path / "missing.net")).exit_code == 2
    (tmp_path / "junk.net").write_bytes(b"not an hdf5 file" * 64)
    bad = _cli("inspect", str(tmp_path / "junk.net"))
    assert bad.exit_code == 3 and "error:" in bad.stderr
    no_recipe = _cli("inspect", str(TINY), "--recipe-out", str(tmp_path / "r.toml"))
    assert no_recipe.exit_code == 2 and "stores no conversion recipe" in no_recipe.stderr
    assert not (tmp_path / "r.toml").exists()


def test_recipe_reproduces_file_byte_for_byte(tmp_path):
    """The recipe stored in a file, fed back to convert, rebuilds the same bytes."""
    common = ["--model", "digits_cnn", "--target", "cuba", "--timesteps", "16"]
    a, b, c = (str(tmp_path / n) for n in ("a.net", "b.net", "c.net"))
    res = _cli("-q", "convert", *common, "--percentile", "99.9", "--v-init", "0.5", "--neuron", "if-zero",
               "--calib-size", "300", "--no-search", "--out", a)
    assert res.exit_code == 0, res.stderr
    res = _cli("inspect", a, "--recipe-out", str(tmp_path / "r.toml"))
    assert res.exit_code == 0, res.stderr
    assert f"--recipe {tmp_path / 'r.toml'}" in res.output and "--target cuba --timesteps 16" in res.output
    assert _cli("-q", "convert", *common, "--recipe", str(tmp_path / "r.toml"), "--out", b).exit_code == 0
    assert Path(a).read_bytes() == Path(b).read_bytes()
    # the recipe is what made them equal: the default recipe gives a different file
    assert _cli("-q", "convert", *common, "--no-search", "--out", c).exit_code == 0
    assert Path(a).read_bytes() != Path(c).read_bytes()


def test_pooled_synapse_counts_the_pooled_inputs():
    """A synapse behind a spiking max-pool stage connects the pooled (C, H', W') messages."""
    w = np.arange(1, 2 * 8 + 1, dtype=np.int64).reshape(2, 8)
    pool = qir.SpikePool("mli", (2, 2), (2, 2))
    qnet = qir.QNetwork([qir.Block("x", (2, 4, 4)),
                         qir.Block("o", (2,), [qir.DenseSyn("x", weight=w, pool=pool)], neuron=qir.Readout())])
    syn = inspect_network(qnet).layers[1].synapses[0]
    assert (syn.synapses, syn.fan_in, syn.weights) == (16, 8, 16)


def test_chip_count_warnings_say_surely_or_possibly(monkeypatch):
    """More than one chip: 'needs' only when even the best-case packing exceeds a chip; 'only if
    packed near the best case' when just the tutorial placement does; a layer above a chip is named."""
    from loihi_conv.app import resources

    net = _problem_net()
    net.blocks[1].neuron = qir.Cuba(vth=300)
    net.blocks[1].synapses[0].weight[0, 0, 0, 0] = 254
    net.blocks[1].bias = np.array([4095, -4096, 0, 1])
    assert inspect_network(net).warnings == []
    c0, c1 = inspect_network(net).cores
    chip = lambda n: resources.Limit(n, "cores per chip", "test")  # noqa: E731
    monkeypatch.setitem(resources.LIMITS, "cores_per_chip", chip(c0 - 1))
    text = "\n".join(inspect_network(net).warnings)
    assert f"needs {c0}..{c1} neurocores" in text and "even when packed best" in text
    monkeypatch.setitem(resources.LIMITS, "neurons_per_core", resources.Limit(1, "n", "test"))
    ins = inspect_network(net)
    assert ins.cores[1] > c0
    monkeypatch.setitem(resources.LIMITS, "cores_per_chip", chip(c0))
    text = "\n".join(inspect_network(net).warnings)
    assert "only if packed near the best case" in text and "needs" not in text.split("network:")[1][:20]
    assert "one layer alone" not in text
    monkeypatch.setitem(resources.LIMITS, "neurons_per_core_max", resources.Limit(1, "n", "test"))
    text = "\n".join(inspect_network(net).warnings)
    assert "one layer alone needs more neurocores than a chip has" in text
