"""Model zoo: definitions are convertible, digits_cnn trains, caching, user-model loading."""
import dataclasses
import json
import textwrap

import pytest
import torch
from torch import nn

from loihi_conv.app import data, zoo
from loihi_conv.app.train import evaluate, train_model
from loihi_conv.base.errors import LoihiConvError

ALLOWED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.AvgPool2d,
           nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.Sequential)


@pytest.fixture
def tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LOIHI_CONV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- definitions
@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_zoo_models_are_convertible_shapes(name):
    model = zoo.build_model(name).eval()
    leaves = [m for m in model.modules() if not list(m.children())]
    assert all(isinstance(m, ALLOWED) for m in leaves), [type(m) for m in leaves]
    assert isinstance(leaves[-1], nn.Linear)  # readout layer, not followed by a ReLU module
    shape = data.dataset_info(zoo.ZOO[name].dataset).input_shape
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 10)


def test_zoo_covers_required_features():
    kinds = {name: {type(m) for m in zoo.build_model(name).modules()} for name in zoo.ZOO}
    assert nn.AvgPool2d in kinds["mnist_cnn"] and nn.MaxPool2d not in kinds["mnist_cnn"]
    assert nn.MaxPool2d in kinds["mnist_cnn_maxpool"]
    blocks = [m for m in zoo.build_model("fmnist_resnet").modules() if isinstance(m, zoo.BasicBlock)]
    shortcuts = {type(b.shortcut) for b in blocks}
    assert shortcuts == {nn.Identity, nn.Sequential}  # identity and 1x1-conv shortcuts


def test_fmnist_cnn_is_three_conv_stages_small_enough_for_lava():
    model = zoo.build_model("fmnist_cnn").eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.padding) for c in convs] == [((3, 3), (1, 1))] * 3
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 3
    sizes = []  # neurons per sample: every ReLU becomes one population
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda mod, inp, out: sizes.append(out[0].numel()))
    model(torch.rand(1, 1, 28, 28))
    assert sizes == [32 * 28 * 28, 64 * 14 * 14, 128 * 7 * 7, 128] and sum(sizes) < 50_000


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = zoo.build_model("digits_cnn")
    after = torch.rand(1)
    b = zoo.build_model("digits_cnn")
    assert torch.equal(before, after)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# --------------------------------------------------------------------------- training
def test_digits_cnn_trains_deterministically(one_thread):
    entry = zoo.ZOO["digits_cnn"]
    m1, m2 = zoo.build_model("digits_cnn"), zoo.build_model("digits_cnn")
    acc1 = train_model(m1, entry.dataset, entry.config, progress=False)
    acc2 = train_model(m2, entry.dataset, entry.config, progress=False)
    assert acc1 > 0.90
    assert acc1 == acc2
    for v1, v2 in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(v1, v2)
    x, y = data.load_dataset("digits", "test")
    assert evaluate(m1, x, y) == acc1 and not m1.training


def test_get_model_trains_once_then_loads(tmp_cache, monkeypatch, one_thread):
    model, info = zoo.get_model("digits_cnn", progress=False)
    ckpt = tmp_cache / "models" / f"digits_cnn-{zoo.config_hash('digits_cnn')}.pt"
    assert info["checkpoint"] == str(ckpt) and ckpt.is_file()
    assert info["dataset"] == "digits" and info["input_shape"] == (1, 8, 8)
    assert info["test_accuracy"] > 0.90 and not model.training
    sidecar = json.loads(ckpt.with_suffix(".json").read_text())
    assert sidecar["test_accuracy"] == info["test_accuracy"]

    def no_training(*args, **kwargs):
        raise AssertionError("second call must load the checkpoint, not train")

    monkeypatch.setattr(zoo, "train_model", no_training)
    again, info2 = zoo.get_model("digits_cnn", progress=False)
    assert info2["test_accuracy"] == info["test_accuracy"]
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x, y = data.load_dataset("digits", "test")
    assert evaluate(again, x, y) == info["test_accuracy"]


def test_get_model_without_checkpoint_and_unknown_name(tmp_cache):
    with pytest.raises(LoihiConvError, match="no cached checkpoint"):
        zoo.get_model("digits_cnn", train_if_missing=False)
    with pytest.raises(LoihiConvError, match="unknown zoo model 'resnet50'") as e:
        zoo.get_model("resnet50")
    assert "mnist_cnn" in str(e.value)


def test_config_change_changes_checkpoint_path(monkeypatch):
    before = zoo.checkpoint_path("digits_cnn")
    entry = zoo.ZOO["digits_cnn"]
    monkeypatch.setitem(zoo.ZOO, "digits_cnn",
                        entry._replace(config=dataclasses.replace(entry.config, epochs=7)))
    assert zoo.checkpoint_path("digits_cnn") != before


# --------------------------------------------------------------------------- user models
NET_SRC = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3)
            self.fc = nn.Linear(width * 6 * 6, 10)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    class Wide(Net):
        def __init__(self):
            super().__init__(width=8)

    class NeedsArgs(nn.Module):
        def __init__(self, channels, kernel=3):
            super().__init__()

    NOT_A_CLASS = 3
""")


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(NET_SRC)
    return path


def test_load_user_model_happy_path(user_file, tmp_path):
    torch.manual_seed(0)
    source = zoo.load_user_model(f"{user_file}:Net")
    weights = tmp_path / "w.pt"
    torch.save(source.state_dict(), weights)
    loaded = zoo.load_user_model(f"{user_file}:Net", str(weights))
    assert not loaded.training
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(loaded(x), source(x))
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, wrapped)
    assert torch.equal(zoo.load_user_model(f"{user_file}:Net", str(wrapped))(x), source(x))


def test_load_user_model_file_and_class_errors(user_file, tmp_path):
    with pytest.raises(LoihiConvError, match="does not exist"):
        zoo.load_user_model(f"{tmp_path / 'nope.py'}:Net")
    with pytest.raises(LoihiConvError, match="not of the form"):
        zoo.load_user_model(str(user_file))
    with pytest.raises(LoihiConvError, match="Missing is not defined") as e:
        zoo.load_user_model(f"{user_file}:Missing")
    assert "NeedsArgs, Net, Wide" in str(e.value)
    with pytest.raises(LoihiConvError, match="NOT_A_CLASS is not an nn.Module"):
        zoo.load_user_model(f"{user_file}:NOT_A_CLASS")
    with pytest.raises(LoihiConvError, match="needs constructor arguments: channels"):
        zoo.load_user_model(f"{user_file}:NeedsArgs")
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('boom at import')\n")
    with pytest.raises(LoihiConvError, match="boom at import"):
        zoo.load_user_model(f"{broken}:Net")


def test_load_user_model_weight_errors(user_file, tmp_path):
    with pytest.raises(LoihiConvError, match="weights file .* does not exist"):
        zoo.load_user_model(f"{user_file}:Net", str(tmp_path / "missing.pt"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(LoihiConvError, match="cannot read weights file"):
        zoo.load_user_model(f"{user_file}:Net", str(garbage))
    pickled_module = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), pickled_module)  # a whole module: refused by weights_only
    with pytest.raises(LoihiConvError, match="cannot read weights file"):
        zoo.load_user_model(f"{user_file}:Net", str(pickled_module))
    not_dict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), not_dict)
    with pytest.raises(LoihiConvError, match="not a state_dict"):
        zoo.load_user_model(f"{user_file}:Net", str(not_dict))


def test_load_user_model_state_dict_mismatch(user_file, tmp_path):
    wide = zoo.load_user_model(f"{user_file}:Wide")
    state = wide.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    path = tmp_path / "wide.pt"
    torch.save(state, path)
    with pytest.raises(LoihiConvError) as e:
        zoo.load_user_model(f"{user_file}:Net", str(path))
    msg = str(e.value)
    assert "missing keys: fc.bias" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "conv.weight: file (8, 1, 3, 3) vs model (4, 1, 3, 3)" in msg
