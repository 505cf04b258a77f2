"""--model kinds beyond the zoo: torchvision:NAME (+ --weights, --model-arg), an ONNX file
(onnx2torch), pkg.module:factory; and their errors. Small models, small inputs."""
from __future__ import annotations

import json
import shlex
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from loihi_conv import api
from loihi_conv.app import models
from loihi_conv.app.cli import main
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def npz(tmp_path):
    """A 3x16x16 colour dataset of 4 classes as a .npz (x_/y_train, x_/y_test)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=rng.random((64, 3, 16, 16), dtype=np.float32), y_train=rng.integers(0, 4, 64),
             x_test=rng.random((16, 3, 16, 16), dtype=np.float32), y_test=rng.integers(0, 4, 16))
    return str(path)


def test_torchvision_model_with_model_args_and_a_state_dict(npz, tmp_path):
    spec = models.ModelSpec("torchvision:resnet18", models.parse_model_args(["num_classes=4"]))
    ref = models.resolve(spec, None, npz)
    assert ref.module.fc.out_features == 4 and ref.input_shape == (3, 16, 16) and ref.info["source"] == "torchvision"
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ref.module.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    loaded = models.resolve(spec, str(tmp_path / "w.pt"), npz)
    assert torch.equal(loaded.module.fc.weight, state["fc.weight"])
    with pytest.raises(LoihiConvError, match="do not fit torchvision:resnet18") as info:
        models.resolve("torchvision:resnet18", str(tmp_path / "w.pt"), npz)  # 1000 classes
    assert "fc.weight" in str(info.value)


@pytest.mark.parametrize("spec, args, message", [
    ("torchvision:resnet_18", {}, "torchvision has no model 'resnet_18'"),
    ("torchvision:resnet18", {"num_clases": 4}, "check the --model-arg names"),
    ("torchvision:resnet18", {"weights": "DEFAULT"}, "would download pretrained weights"),
    ("no_such_pkg.mod:make", {}, "cannot import 'no_such_pkg.mod'"),
    ("time:time", {}, "returned a float, not an nn.Module"),
    ("mnist_cnn", {"width": 2}, "--model-arg given with the zoo model"),
])
def test_model_spec_errors_are_one_clear_message(npz, spec, args, message):
    with pytest.raises(LoihiConvError, match=message.replace("(", "\\(").replace(")", "\\)")):
        models.resolve(models.ModelSpec(spec, args), None, npz if ":" in spec else None)


def test_model_arg_values_are_typed():
    assert models.parse_model_args(["a=3", "b=0.5", "c=false", "d=None", "e=x"]) == \
        {"a": 3, "b": 0.5, "c": False, "d": None, "e": "x"}
    with pytest.raises(LoihiConvError, match="is not KEY=VALUE"):
        models.parse_model_args(["3"])


class Small(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.c0 = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.c1 = nn.Conv2d(width, width, 3, padding=1)
        self.e = nn.Conv2d(width, 3, 1)
        self.fc = nn.Linear((width + 3) * 8 * 8, 4)

    def forward(self, x):
        a = F.relu(self.bn(self.c0(x)))
        b = F.relu(self.c1(a) + a)
        x = torch.cat([b, F.relu6(self.e(b))], 1)
        return self.fc(torch.flatten(F.max_pool2d(x, 2), 1))


def test_onnx_export_converts_to_the_same_float_snn_as_the_pytorch_original(npz, tmp_path):
    torch.manual_seed(0)
    model = Small().eval()
    model.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "small.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 16, 16), str(path), opset_version=13)
    ref = models.resolve(str(path), None, npz)
    assert ref.info["source"] == "onnx"
    calib = torch.rand(128, 3, 16, 16)
    recipe = api.Recipe(calib_size=128, normalizer="max")
    a, b = api.convert(model, calib, recipe), api.convert(ref.module, calib, recipe)
    ta = [n.threshold for n in a.of_type(ir.Neuron)]
    tb = [n.threshold for n in b.of_type(ir.Neuron)]
    assert len(ta) == len(tb) == 3 and all(torch.allclose(x, y, rtol=1e-4) for x, y in zip(ta, tb))
    x = torch.rand(20, 3, 16, 16)
    sa, sb = api.simulate(a, x, [32]), api.simulate(b, x, [32])
    assert (sa.output[32] - sb.output[32]).abs().max().item() < 1e-3 * sa.output[32].abs().max().item()
    with pytest.raises(LoihiConvError, match="an ONNX file holds its own weights"):
        models.resolve(str(path), str(path), npz)


def test_invalid_onnx_file_is_refused(npz, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\x01")
    with pytest.raises(LoihiConvError, match="is not a valid ONNX model"):
        models.resolve(str(bad), None, npz)


def test_factory_through_the_cli_with_model_args(npz, tmp_path, monkeypatch):
    (tmp_path / "userpkg_fac.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.c = nn.Conv2d(3, width, 3, stride=2)
                self.fc = nn.Linear(width * 7 * 7, 4)

            def forward(self, x):
                return self.fc(F.relu(self.c(x)).flatten(1))

        def make(width=2):
            return Net(width)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = models.resolve(models.ModelSpec("userpkg_fac:make", {"width": 3}), None, npz)
    assert ref.module.c.out_channels == 3 and ref.info["source"] == "factory"
    out = tmp_path / "r.json"
    args = f"evaluate --model userpkg_fac:make --model-arg width=5 --dataset {npz} -T 8 --calib-size 32 --json {out}"
    res = CliRunner(mix_stderr=False).invoke(main, shlex.split(args))
    assert res.exit_code == 0, res.stderr + res.stdout
    assert "width=5" not in res.stderr and json.loads(out.read_text())  # built with width 5, evaluated
