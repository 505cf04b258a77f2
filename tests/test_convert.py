"""convert() end to end on hand-built graphs, calibration data handling, and Recipe I/O."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py


def small_graph(seed: int = 0) -> ir.Graph:
    """x(1,6,6) -> conv3 -> ReLU -> avgpool -> flatten -> fc -> ReLU -> fc(4); shapes left empty."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return ir.Graph({
        "x": ir.Input("x", (), (1, 6, 6)),
        "c1": ir.Conv2d("c1", ("x",), weight=rnd(3, 1, 3, 3) * 0.5, bias=rnd(3) * 0.1, padding=(1, 1)),
        "r1": ir.ReLU("r1", ("c1",)),
        "p1": ir.AvgPool2d("p1", ("r1",)),
        "f": ir.Flatten("f", ("p1",)),
        "l1": ir.Linear("l1", ("f",), weight=rnd(8, 27) * 0.4, bias=rnd(8) * 0.1),
        "r2": ir.ReLU("r2", ("l1",)),
        "out": ir.Linear("out", ("r2",), weight=rnd(4, 8) * 0.5, bias=rnd(4) * 0.1),
    }, "out")


def positive_percentile(acts: torch.Tensor, p: float) -> np.ndarray:
    v = acts.transpose(0, 1).reshape(acts.shape[1], -1).numpy()
    return np.array([np.percentile(row[row > 0], p) if (row > 0).any() else np.nan for row in v])


# ---- convert -------------------------------------------------------------------------------
def test_convert_graph_thresholds_and_meta():
    graph = small_graph()
    x = torch.rand(300, 1, 6, 6)
    recipe = Recipe(percentile=99.9, neuron_model="if-zero", v_init=0.5)
    snn = convert(graph, x, recipe)
    assert not snn.of_type(ir.ReLU) and [n.name for n in snn.of_type(ir.Neuron)] == ["r1", "r2"]
    assert not graph.of_type(ir.Neuron)  # input graph untouched
    _, acts = ops.forward(ops.infer_shapes(graph.copy()), x, record=True)
    for name in ("r1", "r2"):
        node = snn[name]
        assert node.model == "if-zero" and torch.equal(node.v_init, torch.full_like(node.threshold, 0.5))
        want = positive_percentile(acts[name], 99.9)
        live = np.isfinite(want)
        assert live.sum() >= 2
        np.testing.assert_allclose(node.threshold.numpy()[live], want[live], rtol=1e-5)
        assert bool((node.threshold > 0).all())
    assert snn.meta["recipe"] == recipe.to_dict() and snn.meta["calib_samples"] == 300
    assert snn["r1"].shape == (3, 6, 6) and snn["out"].shape == (4,)


def test_iterable_of_pairs_equals_tensor_and_layerwise_max():
    graph = small_graph(1)
    x = torch.rand(200, 1, 6, 6)
    recipe = Recipe(normalizer="max", granularity="layer", calib_batch_size=64)
    a = convert(graph, x, recipe)
    loader = [(x[i:i + 50], torch.zeros(50)) for i in range(0, 200, 50)]
    b = convert(graph, loader, recipe)
    c = convert(graph, (xb.numpy() for xb, _ in loader), recipe)
    _, acts = ops.forward(ops.infer_shapes(graph.copy()), x, record=True)
    for name in ("r1", "r2"):
        # (float results of a conv may differ in the last bit with the batch size)
        assert torch.allclose(a[name].threshold, b[name].threshold)
        assert torch.allclose(a[name].threshold, c[name].threshold)
        assert torch.allclose(a[name].threshold, acts[name].max().expand(a[name].threshold.shape))


def test_calib_size_limits_samples():
    graph = small_graph()
    x = torch.rand(500, 1, 6, 6)
    recipe = Recipe(normalizer="max", calib_size=100, min_calib_size=10, seed=3)
    snn = convert(graph, [x[:70], x[70:140], x[140:]], recipe)
    assert snn.meta["calib_samples"] == 100
    _, acts = ops.forward(ops.infer_shapes(graph.copy()), x[:100], record=True)
    assert torch.allclose(snn["r1"].threshold, acts["r1"].amax(dim=(0, 2, 3)))  # the first 100 of a stream
    # a big tensor: a seeded random subset, reproducible, different for another seed
    t1 = convert(graph, x, recipe)["r2"].threshold
    assert torch.equal(t1, convert(graph, x, recipe)["r2"].threshold)
    assert convert(graph, x, recipe)["r2"].threshold.shape == (8,)
    assert not torch.equal(t1, convert(graph, x, recipe.replace(seed=4))["r2"].threshold)


def test_convert_errors():
    graph = small_graph()
    x = torch.rand(40, 1, 6, 6)
    with pytest.raises(LoihiConvError, match="empty"):
        convert(graph, torch.zeros(0, 1, 6, 6))
    with pytest.raises(LoihiConvError, match="empty"):
        convert(graph, [])
    with pytest.raises(LoihiConvError, match="min_calib_size"):
        convert(graph, x[:5], Recipe(min_calib_size=16))
    assert convert(graph, x[:5], Recipe(calib_size=5)).meta["calib_samples"] == 5  # calib_size < min is fine
    with pytest.raises(LoihiConvError, match=r"\(N, 1, 6, 6\)"):
        convert(graph, torch.rand(40, 3, 6, 6))
    with pytest.raises(LoihiConvError, match="not a tensor"):
        convert(graph, ["not", "tensors"])
    with pytest.raises(LoihiConvError, match="not a tensor or an iterable"):
        convert(graph, 3.5)
    snn = convert(graph, x, Recipe(min_calib_size=8))
    with pytest.raises(LoihiConvError, match="already a spiking"):
        convert(snn, x)
    with pytest.raises(LoihiConvError, match="cannot convert"):
        convert("model.pt", x)


# ---- recipe --------------------------------------------------------------------------------
def test_recipe_toml_and_dict_round_trip(tmp_path):
    r = Recipe(normalizer="max", percentile=99.9, granularity="layer", nonzero=False, neuron_model="if-zero",
               v_init=0.5, delay=0, timesteps=(8, 64), calib_size=512, calib_batch_size=128,
               min_calib_size=32, seed=7)
    path = r.to_toml(tmp_path / "recipe.toml")
    back = Recipe.from_toml(path)
    assert back == r and back.timesteps == (8, 64)
    assert Recipe.from_dict(r.to_dict()) == r
    (tmp_path / "partial.toml").write_text('normalizer = "max"\n')
    assert Recipe.from_toml(tmp_path / "partial.toml") == Recipe(normalizer="max")


@pytest.mark.parametrize("changes, match", [
    ({"normalizer": "kl"}, "max, mmse, percentile"),
    ({"neuron_model": "lif"}, "if-soft, if-zero"),
    ({"granularity": "neuron"}, "channel"),
    ({"percentile": 0.0}, "percentile"),
    ({"percentile": 100.5}, "percentile"),
    ({"timesteps": (16, 0)}, "timesteps"),
    ({"timesteps": ()}, "timesteps"),
    ({"delay": 2}, "delay"),
    ({"v_init": 1.0}, "v_init"),
    ({"calib_size": 0}, "calib_size"),
    ({"min_calib_size": -1}, "min_calib_size"),
    ({"bogus": 1}, "unknown option"),
])
def test_recipe_validation(changes, match):
    with pytest.raises(LoihiConvError, match=match):
        Recipe.from_dict({**Recipe().to_dict(), **changes})


def test_recipe_file_errors(tmp_path):
    with pytest.raises(LoihiConvError, match="does not exist"):
        Recipe.from_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("normalizer = \n")
    with pytest.raises(LoihiConvError, match="not valid TOML"):
        Recipe.from_toml(tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text("normaliser = 'max'\n")
    with pytest.raises(LoihiConvError, match="normaliser"):
        Recipe.from_toml(tmp_path / "typo.toml")


# ---- real nn.Modules through fold.prepare --------------------------------------------------
class ResNetLet(nn.Module):
    """conv-BN-ReLU, a residual block (identity shortcut), avg-pool, two linears."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 5))

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(x + self.body(x)))


def randomized_bn(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1 + 0.1)
    return model.eval()


def test_convert_module_with_bn_and_residual():
    torch.manual_seed(0)
    model = randomized_bn(ResNetLet(), 1)
    x = torch.rand(256, 1, 6, 6)
    snn = convert(model, x, Recipe(normalizer="max", calib_batch_size=100))
    neurons = snn.of_type(ir.Neuron)
    assert len(neurons) == 4 and not snn.of_type(ir.BatchNorm) and not snn.of_type(ir.ReLU)
    assert any(isinstance(snn[n.inputs[0]], ir.Add) for n in neurons)  # the residual join neuron
    with torch.no_grad():
        want = model(x)
    # max-norm on the calibration set: clipping never binds there, the clipped ANN is the model
    assert torch.allclose(ops.forward(snn, x), want, atol=1e-4)
    # and the SNN's readout approaches it (shortcut-consistent thresholds need no special case)
    res = simulate(snn, x[:64], [256], delay=1)
    c = torch.corrcoef(torch.stack([res.mean_output(256).flatten(), want[:64].flatten()]))[0, 1]
    assert float(c) > 0.99
