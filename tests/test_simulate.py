"""Float SNN simulator: neuron model laws, time structure, rate ~ activation correlation."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.convert.normalize import to_snn
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.neurons import NEURON_MODELS, get_neuron_model
from loihi_conv.snn.simulate import levels, simulate

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py


# ---- helpers -------------------------------------------------------------------------------
def one_neuron_graph(weight: float, theta: float, v_init: float, model: str = "if-soft") -> ir.Graph:
    """x (1,) -> Linear(w) -> Neuron -> Linear(1) readout; no biases; float64 throughout."""
    g = ir.Graph({
        "x": ir.Input("x", (), (1,)),
        "fc": ir.Linear("fc", ("x",), weight=torch.tensor([[weight]], dtype=torch.float64)),
        "n": ir.Neuron("n", ("fc",), model=model, threshold=torch.tensor([theta], dtype=torch.float64),
                       v_init=torch.tensor([v_init], dtype=torch.float64)),
        "out": ir.Linear("out", ("n",), weight=torch.ones(1, 1, dtype=torch.float64)),
    }, "out")
    for node in g:
        node.shape = (1,)
    return g


def tiny_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def graph_of(m: nn.Sequential, bias: bool = True) -> ir.Graph:
    """Hand-built IR of ``tiny_cnn`` (the tracer is tested elsewhere)."""
    b = (lambda layer: layer.bias.detach().clone()) if bias else (lambda layer: None)
    w = lambda layer: layer.weight.detach().clone()  # noqa: E731
    g = ir.Graph({
        "x": ir.Input("x", (), (1, 8, 8)),
        "c1": ir.Conv2d("c1", ("x",), weight=w(m[0]), bias=b(m[0]), padding=(1, 1)),
        "r1": ir.ReLU("r1", ("c1",)), "p1": ir.AvgPool2d("p1", ("r1",)),
        "c2": ir.Conv2d("c2", ("p1",), weight=w(m[3]), bias=b(m[3]), padding=(1, 1)),
        "r2": ir.ReLU("r2", ("c2",)), "p2": ir.AvgPool2d("p2", ("r2",)), "f": ir.Flatten("f", ("p2",)),
        "l1": ir.Linear("l1", ("f",), weight=w(m[7]), bias=b(m[7])),
        "r3": ir.ReLU("r3", ("l1",)),
        "out": ir.Linear("out", ("r3",), weight=w(m[9]), bias=b(m[9])),
    }, "out")
    return ops.infer_shapes(g)


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """10 random 8x8 templates plus noise, in [0, 1] (a stand-in for sklearn digits)."""
    gen = torch.Generator().manual_seed(1234)
    templates = torch.rand(10, 1, 8, 8, generator=gen)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=gen)
    x = (templates[y] + 0.25 * torch.randn(n, 1, 8, 8, generator=gen)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def trained(fit):
    torch.manual_seed(0)
    x, y = synthetic_digits(1000, seed=1)
    m = fit(tiny_cnn(), x, y, 150)
    xt, yt = synthetic_digits(100, seed=2)
    with torch.no_grad():
        acc = (m(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.9, f"tiny model did not train ({acc})"
    snn = convert(graph_of(m), x, Recipe(percentile=99.99))
    return snn, xt, yt


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


# ---- neuron model laws ---------------------------------------------------------------------
dyadic = st.integers(0, 64).map(lambda k: k / 64)  # exact in binary floating point


@settings(max_examples=40, deadline=None)
@given(i_frac=dyadic, theta=st.sampled_from([0.25, 0.5, 1.0, 3.0]), v0=st.integers(0, 63).map(lambda k: k / 64),
       T=st.integers(1, 300))
def test_soft_reset_count_is_floor_of_charge(i_frac, theta, v0, T):
    """Rueckauer 2016 eq. 4b: constant 0 <= I <= theta gives floor((v0*theta + T*I)/theta) spikes."""
    I = i_frac * theta
    node = ir.Neuron("n", ("a",), model="if-soft", threshold=torch.tensor([theta], dtype=torch.float64),
                     v_init=torch.tensor([v0], dtype=torch.float64))
    model = get_neuron_model("if-soft")
    state = model.init_state((1, 1), node, dtype=torch.float64)
    current = torch.full((1, 1), I, dtype=torch.float64)
    count = sum(float(model.step(state, current)) for _ in range(T))
    assert count == math.floor((v0 * theta + T * I) / theta)


@pytest.mark.parametrize("delay", [0, 1])
def test_soft_reset_law_through_simulator_and_delay(delay):
    """The same law end to end; with delay=1 the level-1 neuron integrates T+L-1 = T+1 steps."""
    theta, v0 = 1.0, 0.25
    xs = torch.tensor([[0.0], [0.1], [0.37], [0.5], [0.99], [1.0]], dtype=torch.float64)
    g = one_neuron_graph(1.0, theta, v0)
    ts = [1, 5, 17, 100]
    r = simulate(g, xs, ts, delay=delay)
    assert r.depth == 2 and r.levels == {"n": 1}
    for T in ts:
        window = T + delay  # steps with input: T + L - level = T + 1 with delay
        assert r.window(T, "n") == window
        want = torch.floor((v0 * theta + window * xs[:, 0]) / theta)
        assert torch.equal(r.counts[T]["n"][:, 0], want)
        # the readout (one more hop) sees the spikes of exactly T input steps, amplitude theta
        assert torch.equal(r.output[T][:, 0], torch.floor((v0 * theta + T * xs[:, 0]) / theta) * theta)


def test_zero_reset_spikes_every_ceil_theta_over_i_steps():
    """Rueckauer 2016 eq. 4a: constant I>0 from v=0 spikes every n = ceil(theta/I) steps."""
    xs = torch.tensor([[0.3], [0.5], [0.7], [1.0], [0.11]], dtype=torch.float64)
    g = one_neuron_graph(1.0, 1.0, 0.0, model="if-zero")
    T = 97
    r = simulate(g, xs, [T], delay=0)
    n = torch.ceil(1.0 / xs[:, 0] - 1e-12)
    assert torch.equal(r.counts[T]["n"][:, 0], torch.floor(T / n))


def test_neuron_registry_lists_names():
    assert {"if-soft", "if-zero"} <= set(NEURON_MODELS)
    with pytest.raises(LoihiConvError, match="if-soft"):
        get_neuron_model("lif-bogus")


# ---- time structure ------------------------------------------------------------------------
def test_delay_shifts_each_level_without_changing_spikes():
    """With no biases and v(0)=0, delay=1 is delay=0 shifted by one step per synapse hop: the
    level-h population's counts over T+L steps equal the no-delay counts over T+L-h steps, and
    the readout over T+L steps equals the no-delay readout over T steps."""
    torch.manual_seed(3)
    g = to_snn(graph_of(tiny_cnn(), bias=False), {"r1": 0.3, "r2": 0.2, "r3": 0.25})
    x = torch.rand(20, 1, 8, 8)
    lv = levels(g)
    assert (lv["r1"], lv["r2"], lv["r3"], lv["out"]) == (1, 2, 3, 4)
    ts = [3, 10, 40]
    d1 = simulate(g, x, ts, delay=1, record="neuron")
    assert d1.steps_run == 44
    need = sorted({T + 4 - lv[n] for T in ts for n in ("r1", "r2", "r3")} | set(ts))
    d0 = simulate(g, x, need, delay=0, record="neuron")
    assert d0.steps_run == max(need)
    for T in ts:
        assert torch.equal(d1.output[T], d0.output[T])
        for name in ("r1", "r2", "r3"):
            assert torch.equal(d1.counts[T][name], d0.counts[T + 4 - lv[name]][name])
    assert sum(float(c.sum()) for c in d1.counts[40].values()) > 100  # the comparison was not vacuous


def test_batching_and_record_modes_agree(trained):
    snn, x, _ = trained
    a = simulate(snn, x[:30], [8, 20], batch_size=7, record="neuron")
    b = simulate(snn, x[:30], [20, 8, 8], batch_size=7, record=True)
    c = simulate(snn, x[:30], [20], batch_size=7, record=False)
    before = torch.get_num_threads()
    d = simulate(snn, x[:30], [20], batch_size=1000, num_threads=2)
    assert torch.get_num_threads() == before  # the thread setting is per call
    assert a.timesteps == b.timesteps == (8, 20)
    for T in (8, 20):
        assert torch.equal(a.output[T], b.output[T])
        for name, cnt in a.counts[T].items():
            assert torch.equal(cnt.sum(dim=(2, 3)) if cnt.dim() == 4 else cnt, b.counts[T][name])
    assert torch.equal(c.output[20], b.output[20]) and c.counts == {}
    # per-channel rates are the mean of the per-neuron rates
    for name in a.counts[20]:
        ra, rb = a.rates(20)[name], b.rates(20)[name]
        assert torch.allclose(ra.mean(dim=(2, 3)) if ra.dim() == 4 else ra, rb, atol=1e-6)
    # one big batch: the same up to last-bit differences of the conv kernels for another batch size
    assert torch.allclose(d.output[20], b.output[20], atol=1e-4)
    for name, cnt in d.counts[20].items():
        assert float((cnt - b.counts[20][name]).abs().sum()) <= 2


# ---- rates approximate the clipped ANN ------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 1])
def test_rates_times_threshold_match_clipped_ann(trained, delay):
    snn, x, y = trained
    T = 512
    ann_out, acts = ops.forward(snn, x, record=True)  # ops.apply(Neuron) = ReLU clipped at threshold
    r = simulate(snn, x, [64, T], delay=delay, record="neuron")
    est = r.activations(T)
    for name in ("r1", "r2", "r3"):
        assert corr(est[name], acts[name]) > 0.99, name
        # reset by subtraction: error is at most about one spike over the window
        assert float((est[name] - acts[name]).abs().mean()) < 0.02 * float(acts[name].max())
    assert corr(r.mean_output(T), ann_out) > 0.99
    ann_acc = float((ann_out.argmax(1) == y).float().mean())
    acc = r.accuracy(y)
    assert set(acc) == {64, T} and abs(acc[T] - ann_acc) <= 0.02


def test_reset_to_zero_has_larger_rate_error(trained):
    snn, x, _ = trained
    _, acts = ops.forward(snn, x, record=True)
    zero = snn.copy()
    for n in zero.of_type(ir.Neuron):
        n.model = "if-zero"
    T = 128
    soft = simulate(snn, x, [T], delay=0, record="neuron").activations(T)
    hard = simulate(zero, x, [T], delay=0, record="neuron").activations(T)
    for name in ("r1", "r2", "r3"):
        e_soft = float((soft[name] - acts[name]).abs().mean())
        e_hard = float((hard[name] - acts[name]).abs().mean())
        assert e_hard > 1.5 * e_soft, (name, e_soft, e_hard)


# ---- errors --------------------------------------------------------------------------------
def test_simulate_rejects_bad_input(trained):
    snn, x, _ = trained
    ann = graph_of(tiny_cnn())
    with pytest.raises(LoihiConvError, match="ReLU"):
        simulate(ann, x, [4])
    for ts in ([], [0], [4, -1], [4.5], ["8"]):
        with pytest.raises(LoihiConvError, match="timesteps"):
            simulate(snn, x, ts)
    with pytest.raises(LoihiConvError, match="input must be"):
        simulate(snn, x[:, :, :4], [4])
    with pytest.raises(LoihiConvError, match="delay"):
        simulate(snn, x, [4], delay=2)
    with pytest.raises(LoihiConvError, match="record"):
        simulate(snn, x, [4], record="everything")
    with pytest.raises(LoihiConvError, match="labels"):
        simulate(snn, x[:5], [4]).accuracy(torch.zeros(4, dtype=torch.long))
    bad = snn.copy()
    bad["r1"].model = "nope"
    with pytest.raises(LoihiConvError, match="if-soft"):
        simulate(bad, x, [4])
