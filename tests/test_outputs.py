"""Output readouts (loihi_conv/snn/readouts.py, ``Recipe.output``): potential, spike count, spiking
softmax (Rueckauer 2016 §3.5). Layout: inputs (N, C, H, W), scores (N, classes)."""
import pytest
import torch
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.fixed.quantize import quantize
from loihi_conv.frontend import ir
from loihi_conv.snn.readouts import READOUTS
from loihi_conv.snn.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py


@pytest.fixture(scope="module")
def net(fit, template_digits):
    torch.manual_seed(0)
    x, y = template_digits(1000, seed=1)
    m = fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), x, y, 60)
    xt, _ = template_digits(200, seed=2)
    with torch.no_grad():
        ann = m(xt).argmax(1)
    return m, x, xt, ann


def agreement(res, T: int, ann: torch.Tensor) -> float:
    return float((res.predictions(T) == ann).float().mean())


@pytest.mark.parametrize("output", ["spikes", "softmax"])
def test_spiking_readouts_agree_with_the_ann_at_large_T(net, output):
    m, x, xt, ann = net
    snn = convert(m, x, Recipe(output=output))
    res = simulate(snn, xt, [4, 256], record=False)
    assert agreement(res, 4, ann) < 0.9   # close logits: a few steps are not enough ...
    assert agreement(res, 256, ann) >= 0.98  # ... a long window is
    assert snn.meta["recipe"]["output"] == output


def test_convert_sets_one_output_threshold_from_the_normalizer(net):
    m, x, _, _ = net
    snn = convert(m, x, Recipe(output="spikes", percentile=100.0))
    with torch.no_grad():
        top = m(x).max()  # max-norm: the largest output over the calibration set
    assert snn.meta["output_threshold"] == pytest.approx(float(top), rel=1e-6)
    assert "output_threshold" not in convert(m, x, Recipe()).meta  # only when a readout needs it


def readout_graph(output: str, weight: torch.Tensor, theta: float | None = None, seed: int = 0) -> ir.Graph:
    """x (1,) -> Linear -> classes: the output sees the constant z = weight[:, 0] * x."""
    g = ir.Graph({"x": ir.Input("x", (), (1,)),
                  "out": ir.Linear("out", ("x",), (weight.shape[0],), weight=weight)}, "out")
    g.meta["recipe"] = Recipe(output=output, seed=seed).to_dict()
    if theta is not None:
        g.meta["output_threshold"] = theta
    return g


def test_spike_count_is_the_if_law_and_ties_go_to_the_larger_potential():
    # theta 1, T = 4: counts floor(4 z) = 2, 2, 0, 3 -> class 3; without it, the 2-2 tie of
    # classes 0 and 1 is broken by the potential (0.6 > 0.5)
    w = torch.tensor([[0.5], [0.6], [0.1], [0.8]], dtype=torch.float64)
    res = simulate(readout_graph("spikes", w, theta=1.0), torch.ones(1, 1, dtype=torch.float64), [4], delay=0)
    assert res.output[4].floor().tolist() == [[2.0, 2.0, 0.0, 3.0]]
    assert int(res.predictions(4)) == 3
    res = simulate(readout_graph("spikes", w[:3], theta=1.0), torch.ones(1, 1, dtype=torch.float64), [4], delay=0)
    assert int(res.predictions(4)) == 1


def test_softmax_spikes_once_per_step_and_converges_to_the_largest_potential():
    w = torch.tensor([[0.3], [0.5], [0.1]])
    res = simulate(readout_graph("softmax", w), torch.ones(64, 1), [300], delay=0)
    counts = res.output[300].floor()
    assert torch.equal(counts.sum(1), torch.full((64,), 300.0))  # one winner per step
    assert (counts[:, 1] > 0.95 * 300).all()                      # softmax(t z) -> one-hot
    assert (counts[:, 0] > 0).any()  # ... but early competitions are random


def test_softmax_is_deterministic_for_a_seed_and_changes_with_it(net):
    m, x, xt, _ = net
    snn = convert(m, x, Recipe(output="softmax", seed=3))
    a = simulate(snn, xt, [4, 16], record=False)
    b = simulate(snn, xt, [4, 16], record=False)
    assert all(torch.equal(a.output[T], b.output[T]) for T in (4, 16))
    other = convert(m, x, Recipe(output="softmax", seed=4))
    c = simulate(other, xt, [4], record=False)
    assert not torch.equal(a.output[4], c.output[4])


def test_potential_readout_is_the_default_and_sums_the_output(net):
    m, x, _, _ = net
    assert convert(m, x, Recipe()).meta["recipe"]["output"] == "potential"
    w = torch.tensor([[0.25], [-0.5], [0.125]], dtype=torch.float64)
    g = readout_graph("potential", w)
    bare = readout_graph("potential", w)
    bare.meta.clear()  # a graph without a recipe reads the potential too
    x1 = torch.ones(1, 1, dtype=torch.float64)
    for graph in (g, bare):
        res = simulate(graph, x1, [3, 8], delay=1)  # T + 1 steps run, T of them carry input
        assert res.output[3].tolist() == [[0.75, -1.5, 0.375]] and res.output[8].tolist() == [[2.0, -4.0, 1.0]]


# ---- errors ----------------------------------------------------------------------------------
def test_bad_output_options_are_clear_errors(net):
    with pytest.raises(LoihiConvError, match="output") as e:
        Recipe(output="nope")
    assert all(name in str(e.value) for name in READOUTS)
    with pytest.raises(LoihiConvError, match="output"):
        Recipe(output=3)
    with pytest.raises(LoihiConvError, match="output_threshold"):  # 'spikes' on a graph without one
        simulate(readout_graph("spikes", torch.ones(2, 1)), torch.ones(1, 1), [4])
    m, x, _, _ = net
    for output in ("spikes", "softmax"):
        snn = convert(m, x, Recipe(output=output))
        with pytest.raises(LoihiConvError, match=f"output='{output}'") as e:
            quantize(snn, "sdnn", 16, calib=x[:64])  # the spiking targets run it: test_outputs_fixed_point.py
        assert "output='potential'" in e.value.fix


def test_recipe_output_round_trips_through_toml(tmp_path):
    r = Recipe(output="softmax")
    assert Recipe.from_toml(r.to_toml(tmp_path / "r.toml")).output == "softmax"
    assert Recipe.from_dict({k: v for k, v in Recipe().to_dict().items() if k != "output"}).output == "potential"
