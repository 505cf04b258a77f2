"""ACP weights calibration (calibration paper §4.4, eq. 21-24; loihi_conv.convert.methods.calibrate):
the analytic layer model, the defining property (a layer's SNN-vs-ANN error goes down) and
the recipe/CLI options."""
import click
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from loihi_conv.app.commands.options import pop_recipe, recipe_options
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.convert.conversion import as_graph, convert
from loihi_conv.convert.methods.calibrate import (
    WeightCalibration,
    cache_layer,
    calibrate,
    calibrate_weights,
    feeding_synapse,
    layer_errors,
    layer_rates,
)
from loihi_conv.convert.normalize import to_snn
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (1, 8, 8)


def _small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


class _Residual(nn.Module):
    """relu(conv2(relu(conv1(x))) + conv3(x)): a neuron fed by an Add of two synapses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(1, 4, 1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.conv3(x))
        return self.fc(h.flatten(1))


def _data(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _layer_mse(snn, ann, x, T, name) -> float:
    e, _ = layer_errors(snn, ann, x, T, 1, name)
    return float(e.pow(2).mean())


@pytest.mark.parametrize("model,params,units", [("if-soft", {}, 1), ("if-burst", {"burst": 3}, 3),
                                                 ("if-multibit", {"s_max": 2}, 2)])
@pytest.mark.parametrize("delay", [0, 1])
def test_layer_model_is_the_if_neuron_for_constant_input(delay, model, params, units):
    """Eq. (21): for a constant drive a charge-conserving soft-reset neuron sends exactly
    theta/window * clip(floor((charge + v0)/theta), 0, U * window), clip regions included, U
    its units per step (1 plain IF, Γ burst, S_max <= 2 multi-bit)."""
    n, T, theta = 301, 6, 1.5
    eye = torch.eye(n)
    g = ir.Graph({"x": ir.Input("x", (), (n,)),
                  "fc": ir.Linear("fc", ("x",), weight=eye.clone(), bias=torch.full((n,), 0.01)),
                  "relu": ir.ReLU("relu", ("fc",)),
                  "out": ir.Linear("out", ("relu",), weight=eye.clone(), bias=torch.zeros(n))}, "out")
    ann = ops.infer_shapes(g)
    snn = to_snn(ann, {"relu": theta}, v_init=0.5)
    snn.replace("relu", ir.clone_node(snn["relu"], model=model, params=params,
                                      threshold=torch.full((1,), theta)))
    x = torch.linspace(-0.3 * theta, 1.3 * units * theta, n).unsqueeze(0).repeat(2, 1)
    cache = cache_layer(snn, ann, x, T, delay, "relu")
    with torch.no_grad():
        model = layer_rates(feeding_synapse(snn, snn["relu"]), snn["relu"], cache.inputs, cache.rest,
                            cache.steps, cache.window)
    res = simulate(snn, x, [T], delay=delay, record="neuron")
    assert cache.window == res.window(T, "relu")
    simulated = res.activations(T)["relu"]
    assert float(simulated.min()) == 0.0 and float(simulated.max()) == pytest.approx(units * theta)  # both clips
    torch.testing.assert_close(model, simulated, rtol=0, atol=1e-5)


def test_layer_model_is_the_reset_to_zero_neuron_for_constant_input():
    """if-zero (what cuba runs): from v = 0 a constant per-step charge x fires every
    ceil(theta / x) steps, the excess lost at each reset -- floor(T / ceil(theta / x)) spikes,
    a staircase well below ClipFloor's floor(T x / theta) between its steps."""
    n, T, theta = 400, 8, 1.0
    eye = torch.eye(n)
    g = ir.Graph({"x": ir.Input("x", (), (n,)),
                  "fc": ir.Linear("fc", ("x",), weight=eye.clone(), bias=torch.zeros(n)),
                  "relu": ir.ReLU("relu", ("fc",)),
                  "out": ir.Linear("out", ("relu",), weight=eye.clone(), bias=torch.zeros(n))}, "out")
    ann = ops.infer_shapes(g)
    snn = to_snn(ann, {"relu": theta}, neuron_model="if-zero")
    x = torch.linspace(-0.2, 1.2, n, dtype=torch.float64).float().unsqueeze(0)
    cache = cache_layer(snn, ann, x, T, 0, "relu")
    with torch.no_grad():
        model = layer_rates(feeding_synapse(snn, snn["relu"]), snn["relu"], cache.inputs, cache.rest,
                            cache.steps, cache.window)
    simulated = simulate(snn, x, [T], delay=0, record="neuron").activations(T)["relu"]
    off = (model - simulated).abs() > 1e-5
    assert int(off.sum()) <= 2, x[off]  # float ties at the exact step edges only
    soft = torch.floor(T * x.clamp(0, 1) / theta) * theta / T
    assert bool((simulated < soft - 1e-6).any())  # the staircase is not ClipFloor


def test_weights_calibration_refuses_rates_it_does_not_model():
    """Multi-bit S_max=4 skips counts (3 is sent as 2 + 1): eq. (21) is not its rate."""
    with pytest.raises(LoihiConvError, match="s_max <= 2"):
        Recipe(neuron_model="if-multibit", neuron_params={"s_max": 4}, acp=True, acp_weights=True).validate()


@pytest.mark.parametrize("neuron_model,T", [("if-soft", 4), ("if-zero", 16)])
def test_weights_calibration_lowers_each_layers_simulated_error(neuron_model, T):
    """Eq. (23), measured by simulation: every hidden layer's SNN-vs-ANN MSE on the calibration
    batch is lower after the weights calibration than before -- on the soft-reset neuron and on
    the reset-to-zero one cuba runs (each with its own count curve; at T=4 if-zero's staircase
    {0, 1, 2, 4} is too coarse for the straight-through gradient on this tiny net, and the
    calibration keeps the old weights)."""
    model, x = _small_cnn(), _data(256)
    ann = as_graph(model, SHAPE)
    snn = convert(model, x, Recipe(calib_size=256, calib_batch_size=256, clip_round=True, calib_timesteps=T,
                                   neuron_model=neuron_model))
    cal = calibrate(snn, ann, x, T, (), delay=1, weights=WeightCalibration(iterations=150, lr=3e-3))
    for n in snn.of_type(ir.Neuron):
        before, after = _layer_mse(snn, ann, x, T, n.name), _layer_mse(cal, ann, x, T, n.name)
        assert after < 0.95 * before, (n.name, before, after)


def test_one_layer_calibration_changes_only_its_weights():
    """Layer by layer: calibrating a layer touches its synapse's weight and nothing else (its
    bias, later layers, thresholds); the layer's loss on its cache goes down."""
    model, x, T = _small_cnn(), _data(128), 4
    ann = as_graph(model, SHAPE)
    snn = convert(model, x, Recipe(calib_size=128, calib_batch_size=128, clip_round=True, calib_timesteps=T))
    first = snn.of_type(ir.Neuron)[0]
    work = snn.copy()
    before, after = calibrate_weights(work, work[first.name], cache_layer(work, ann, x, T, 1, first.name),
                                      WeightCalibration(iterations=60, lr=3e-3))
    assert after < before
    syn = feeding_synapse(snn, first).name
    for node in snn:
        for field in ("weight", "bias", "threshold", "v_init"):
            old, new = getattr(node, field, None), getattr(work[node.name], field, None)
            if old is None:
                assert new is None
            elif node.name == syn and field == "weight":
                assert not torch.equal(old, new)
            else:
                assert torch.equal(old, new), (node.name, field)


def test_recipe_acp_weights_through_convert_and_residual_add():
    """Recipe path: acp + acp_weights changes every synapse that feeds a neuron (an Add-fed one
    included) but not the readout; acp alone leaves all weights as normalized."""
    model, x, T = _Residual().eval(), _data(96), 4
    recipe = Recipe(calib_size=96, calib_batch_size=96, calib_sim_size=96, clip_round=True, calib_timesteps=T,
                    acp=True)
    pot = convert(model, x, recipe)
    both = convert(model, x, recipe.replace(acp_weights=True, acp_iterations=40, acp_lr=3e-3))
    fed = {feeding_synapse(both, n).name for n in both.of_type(ir.Neuron)}
    assert len(fed) == 2 and both.output not in fed
    for node in both.of_type(ir.Conv2d, ir.Linear):
        assert torch.equal(node.weight, pot[node.name].weight) == (node.name not in fed), node.name
    assert both.meta["recipe"]["acp_weights"] is True
    ann = as_graph(model, SHAPE)
    last = both.of_type(ir.Neuron)[-1].name
    assert _layer_mse(both, ann, x, T, last) < _layer_mse(pot, ann, x, T, last)


@pytest.mark.parametrize("bad", [{"acp_weights": True, "neuron_model": "spicalib"}, {"acp": True, "acp_weights": 1},
                                 {"acp_iterations": 0}, {"acp_iterations": 2.5}, {"acp_lr": 0.0},
                                 {"acp_lr": -1e-4}, {"acp_lr": float("nan")}, {"acp_lr": "fast"}])
def test_recipe_rejects_bad_weight_options(bad):
    with pytest.raises(LoihiConvError) as err:
        Recipe(**bad)
    assert "acp" in str(err.value) and "fix:" in str(err.value)


def test_cli_options_reach_the_recipe():
    @click.command()
    @recipe_options
    def cmd(**kw):
        click.echo(repr(pop_recipe(kw).to_dict()))

    ok = CliRunner().invoke(cmd, ["--acp", "--acp-weights"])
    assert ok.exit_code == 0 and "'acp_weights': True" in ok.output
    off = CliRunner().invoke(cmd, [])
    assert off.exit_code == 0 and "'acp_weights': False" in off.output
    alone = CliRunner().invoke(cmd, ["--acp-weights"])  # without ACP's v(0): what cuba (no v(0)) uses
    assert alone.exit_code == 0 and "'acp_weights': True" in alone.output and "'acp': False" in alone.output


def test_weights_calibration_rejects_other_neuron_models():
    model, x = _small_cnn(), _data(32)
    snn = convert(model, x, Recipe(calib_size=32, calib_batch_size=32, neuron_model="spicalib"))
    with pytest.raises(LoihiConvError, match="no closed form"):
        calibrate(snn, as_graph(model, SHAPE), x, 4, (), weights=WeightCalibration(iterations=1))
