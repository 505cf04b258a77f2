"""Observers (exact streaming statistics), normalizers, and the ANN -> SNN rewrite."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.normalize import NORMALIZERS, get_normalizer, to_snn
from loihi_conv.convert.observe import OBSERVERS, MaxObserver, PercentileObserver, make_observer, observe
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread", "seeded")  # fixtures in conftest.py


# ---- helpers -------------------------------------------------------------------------------
def small_graph(seed: int = 0, bias: bool = True) -> ir.Graph:
    """x(2,6,6) -> conv3 -> ReLU -> avgpool -> flatten -> fc -> ReLU -> fc(5)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    graph = ir.Graph({
        "x": ir.Input("x", (), (2, 6, 6)),
        "c1": ir.Conv2d("c1", ("x",), weight=rnd(4, 2, 3, 3) * 0.5, bias=rnd(4) * 0.2 if bias else None,
                        padding=(1, 1)),
        "r1": ir.ReLU("r1", ("c1",)),
        "p1": ir.AvgPool2d("p1", ("r1",)),
        "f": ir.Flatten("f", ("p1",)),
        "l1": ir.Linear("l1", ("f",), weight=rnd(12, 36) * 0.4, bias=rnd(12) * 0.2 if bias else None),
        "r2": ir.ReLU("r2", ("l1",)),
        "out": ir.Linear("out", ("r2",), weight=rnd(5, 12) * 0.5, bias=rnd(5) * 0.1 if bias else None),
    }, "out")
    return ops.infer_shapes(graph)


def residual_graph(seed: int = 0) -> ir.Graph:
    """x -> c1 -> r1 -> c2 -> r2 -> c3 -(+ r1 identity shortcut)-> r3 -> flatten -> fc."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    graph = ir.Graph({
        "x": ir.Input("x", (), (1, 5, 5)),
        "c1": ir.Conv2d("c1", ("x",), weight=rnd(3, 1, 3, 3) * 0.6, bias=rnd(3) * 0.1, padding=(1, 1)),
        "r1": ir.ReLU("r1", ("c1",)),
        "c2": ir.Conv2d("c2", ("r1",), weight=rnd(3, 3, 3, 3) * 0.3, bias=rnd(3) * 0.1, padding=(1, 1)),
        "r2": ir.ReLU("r2", ("c2",)),
        "c3": ir.Conv2d("c3", ("r2",), weight=rnd(3, 3, 3, 3) * 0.3, bias=rnd(3) * 0.1, padding=(1, 1)),
        "add": ir.Add("add", ("c3", "r1")),
        "r3": ir.ReLU("r3", ("add",)),
        "f": ir.Flatten("f", ("r3",)),
        "out": ir.Linear("out", ("f",), weight=rnd(4, 75) * 0.3, bias=rnd(4) * 0.1),
    }, "out")
    return ops.infer_shapes(graph)


def relu_outputs(graph: ir.Graph, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per ReLU: values as (C, N*positions) numpy."""
    _, acts = ops.forward(graph, x, record=True)
    return {r.name: acts[r.name].transpose(0, 1).reshape(acts[r.name].shape[1], -1).numpy()
            for r in graph.of_type(ir.ReLU)}


def batches(x: torch.Tensor, sizes: list[int]):
    start = 0
    for s in sizes:
        yield x[start:start + s]
        start += s


# ---- observers -----------------------------------------------------------------------------
@pytest.mark.parametrize("p", [50.0, 99.0, 99.9, 99.99, 100.0])
@pytest.mark.parametrize("nonzero", [False, True])
def test_streaming_percentile_is_exact(p, nonzero):
    gen = torch.Generator().manual_seed(int(p * 10) + nonzero)
    x = torch.relu(torch.randn(300, 3, 7, 5, generator=gen) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1))
    x[:, 1] = x[:, 1] ** 3  # a heavy tail
    obs = PercentileObserver(max_samples=400, p=p, nonzero=nonzero)  # a loose bound is still exact
    for b in batches(x, [1, 64, 100, 35, 100]):
        obs.update(b)
    per_c = x.transpose(0, 1).reshape(3, -1).numpy().astype(np.float64)
    pick = (lambda v: v[v > 0]) if nonzero else (lambda v: v)
    want_c = [np.percentile(pick(v), p) for v in per_c]
    want_l = np.percentile(pick(per_c.ravel()), p)
    np.testing.assert_allclose(obs.channel().numpy(), want_c, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(obs.layer()), want_l, rtol=1e-6, atol=1e-7)
    # the top-k buffer is small for high p
    if p >= 99.9:
        assert obs._channel.top.shape[1] < 0.01 * per_c.shape[1]


def test_max_observer_and_registry():
    x = torch.randn(50, 4, 3, 3)
    obs = make_observer("max", max_samples=50)
    assert isinstance(obs, MaxObserver) and {"max", "percentile"} <= set(OBSERVERS)
    for b in batches(x, [20, 30]):
        obs.update(b)
    assert torch.equal(obs.channel(), x.amax(dim=(0, 2, 3)))
    assert float(obs.layer()) == float(x.max())
    with pytest.raises(ValueError):
        obs.update(x[:1])  # beyond max_samples: the exactness bound would be broken
    with pytest.raises(LoihiConvError, match="max, percentile"):
        make_observer("histogram", max_samples=1)
    with pytest.raises(LoihiConvError, match="percentile"):
        PercentileObserver(max_samples=1, p=100.5)


def test_observe_sees_pre_and_post_and_caps_samples():
    graph = small_graph()
    x = torch.rand(90, 2, 6, 6)
    stats = observe(graph, batches(x, [40, 40, 10]), {"max": ("max", {})}, max_samples=64)
    assert stats.n_samples == 64
    _, acts = ops.forward(graph, x[:64], record=True)
    assert torch.allclose(stats.channel("r1", "max", "pre"), acts["c1"].amax(dim=(0, 2, 3)))
    assert torch.allclose(stats.channel("r1", "max", "post"), acts["r1"].amax(dim=(0, 2, 3)))
    assert torch.allclose(stats.channel("r2", "max", "post"), acts["r2"].amax(dim=0))


# ---- normalizers ---------------------------------------------------------------------------
def thresholds_for(name: str, graph: ir.Graph, x: torch.Tensor, **opts) -> dict[str, torch.Tensor]:
    norm = get_normalizer(name, **opts)
    return norm.thresholds(observe(graph, [x], norm.observers(), max_samples=len(x), sites=("post",)))


def test_channel_and_layer_thresholds_match_their_definitions():
    graph = small_graph()
    x = torch.rand(200, 2, 6, 6)
    vals = relu_outputs(graph, x)
    p = 99.9
    ch_p = thresholds_for("percentile", graph, x, percentile=p, granularity="channel", nonzero=True)
    ly_p = thresholds_for("percentile", graph, x, percentile=p, granularity="layer", nonzero=True)
    ch_m = thresholds_for("max", graph, x, granularity="channel")
    ly_m = thresholds_for("max", graph, x, granularity="layer")
    for relu, v in vals.items():
        live = v.max(axis=1) > 0
        want = np.array([np.percentile(row[row > 0], p) if ok else np.nan for row, ok in zip(v, live)])
        np.testing.assert_allclose(ch_p[relu].numpy()[live], want[live], rtol=1e-5)
        np.testing.assert_allclose(ch_m[relu].numpy()[live], v.max(axis=1)[live], rtol=1e-6)
        # layer-wise max is the max over channels; a layer-wise value is shared by all channels
        assert torch.allclose(ly_m[relu], ch_m[relu].max().expand_as(ly_m[relu]))
        np.testing.assert_allclose(ly_p[relu].numpy(), np.percentile(v[v > 0], p), rtol=1e-5)
        # percentile clips outliers: never above max, and here strictly below in some channel
        assert bool((ch_p[relu] <= ch_m[relu] + 1e-6).all()) and bool((ch_p[relu] < ch_m[relu]).any())
        assert bool((ch_p[relu] > 0).all())


def test_percentile_100_is_max_norm_and_registry_errors():
    graph = small_graph(1)
    x = torch.rand(64, 2, 6, 6)
    a = thresholds_for("percentile", graph, x, percentile=100.0)
    b = thresholds_for("max", graph, x)
    for k in a:
        assert torch.allclose(a[k], b[k])
    assert set(NORMALIZERS) >= {"max", "percentile"}
    with pytest.raises(LoihiConvError, match="use one of: .*max.*percentile") as err:
        get_normalizer("kl-divergence")
    assert all(name in str(err.value) for name in NORMALIZERS)  # lists every registered one
    with pytest.raises(LoihiConvError, match="granularity"):
        get_normalizer("max", granularity="neuron")


def test_silent_channel_takes_the_layer_threshold():
    graph = small_graph()
    graph["c1"].weight[2] = 0.0
    graph["c1"].bias[2] = -1.0  # channel 2 never fires
    x = torch.rand(50, 2, 6, 6)
    th = thresholds_for("max", graph, x)["r1"]
    _, acts = ops.forward(graph, x, record=True)
    assert float(th[2]) == pytest.approx(float(acts["r1"].max()))
    assert bool((th > 0).all())


# ---- to_snn --------------------------------------------------------------------------------
def test_to_snn_replaces_relus_in_place_of_order():
    graph = small_graph()
    snn = to_snn(graph, {"r1": torch.tensor([0.5, 1.0, 1.5, 2.0]), "r2": 0.75}, "if-zero", v_init=0.5)
    assert list(snn.nodes) == list(graph.nodes)
    assert graph.of_type(ir.ReLU) and not snn.of_type(ir.ReLU)  # the input graph is untouched
    r1, r2 = snn["r1"], snn["r2"]
    assert isinstance(r1, ir.Neuron) and r1.model == "if-zero" and r1.inputs == ("c1",)
    assert torch.equal(r2.threshold, torch.full((12,), 0.75)) and torch.equal(r2.v_init, torch.full((12,), 0.5))
    assert torch.equal(to_snn(graph, {"r1": 1.0, "r2": 1.0})["r1"].v_init, torch.zeros(4))
    with pytest.raises(LoihiConvError, match="no threshold for ReLU node"):
        to_snn(graph, {"r1": 1.0})
    with pytest.raises(LoihiConvError, match="positive"):
        to_snn(graph, {"r1": torch.tensor([1.0, 0.0, 1.0, 1.0]), "r2": 1.0})
    with pytest.raises(LoihiConvError, match="4 positive"):
        to_snn(graph, {"r1": torch.ones(3), "r2": 1.0})
    with pytest.raises(LoihiConvError, match="if-soft"):
        to_snn(graph, {"r1": 1.0, "r2": 1.0}, "izhikevich")


# ---- threshold amplitudes == Rueckauer weight normalization ---------------------------------
def weight_normalized(graph: ir.Graph, lam: dict[str, torch.Tensor], src: dict[str, torch.Tensor]) -> ir.Graph:
    """Rueckauer eq. W' = W * lam_in / lam_out, b' = b / lam_out; every neuron at threshold 1.

    ``src[synapse]`` is lam of the population feeding that synapse, per input feature."""
    g = graph.copy()
    for name, lam_in in src.items():
        node = g[name]
        users = [u.name for u in g.users(name)]
        lam_out = lam[users[0]] if users and users[0] in lam else torch.ones(node.weight.shape[0])  # readout: 1
        shape = (-1, 1) + (1,) * (node.weight.dim() - 2)
        node.weight = node.weight * lam_in.view((1, -1) + (1,) * (node.weight.dim() - 2)) / lam_out.view(shape)
        if node.bias is not None:
            node.bias = node.bias / lam_out
    return to_snn(g, {k: torch.ones_like(v) for k, v in lam.items()})


@pytest.mark.parametrize("delay", [0, 1])
def test_threshold_amplitude_equals_weight_normalization(delay):
    """Power-of-two lambdas make the rescaling exact in floating point: identical spike trains."""
    graph = small_graph(2)
    lam = {"r1": torch.tensor([0.25, 0.5, 1.0, 2.0]), "r2": 2.0 ** torch.tensor([-2, -1, 0, 1] * 3).float()}
    src = {"c1": torch.ones(2), "l1": lam["r1"].repeat_interleave(9), "out": lam["r2"]}  # flatten: C*H*W
    a = to_snn(graph, lam)
    b = weight_normalized(graph, lam, src)
    x = torch.rand(16, 2, 6, 6)
    ts = list(range(1, 41))  # counts after every step == identical spike trains
    ra = simulate(a, x, ts, delay=delay, record="neuron")
    rb = simulate(b, x, ts, delay=delay, record="neuron")
    for T in ts:
        for n in ("r1", "r2"):
            assert torch.equal(ra.counts[T][n], rb.counts[T][n])
        assert torch.allclose(ra.output[T], rb.output[T], rtol=1e-5, atol=1e-5)
    assert float(ra.counts[40]["r2"].sum()) > 50


def test_residual_join_equals_hu_shortcut_normalization():
    """Hu et al. 2018: main path scaled by lam2/lam3, identity shortcut by lam1/lam3 (a diagonal
    1x1 conv), all neurons at threshold 1 -- identical to one threshold on the joint neuron."""
    graph = residual_graph()
    lam = {"r1": torch.tensor([0.5, 1.0, 2.0]), "r2": torch.tensor([1.0, 0.25, 0.5]),
           "r3": torch.tensor([2.0, 0.5, 1.0])}
    a = to_snn(graph, lam)
    hu = graph.copy()
    hu.nodes = {k: v for k, v in hu.nodes.items()}
    shortcut = ir.Conv2d("sc", ("r1",), weight=torch.diag(lam["r1"] / lam["r3"]).view(3, 3, 1, 1))
    nodes = {}
    for k, v in hu.nodes.items():
        if k == "add":
            nodes["sc"] = shortcut
            v.inputs = ("c3", "sc")
        nodes[k] = v
    hu.nodes = nodes
    hu = ops.infer_shapes(hu)
    src = {"c1": torch.ones(1), "c2": lam["r1"], "c3": lam["r2"], "out": lam["r3"].repeat_interleave(25)}
    lam_by_user = dict(lam)
    b = weight_normalized(hu, lam_by_user, {k: v for k, v in src.items() if k != "c3"})
    # c3 feeds the Add, whose user is r3: scale it by lam2/lam3 explicitly
    b["c3"].weight = graph["c3"].weight * lam["r2"].view(1, -1, 1, 1) / lam["r3"].view(-1, 1, 1, 1)
    b["c3"].bias = graph["c3"].bias / lam["r3"]
    x = torch.rand(12, 1, 5, 5)
    ts = list(range(1, 31))
    for delay in (0, 1):
        ra = simulate(a, x, ts, delay=delay, record="neuron")
        rb = simulate(b, x, ts, delay=delay, record="neuron")
        for T in ts:
            for n in ("r1", "r2", "r3"):
                assert torch.equal(ra.counts[T][n], rb.counts[T][n]), (delay, T, n)
        assert float(ra.counts[30]["r3"].sum()) > 20
