"""Defining properties of loihi_conv.convert.methods on small networks."""

import pytest
import torch
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.convert.conversion import as_graph, convert
from loihi_conv.convert.methods import calibrate, clamp, clip_round, clip_round_bias, efficiency, mmse_threshold
from loihi_conv.convert.methods.calibrate import layer_errors
from loihi_conv.convert.normalize import to_snn
from loihi_conv.convert.threshold_search import bayes_percentile, from_log_p, log_p, relu1_output, snn_kl
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.simulate import levels, simulate


def _one_layer(theta: float, n: int) -> ir.Graph:
    """x (N, n) -> identity Linear -> Neuron(theta) -> identity Linear readout."""
    eye = torch.eye(n)
    g = ir.Graph({"x": ir.Input("x", (), (n,)),
                  "fc": ir.Linear("fc", ("x",), weight=eye.clone(), bias=torch.zeros(n)),
                  "relu": ir.ReLU("relu", ("fc",)),
                  "out": ir.Linear("out", ("relu",), weight=eye.clone(), bias=torch.zeros(n))}, "out")
    return to_snn(ops.infer_shapes(g), {"relu": theta})


def _small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 5)).eval()


def _data(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _worst_first_layer_error(snn: ir.Graph, a: torch.Tensor, T: int) -> float:
    res = simulate(snn, a, [T], delay=0, record="neuron")
    return float((res.activations(T)["relu"] - a).abs().max())


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 13, 32])
def test_half_threshold_start_halves_worst_rate_error(T):
    theta, n = 1.5, 997
    a = torch.linspace(0, theta, n).unsqueeze(0)  # one sample, n neurons with constant drive in [0, theta]
    base = _one_layer(theta, n)
    zero = _worst_first_layer_error(base, a, T)
    half = _worst_first_layer_error(to_snn(as_graph(_ann_of(base), ()), {"relu": theta}, v_init=0.5), a, T)
    bias = _worst_first_layer_error(clip_round_bias(base, T), a, T)
    assert 0.95 * theta / T < zero <= theta / T + 1e-6      # ClipFloor: error up to one spike
    assert half <= theta / (2 * T) + 1e-6 and half <= 0.5 * zero * 1.06
    assert bias <= theta / (2 * T) + 1e-6                   # ClipRound through the bias: the same


def _ann_of(snn: ir.Graph) -> ir.Graph:
    g = snn.copy()
    for nrn in g.of_type(ir.Neuron):
        g.replace(nrn.name, ir.ReLU(nrn.name, nrn.inputs, nrn.shape))
    return g


def test_clip_round_bias_matches_eq17():
    theta, n, T = 0.8, 101, 6
    a = torch.linspace(0, 1.0, n).unsqueeze(0)
    res = simulate(clip_round_bias(_one_layer(theta, n), T), a, [T], delay=0, record="neuron")
    assert torch.allclose(res.activations(T)["relu"], clip_round(a, T, torch.tensor(theta)), atol=1e-5)


def test_lcp_zeroes_per_channel_mean_error():
    model, x = _small_cnn(), _data(64)
    recipe = Recipe(normalizer="percentile", percentile=99.0, calib_size=64, calib_batch_size=64, delay=0)
    snn = convert(model, x, recipe)
    ann = as_graph(model, (1, 8, 8))
    T = 16
    before = {n.name: layer_errors(snn, ann, x, T, 0, n.name)[0] for n in snn.of_type(ir.Neuron)}
    cal = calibrate(snn, ann, x, T, ("lcp",), delay=0)
    for name, e0 in before.items():
        e1, _ = layer_errors(cal, ann, x, T, 0, name)
        mu0 = e0.transpose(0, 1).reshape(e0.shape[1], -1).mean(1)
        mu1 = e1.transpose(0, 1).reshape(e1.shape[1], -1).mean(1)
        assert float(mu0.abs().max()) > 0.01                     # there was something to calibrate
        assert float(mu1.abs().max()) < 0.25 * float(mu0.abs().max()), name


def test_acp_potential_reduces_output_error():
    model, x = _small_cnn(), _data(64)
    recipe = Recipe(calib_size=64, calib_batch_size=64, delay=0)
    base = convert(model, x, recipe)
    acp = convert(model, x, recipe.replace(acp=True, calib_timesteps=8, calib_sim_size=64))
    ann_out = ops.forward(as_graph(model, (1, 8, 8)), x)
    err = [float((simulate(s, x, [8], delay=0, record=False).mean_output(8) - ann_out).pow(2).mean())
           for s in (base, acp)]
    assert err[1] < err[0]


def test_mmse_beats_max_and_percentile_clip_round_mse():
    torch.manual_seed(0)
    acts = torch.relu(torch.randn(200, 3, 6, 6)) ** 2 * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1)
    rows = acts.transpose(0, 1).reshape(3, -1)
    T = 8
    mse = lambda th: ((clip_round(rows, T, th[:, None]) - rows) ** 2).mean(1)  # noqa: E731
    th = mmse_threshold(acts, T, "round", granularity="channel")
    m_mmse, m_max, m_pct = mse(th), mse(rows.amax(1)), mse(torch.quantile(rows, 0.9999, dim=1))
    assert bool((m_mmse <= m_max).all()) and bool((m_mmse < m_pct).all())
    layer = mmse_threshold(acts, T, "round", granularity="layer")
    assert torch.all(layer == layer[0]) and 0 < float(layer[0]) <= float(acts.max())


def test_clamp_keeps_layer_l_silent_for_d_l_steps():
    model, x = _small_cnn(), _data(8) + 0.5
    snn = convert(model, x.repeat(4, 1, 1, 1), Recipe(calib_size=32, delay=0))
    d = 3
    clamped = clamp(snn, d)
    lv = levels(clamped)
    steps = list(range(1, 14))
    res = simulate(clamped, x, steps, delay=0, record="neuron")
    for nrn in clamped.of_type(ir.Neuron):
        quiet = d * lv[nrn.name]
        assert float(res.counts[quiet][nrn.name].sum()) == 0, nrn.name
        assert float(res.counts[steps[-1]][nrn.name].sum()) > 0, nrn.name


def test_relu1_output_is_clipped_ann():
    model, x = _small_cnn(), _data(16)
    snn = convert(model, x, Recipe(calib_size=16, min_calib_size=8))
    big = snn.copy()
    for n in big.of_type(ir.Neuron):
        big.replace(n.name, ir.clone_node(n, threshold=torch.full_like(n.threshold, 1e9)))
    assert torch.allclose(relu1_output(big, x), ops.forward(as_graph(model, (1, 8, 8)), x), atol=1e-5)


def test_bayes_opt_beats_fixed_grid_of_half_the_budget():
    # The KL(p) landscape of a small net is jagged (percentiles of discrete data), so a lucky grid
    # point can beat BO at equal budget; BO must at least match a grid of half its budget.
    model, x = _small_cnn(), _data(64)
    with torch.no_grad():
        model[-1].weight.mul_(30)  # spread the logits so KL discriminates between p
    recipe = Recipe(calib_size=64, calib_batch_size=64, delay=0, nonzero=False)
    T, lo, hi, budget = 4, 99.0, 99.999, 6
    half = budget // 2
    grid = [from_log_p(log_p(lo) + i * (log_p(hi) - log_p(lo)) / (half - 1)) for i in range(half)]
    grid_best = min(snn_kl(model, x, x[:32], p, T, recipe) for p in grid)
    p, hist = bayes_percentile(model, x, x[:32], T, recipe, bounds=(lo, hi), init_points=2, n_iter=budget - 2)
    assert len(hist) == budget and lo <= p <= hi
    assert min(k for _, k in hist) <= grid_best + 1e-9
    assert snn_kl(model, x, x[:32], p, T, recipe) == pytest.approx(min(k for _, k in hist))


def test_efficiency_counts_spike_fanout():
    theta, n, T = 1.0, 4, 10
    snn = _one_layer(theta, n)
    snn["out"].weight, snn["out"].bias = torch.ones(3, n), torch.zeros(3)  # every spike reaches 3 targets
    snn = ops.infer_shapes(snn)
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    res = simulate(snn, x, [T], delay=0, record="neuron")
    eff = efficiency(snn, res, T)
    spikes = float(res.counts[T]["relu"].sum())
    assert spikes == 2 + 5 + 10
    assert eff.snn_synops == pytest.approx(3 * spikes)
    assert eff.ann_macs == n * n + 3 * n
    assert eff.snn_input_macs == n * n * T
    assert eff.energy_ratio == pytest.approx((3 * spikes + 5 * n * n * T) / (5 * (n * n + 3 * n)))


@pytest.mark.parametrize("bad", [{"clamp_delay": -1}, {"mmse_rounding": "ceil"}, {"acp_granularity": "x"},
                                 {"calib_timesteps": 0}, {"lcp": 1}])
def test_recipe_rejects_bad_method_options(bad):
    with pytest.raises(LoihiConvError):
        Recipe(**bad)
