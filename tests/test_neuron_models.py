"""Defining properties of the burst, multi-bit and buffered neuron models (loihi_conv.snn.neurons).

Inputs are dyadic (multiples of 1/64, threshold 1) so float32 sums and floors are exact.
Layout: currents (T, N) fed one step at a time to a population of shape (N, 1).
"""
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.convert.normalize import to_snn
from loihi_conv.frontend import ir
from loihi_conv.frontend.ops import forward, infer_shapes
from loihi_conv.snn.neurons import get_neuron_model, threshold_scale
from loihi_conv.snn.simulate import simulate


def run(model: str, currents: torch.Tensor, theta: float = 1.0, **params):
    """Step a (N, 1) population through ``currents`` (T, N); spikes (T, N) in threshold units, final v."""
    node = ir.Neuron("n", (), (1,), model=model, threshold=torch.tensor([theta]), params=params)
    m = get_neuron_model(model)
    state = m.init_state((currents.shape[1], 1), node)
    spikes = torch.stack([m.step(state, z[:, None]).clone()[:, 0] for z in currents])
    return spikes, state["v"][:, 0]


def dyadic(shape, low: float, high: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(int(low * 64), int(high * 64), shape, generator=g).float() / 64


# ---- buffered IF (HPC eq. 12-13) -------------------------------------------------------------
def test_buffered_cancels_constructed_over_fire():
    # One threshold's worth of charge arrives, then half of it is taken back: V_a = 0.5 theta.
    z = torch.tensor([[1.0], [-0.5]])
    soft, _ = run("if-soft", z)
    buffered, v = run("if-buffered", z)
    assert soft.sum() == 1  # plain IF over-fires: 1 > floor(0.5)
    assert buffered.tolist() == [[1.0], [-1.0]] and buffered.sum() == 0
    assert float(v) == 0.5  # the retracted charge is back on the membrane


def test_buffered_never_ends_above_floor_of_integrated_input():
    # Random currents with negative steps smaller than theta (one -1 spike can cancel them).
    z = dyadic((40, 3000), -0.98, 1.5)
    v_a = z.sum(0)
    bound = torch.floor(v_a.clamp(min=0))
    soft, _ = run("if-soft", z)
    buffered, v = run("if-buffered", z)
    assert (soft.sum(0) > bound).any()  # the constructed inputs do make plain IF over-fire
    assert (buffered.sum(0) <= bound).all()
    assert (buffered.cumsum(0) >= 0).all()  # net count (V^b / theta) never negative
    assert torch.equal(v + buffered.sum(0), v_a)  # charge conservation
    assert set(buffered.unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_buffered_multibit_negative_spikes_are_powers_of_two_and_bounded_by_buffer():
    z = dyadic((40, 2000), -3.0, 4.0, seed=1)
    s, v = run("if-buffered", z, s_max=4)
    assert set(s.unique().tolist()) <= {-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0}
    assert (s.cumsum(0) >= 0).all()
    assert torch.equal(v + s.sum(0), z.sum(0))


# ---- multi-bit (HPC eq. 14-16) ---------------------------------------------------------------
@pytest.mark.parametrize("s_max", [2, 4, 8])
def test_multibit_value_equals_floor_of_integrated_input(s_max):
    # Per-step input below 2 theta keeps the residual below theta (A(k) = k for k <= 2), so the
    # sum of spike values is exactly floor(V_a / theta).
    z = dyadic((50, 2000), 0.0, 2.0, seed=s_max)
    s, v = run("if-multibit", z, s_max=s_max)
    assert torch.equal(s.sum(0), torch.floor(z.sum(0)))
    assert ((v >= 0) & (v < 1)).all()


@pytest.mark.parametrize("s_max", [1, 2, 4, 8])
def test_multibit_spikes_are_powers_of_two_and_charge_is_conserved(s_max):
    z = dyadic((50, 2000), -1.0, 12.0, seed=10 + s_max)
    s, v = run("if-multibit", z, s_max=s_max)
    allowed = {0.0} | {float(2 ** n) for n in range(4) if 2 ** n <= s_max}
    assert set(s.unique().tolist()) <= allowed
    assert torch.equal(v + s.sum(0), z.sum(0))


def test_multibit_representation_power_is_T_times_s_max():
    # Constant input x * S_max (x in [0, 1]) for T steps: the value sent is floor(P x), P = T S_max.
    T, s_max = 8, 2
    x = torch.arange(0, 65).float() / 64
    s, _ = run("if-multibit", (x * s_max).expand(T, -1), s_max=s_max)
    assert torch.equal(s.sum(0), torch.floor(T * s_max * x))
    assert len(s.sum(0).unique()) == T * s_max + 1  # 17 levels where unit spikes give 9


# ---- burst (SpiCalib / Li & Zeng 2022) -------------------------------------------------------
def test_burst_at_most_gamma_per_step_and_conserves_charge():
    z = dyadic((40, 2000), -2.0, 8.0, seed=3)
    s, v = run("if-burst", z, burst=3)
    assert s.max() <= 3 and s.min() >= 0 and torch.equal(s, s.round())
    assert torch.equal(v + s.sum(0), z.sum(0))
    # A constant current of 2.5 theta is sent at rate 2.5, above plain IF's ceiling of 1.
    s, _ = run("if-burst", torch.full((64, 1), 2.5), burst=3)
    assert s.sum() == 160


# ---- wiring: params, thresholds, recipe, simulator --------------------------------------------
def test_bad_params_are_reported():
    with pytest.raises(LoihiConvError, match="power of two"):
        threshold_scale("if-multibit", {"s_max": 3})
    with pytest.raises(LoihiConvError, match="positive integer"):
        run("if-burst", torch.ones(2, 1), burst=0)
    with pytest.raises(LoihiConvError, match="s_max"):
        Recipe(neuron_model="if-buffered", neuron_params={"s_max": 6})


def _tiny_graph() -> ir.Graph:
    g = torch.Generator().manual_seed(0)
    nodes = {"x": ir.Input("x", (), (4,)),
             "fc1": ir.Linear("fc1", ("x",), weight=torch.randn(8, 4, generator=g), bias=torch.zeros(8)),
             "r1": ir.ReLU("r1", ("fc1",)),
             "fc2": ir.Linear("fc2", ("r1",), weight=torch.randn(3, 8, generator=g), bias=None)}
    return infer_shapes(ir.Graph(nodes, "fc2"))


def test_multibit_snn_matches_clipped_ann_with_half_the_steps():
    ann = _tiny_graph()
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(1))
    lam = {"r1": forward(ann, x, record=True)[1]["r1"].amax(0).clamp(min=0.1)}
    plain = to_snn(ann, lam)
    multi = to_snn(ann, lam, "if-multibit", params={"s_max": 2})
    assert torch.allclose(multi["r1"].threshold, lam["r1"] / 2)
    ref = forward(plain, x)  # the ANN clipped at lambda: both SNNs' target
    err_plain = (simulate(plain, x, [16], delay=0).mean_output(16) - ref).abs().mean()
    err_multi = (simulate(multi, x, [8], delay=0).mean_output(8) - ref).abs().mean()
    err_multi16 = (simulate(multi, x, [16], delay=0).mean_output(16) - ref).abs().mean()
    err_plain8 = (simulate(plain, x, [8], delay=0).mean_output(8) - ref).abs().mean()
    assert err_multi16 < err_plain  # same T, twice the representation power
    # Strength-latency trade-off (HPC §3.4): T=8 with S_max=2 has the power P=16 of plain T=16.
    assert err_multi <= 1.05 * err_plain < err_plain8
