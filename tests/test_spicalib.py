"""SpiCalib (loihi_conv/snn/neurons/spicalib.py): the ISI monitor (eq. 10), the allowance beta and the twin
synapse that takes back the spikes of an inactivated neuron (eq. 11).

Currents are dyadic (multiples of 1/64, threshold 1) so float sums and floors are exact.
Layout: currents (T, N) fed one step at a time to a population of shape (N, 1).
"""
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons import get_neuron_model, max_units
from loihi_conv.snn.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py


def run(model: str, currents: torch.Tensor, theta: float = 1.0, **params) -> torch.Tensor:
    """Step a (N, 1) population through ``currents`` (T, N); output spikes (T, N), threshold units."""
    node = ir.Neuron("n", (), (1,), model=model, threshold=torch.tensor([theta]), params=params)
    m = get_neuron_model(model)
    state = m.init_state((currents.shape[1], 1), node)
    return torch.stack([m.step(state, z[:, None]).clone()[:, 0] for z in currents])


def dyadic(shape, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(int(low * 64), int(high * 64), shape, generator=gen).float() / 64


def over_firing_currents(n: int, seed: int = 0) -> torch.Tensor:
    """(60, n): 10 positive steps then 50 negative ones; the total is negative, so the ANN
    activation (ReLU of the mean current) is 0 although an IF neuron fires in the first phase."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([dyadic((10, n), 0.3, 1.0, g), dyadic((50, n), -1.0, -0.3, g)])


# ---- the defining property: spikes of an inactivated neuron are taken back -------------------
def test_twin_synapse_cancels_every_spike_of_an_inactivated_neuron():
    z = over_firing_currents(500)
    assert (z.sum(0) < 0).all()  # ANN activation 0 for every neuron
    soft = run("if-soft", z)
    calib = run("spicalib", z, beta=8)
    assert (soft.sum(0) >= 2).all()                # plain IF over-fires and keeps those spikes
    assert torch.equal(calib.sum(0), torch.zeros(500))  # net charge sent downstream: exactly 0
    assert set(calib.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert (calib.cumsum(0) >= 0).all()            # only spikes already sent are taken back
    # the monitor only adds negative spikes: the positive ones are the IF neuron's own
    assert torch.equal(calib.clamp(min=0), soft)


def test_inactivated_neuron_in_a_network_stops_biasing_the_next_layer():
    """x -> A (fires every step) -> B -> output. B's bias (+theta) reaches it from step 1, A's
    inhibition (-2 theta per spike) only from step 3 (one step per synapse): B fires at steps 1
    and 2 although its ANN activation ReLU(1 - 2) is 0. SpiCalib takes both spikes back, so the
    output potential converges to the ANN's; plain IF keeps them as an error of 2 theta."""
    f64 = dict(dtype=torch.float64)

    def graph(model: str) -> ir.Graph:
        g = ir.Graph({
            "x": ir.Input("x", (), (1,)),
            "fa": ir.Linear("fa", ("x",), weight=torch.ones(1, 1, **f64)),
            "a": ir.Neuron("a", ("fa",), model="if-soft", threshold=torch.ones(1, **f64)),
            "fb": ir.Linear("fb", ("a",), weight=torch.full((1, 1), -2.0, **f64), bias=torch.ones(1, **f64)),
            "b": ir.Neuron("b", ("fb",), model=model, threshold=torch.ones(1, **f64), params={"beta": 4}),
            "out": ir.Linear("out", ("b",), weight=torch.ones(1, 1, **f64)),
        }, "out")
        for node in g:
            node.shape = (1,)
        return g

    x = torch.ones(1, 1, dtype=torch.float64)
    soft = simulate(graph("if-soft"), x, [2, 40])
    calib = simulate(graph("spicalib"), x, [2, 40])
    # early on (T=2: 5 steps run) the neuron is not overdue yet: both send the same 2 spikes
    assert float(soft.counts[2]["b"]) == float(calib.counts[2]["b"]) == 2
    # last spike t'=2, average ISI 1, beta 4: flagged from step 8, two corrections
    assert float(soft.counts[40]["b"]) == 2 and float(calib.counts[40]["b"]) == 0
    assert float(soft.output[40]) == 2.0 and float(calib.output[40]) == 0.0  # ANN output: 0


# ---- the ISI monitor and the allowance beta (eq. 10) ------------------------------------------
@pytest.mark.parametrize("beta", [0, 3, 2.5, 10])
def test_correction_starts_when_the_next_spike_is_beta_steps_overdue(beta):
    k = 4  # spikes at steps 1..k (ISI 1 each, phi = 1), then negative input
    z = torch.tensor([[1.0]] * k + [[-1.0]] * 40)
    out = run("spicalib", z, beta=beta)[:, 0]
    negative = (out < 0).nonzero()[:, 0] + 1  # 1-based steps
    # flagged when t - t' > phi + beta, i.e. from step k + 1 + floor(beta) + 1
    first = k + int(beta) + 2
    assert negative.tolist() == list(range(first, first + k))
    assert float(out.sum()) == 0


def test_average_isi_is_the_running_mean_of_intervals():
    # spikes at steps 2, 4, 10: intervals 2, 2, 6, so phi = 2 until step 10, then 10/3
    z = torch.zeros(30, 1)
    z[[1, 3, 9], 0] = 1.0
    z[10:, 0] = -1.0
    negatives = {}
    for beta in (3.6, 3.7, 0.5):
        out = run("spicalib", z, beta=beta)[:, 0]
        assert (out > 0).nonzero()[:, 0].add(1).tolist() == [2, 4, 10]
        negatives[beta] = (out < 0).nonzero()[:, 0].add(1).tolist()
    # beta 3.6 / 3.7: the 6-step gap is within phi + beta = 5.6; after step 10 the neuron is
    # flagged once t - 10 > 10/3 + beta: 6.93 -> step 17, 7.03 -> step 18; 3 spikes to take back
    assert negatives[3.6] == [17, 18, 19] and negatives[3.7] == [18, 19, 20]
    # beta 0.5: flagged inside the gap (t - 4 > 2.5 at step 7): the 2 spikes sent are taken back;
    # the spike at step 10 still goes out and is taken back once overdue (t - 10 > 3.83)
    assert negatives[0.5] == [7, 8, 14]


def test_regular_firing_is_never_corrected():
    """A constant current 0 < z <= theta gives intervals floor/ceil(theta/z): the silence before
    a spike is at most ceil - 1 <= floor <= phi, so even beta = 0 never flags it."""
    g = torch.Generator().manual_seed(1)
    z = dyadic((1, 400), 1 / 64, 1.0 + 1 / 64, g).expand(200, 400)
    assert torch.equal(run("spicalib", z, beta=0), run("if-soft", z))


def test_a_pause_longer_than_the_allowance_costs_only_spikes_already_sent():
    # mixed-sign random input: corrections happen, positive spikes stay the IF neuron's own,
    # and the net count never goes negative
    g = torch.Generator().manual_seed(2)
    z = dyadic((300, 400), -1.0, 1.2, g)
    soft = run("if-soft", z)
    calib = run("spicalib", z, beta=2)
    assert (calib < 0).any()
    assert torch.equal(calib.clamp(min=0), soft)
    assert (calib.cumsum(0) >= 0).all()


def test_burst_base_as_in_the_paper():
    """base = if-burst (Γ = 5): bursts of several threshold units are taken back one per step."""
    z = torch.tensor([[3.0], [2.0]] + [[-1.0]] * 20)
    out = run("spicalib", z, base="if-burst", burst=5, beta=1)[:, 0]
    assert out[:2].tolist() == [3.0, 2.0]
    assert float(out.sum()) == 0 and int((out < 0).sum()) == 5
    node = ir.Neuron("n", (), model="spicalib", params={"base": "if-burst", "burst": 5})
    assert max_units(node) == 5


# ---- options -------------------------------------------------------------------------------
@pytest.mark.parametrize("params, word", [({"beta": -1}, "beta"), ({"beta": "8"}, "beta"), ({"beta": True}, "beta"),
                                          ({"beta": float("inf")}, "beta"), ({"base": "nope"}, "base"),
                                          ({"base": "spicalib"}, "base")])
def test_bad_options_are_clear_errors(params, word):
    with pytest.raises(LoihiConvError, match=word):
        Recipe(neuron_model="spicalib", neuron_params=params)
    with pytest.raises(LoihiConvError, match=word):
        run("spicalib", torch.zeros(2, 1), **params)


def test_recipe_converts_to_spicalib_neurons():
    from torch import nn

    from loihi_conv.convert import convert

    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(64, 1, 4, 4)
    snn = convert(m, x, Recipe(neuron_model="spicalib", neuron_params={"beta": 4}))
    (neuron,) = snn.of_type(ir.Neuron)
    assert neuron.model == "spicalib" and neuron.params == {"beta": 4}
    res = simulate(snn, x[:8], [16])
    assert res.output[16].shape == (8, 3)
