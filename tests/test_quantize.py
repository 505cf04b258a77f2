"""Quantization: folding is exact, every target stays in Loihi's ranges with the documented
rounding bounds, overflow is refused (or forced), and quantized networks emulated bit-exactly
reproduce the float SNN (if-soft, cuba) or the ANN (sdnn)."""
import functools
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.emulate import emulate
from loihi_conv.emulate.quant_report import report
from loihi_conv.fixed import qir
from loihi_conv.fixed.quantize import QuantizeWarning, quantize
from loihi_conv.fixed.quantize.blocks import FBlock, FConv, FDense, block_input, fold, forward, region_value
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.simulate import simulate

STATE_MAX = 2 ** 23 - 1


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ---- graph builders -----------------------------------------------------------------------------
def _neuron(name, inp, c, gen, model="if-soft", lo=0.5, hi=1.5):
    th = lo + (hi - lo) * torch.rand(c, generator=gen)
    return ir.Neuron(name, (inp,), threshold=th, v_init=torch.zeros(c), model=model)


def _graph(nodes, out):
    g = ir.Graph({n.name: n for n in nodes}, out)
    return ops.infer_shapes(g)


def _w(gen, *shape, scale=0.3):
    return torch.randn(*shape, generator=gen) * scale


def residual_cnn(seed=0, model="if-soft"):
    """input 3x12x12 -> conv -> n1 -> avgpool -> conv -> n2 -> grouped conv -> n2b -> conv ->
    Add(., n2) -> n3 -> avgpool -> flatten -> linear output (main branch 2 hops, shortcut 1)."""
    g = torch.Generator().manual_seed(seed)
    nodes = [ir.Input("x", (), (3, 12, 12)),
             ir.Conv2d("c1", ("x",), weight=_w(g, 4, 3, 3, 3), bias=_w(g, 4, scale=0.1), padding=(1, 1)),
             _neuron("n1", "c1", 4, g, model),
             ir.AvgPool2d("p1", ("n1",), kernel_size=(2, 2), stride=(2, 2)),
             ir.Conv2d("c2", ("p1",), weight=_w(g, 6, 4, 3, 3), bias=_w(g, 6, scale=0.1), padding=(1, 1)),
             _neuron("n2", "c2", 6, g, model),
             ir.Conv2d("c3", ("n2",), weight=_w(g, 6, 3, 3, 3), bias=_w(g, 6, scale=0.1), padding=(1, 1), groups=2),
             _neuron("n2b", "c3", 6, g, model),
             ir.Conv2d("c4", ("n2b",), weight=_w(g, 6, 6, 3, 3, scale=0.2), bias=_w(g, 6, scale=0.1), padding=(1, 1)),
             ir.Add("a3", ("c4", "n2")),
             _neuron("n3", "a3", 6, g, model),
             ir.AvgPool2d("p3", ("n3",), kernel_size=(2, 2), stride=(2, 2)),
             ir.Flatten("f", ("p3",)),
             ir.Linear("fc", ("f",), weight=_w(g, 5, 54), bias=_w(g, 5, scale=0.1))]
    return _graph(nodes, "fc")


def mlp(seed=0, sizes=(16, 12, 8, 4), model="if-soft", wscale=0.3, bscale=0.1, th=(0.5, 1.5)):
    g = torch.Generator().manual_seed(seed)
    nodes, prev = [ir.Input("x", (), (sizes[0],))], "x"
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        nodes.append(ir.Linear(f"l{k}", (prev,), weight=_w(g, b, a, scale=wscale), bias=_w(g, b, scale=bscale)))
        prev = f"l{k}"
        if k < len(sizes) - 2:
            nodes.append(_neuron(f"n{k}", prev, b, g, model, *th))
            prev = f"n{k}"
    return _graph(nodes, prev)


def _check_fold(graph, n=5, seed=1):
    """Every folded block's synapses + bias equal the IR region on random source values."""
    blocks = fold(graph)
    gen = torch.Generator().manual_seed(seed)
    src = {b.name: torch.rand((n,) + tuple(b.shape), generator=gen, dtype=torch.float64) * 2 - 0.5
           for b in blocks if b.role != "output"}
    for b in blocks[1:]:
        pre = b.neuron.inputs[0] if b.neuron is not None else b.name
        ref = region_value(graph, pre, src)
        assert torch.allclose(block_input(b, src), ref, atol=1e-5, rtol=0), b.name
    return blocks


# ---- folding ---------------------------------------------------------------------------------------
POOL_CONV = [  # (H, pool k, pool s, conv k, conv stride, conv pad, dilation, groups)
    (12, 2, 2, 3, 1, 0, 1, 1), (12, 2, 2, 3, 1, 1, 1, 1), (12, 2, 2, 3, 2, 1, 1, 1), (13, 2, 2, 3, 1, 0, 1, 1),
    (12, 3, 3, 2, 1, 1, 1, 1), (13, 3, 2, 3, 1, 0, 1, 1), (12, 2, 2, 3, 1, 1, 2, 1), (12, 2, 2, 1, 1, 0, 1, 2),
    (12, 2, 2, 3, 1, 1, 1, 4), (11, 2, 1, 3, 2, 0, 1, 1),
]


@pytest.mark.parametrize("h,pk,ps,k,s,p,d,groups", POOL_CONV)
def test_pool_then_conv_folds_exactly(h, pk, ps, k, s, p, d, groups):
    gen = torch.Generator().manual_seed(h * 31 + pk + k)
    nodes = [ir.Input("x", (), (4, h, h)), ir.Conv2d("c0", ("x",), weight=_w(gen, 4, 4, 1, 1)),
             _neuron("n0", "c0", 4, gen),
             ir.AvgPool2d("p", ("n0",), kernel_size=(pk, pk), stride=(ps, ps)),
             ir.Conv2d("c", ("p",), weight=_w(gen, 8, 4 // groups, k, k), bias=_w(gen, 8), stride=(s, s),
                       padding=(p, p), dilation=(d, d), groups=groups),
             _neuron("n1", "c", 8, gen), ir.Flatten("f", ("n1",)),
             ir.Linear("o", ("f",), weight=_w(gen, 3, 8 * _out(_out(h, pk, ps, 0, 1), k, s, p, d) ** 2))]
    blocks = _check_fold(_graph(nodes, "o"))
    (syn,) = blocks[2].synapses
    assert isinstance(syn, FConv) and syn.groups == groups
    # The derived formula: kernel (k-1)*d*s_pool + k_pool, stride s_pool*s, padding p*s_pool.
    assert tuple(syn.weight.shape[2:]) == ((k - 1) * d * ps + pk,) * 2
    assert syn.stride == (ps * s,) * 2 and syn.padding == (p * ps,) * 2


def _out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def test_pool_then_padded_conv_that_cannot_fold_is_refused():
    # 13 rows pooled by 2 drop row 12, but the composite conv's padding would read it.
    gen = torch.Generator().manual_seed(0)
    nodes = [ir.Input("x", (), (2, 13, 13)), ir.Conv2d("c0", ("x",), weight=_w(gen, 2, 2, 1, 1)),
             _neuron("n0", "c0", 2, gen), ir.AvgPool2d("p", ("n0",)),
             ir.Conv2d("c", ("p",), weight=_w(gen, 2, 2, 3, 3), padding=(1, 1)), _neuron("n1", "c", 2, gen),
             ir.Flatten("f", ("n1",)), ir.Linear("o", ("f",), weight=_w(gen, 2, 72))]
    with pytest.raises(LoihiConvError, match="padding"):
        fold(_graph(nodes, "o"))


@pytest.mark.parametrize("pool,conv_ok", [(dict(padding=(1, 1)), True), (dict(ceil_mode=True), False),
                                          (dict(padding=(1, 1), count_include_pad=False), False)])
def test_padded_or_ceil_avgpool_folds_into_dense_and_into_conv_when_windows_are_uniform(pool, conv_ok):
    # Zero padding counted in the average (count_include_pad) divides every window by k^2, as a
    # zero-padded conv does; windows cut by ceil mode or averaging fewer inputs are still linear
    # (a dense matrix is exact) but no convolution kernel reproduces them.
    gen = torch.Generator().manual_seed(0)
    head = [ir.Input("x", (), (2, 7, 7)), ir.Conv2d("c0", ("x",), weight=_w(gen, 2, 2, 1, 1)),
            _neuron("n0", "c0", 2, gen), ir.AvgPool2d("p", ("n0",), **pool)]
    _check_fold(_graph(head + [ir.Flatten("f", ("p",)), ir.Linear("o", ("f",), weight=_w(gen, 2, 2 * 16))], "o"))
    conv = [ir.Conv2d("c", ("p",), weight=_w(gen, 2, 2, 1, 1)), _neuron("n1", "c", 2, gen),
            ir.Flatten("f", ("n1",)), ir.Linear("o", ("f",), weight=_w(gen, 2, 2 * 16))]
    if conv_ok:
        _check_fold(_graph(head + conv, "o"))
    else:
        with pytest.raises(LoihiConvError, match="AvgPool2d 'p'"):
            fold(_graph(head + conv, "o"))


def test_conv_then_pool_and_conv_then_conv_fold_exactly():
    gen = torch.Generator().manual_seed(3)
    nodes = [ir.Input("x", (), (3, 10, 10)),
             ir.Conv2d("c1", ("x",), weight=_w(gen, 5, 3, 3, 3), bias=_w(gen, 5), padding=(1, 1)),
             ir.AvgPool2d("p1", ("c1",)), _neuron("n1", "p1", 5, gen),
             ir.Conv2d("c2", ("n1",), weight=_w(gen, 4, 5, 3, 3), bias=_w(gen, 4)),
             ir.Conv2d("c3", ("c2",), weight=_w(gen, 6, 4, 2, 2), bias=_w(gen, 6), stride=(2, 2)),
             _neuron("n2", "c3", 6, gen), ir.Flatten("f", ("n2",)), ir.Linear("o", ("f",), weight=_w(gen, 2, 6))]
    blocks = _check_fold(_graph(nodes, "o"))
    assert tuple(blocks[1].synapses[0].weight.shape) == (5, 3, 4, 4)  # conv k3 then pool 2: (2-1)*1+3
    assert tuple(blocks[2].synapses[0].weight.shape) == (6, 5, 4, 4)  # (2-1)*1+3


def test_pool_flatten_linear_folds_into_dense_in_c_order():
    gen = torch.Generator().manual_seed(4)
    nodes = [ir.Input("x", (), (3, 8, 6)), ir.Conv2d("c", ("x",), weight=_w(gen, 4, 3, 3, 3), padding=(1, 1)),
             _neuron("n", "c", 4, gen), ir.AvgPool2d("p", ("n",), kernel_size=(2, 3), stride=(2, 3)),
             ir.Flatten("f", ("p",)), ir.Linear("o", ("f",), weight=_w(gen, 7, 4 * 4 * 2), bias=_w(gen, 7))]
    graph = _graph(nodes, "o")
    blocks = _check_fold(graph)
    (syn,) = blocks[-1].synapses
    assert isinstance(syn, FDense) and tuple(syn.weight.shape) == (7, 4 * 8 * 6)
    # Expanded over each pool window, divided by its area, in PyTorch C order (c, h, w).
    w = graph["o"].weight.double().reshape(7, 4, 4, 2)
    expect = w.repeat_interleave(2, 2).repeat_interleave(3, 3) / 6
    assert torch.allclose(syn.weight, expect.reshape(7, -1), atol=1e-12)


def test_residual_paths_become_fan_in_synapses():
    graph = residual_cnn()
    blocks = _check_fold(graph)
    n3 = blocks[4]
    assert [s.source for s in n3.synapses] == ["n2b", "n2"]
    ident = n3.synapses[1]  # identity shortcut: 1x1 depthwise conv of ones
    assert ident.groups == 6 and torch.equal(ident.weight, torch.ones(6, 1, 1, 1, dtype=torch.float64))
    assert torch.allclose(n3.bias, graph["c4"].bias.double())


def test_one_by_one_shortcut_vector_identity_and_bias_after_add_count_once():
    gen = torch.Generator().manual_seed(5)
    nodes = [ir.Input("x", (), (3, 6, 6)), ir.Conv2d("c1", ("x",), weight=_w(gen, 4, 3, 3, 3), padding=(1, 1)),
             _neuron("n1", "c1", 4, gen),
             ir.Conv2d("m", ("n1",), weight=_w(gen, 8, 4, 3, 3), stride=(2, 2), padding=(1, 1), bias=_w(gen, 8)),
             ir.Conv2d("sc", ("n1",), weight=_w(gen, 8, 4, 1, 1), stride=(2, 2), bias=_w(gen, 8)),
             ir.Add("a", ("m", "sc")), ir.Conv2d("after", ("a",), weight=_w(gen, 8, 8, 1, 1), bias=_w(gen, 8)),
             _neuron("n2", "after", 8, gen), ir.Flatten("f", ("n2",)),
             ir.Linear("l", ("f",), weight=_w(gen, 5, 72), bias=_w(gen, 5)), _neuron("n3", "l", 5, gen),
             ir.Linear("l2", ("n3",), weight=_w(gen, 5, 5), bias=_w(gen, 5)), ir.Add("a2", ("l2", "n3")),
             ir.Linear("o", ("a2",), weight=_w(gen, 3, 5))]
    blocks = _check_fold(_graph(nodes, "o"))
    assert [type(s).__name__ for s in blocks[2].synapses] == ["FConv", "FConv"]
    assert [type(s).__name__ for s in blocks[4].synapses] == ["FDense", "FDense"]


def test_maxpool_only_on_spikes_and_not_on_sdnn():
    # A spiking max-pool is a stage on a population's messages: after a synapse (on currents) it
    # has no meaning; sdnn's graded messages are activation changes, whose max is not a max-pool.
    gen = torch.Generator().manual_seed(0)
    on_current = [ir.Input("x", (), (2, 4, 4)), ir.Conv2d("c", ("x",), weight=_w(gen, 2, 2, 1, 1)),
                  ir.MaxPool2d("mp", ("c",)), _neuron("n", "mp", 2, gen), ir.Flatten("f", ("n",)),
                  ir.Linear("o", ("f",), weight=_w(gen, 2, 8))]
    with pytest.raises(LoihiConvError, match="MaxPool2d 'mp'"):
        quantize(_graph(on_current, "o"))
    on_spikes = [ir.Input("x", (), (2, 4, 4)), ir.Conv2d("c", ("x",), weight=_w(gen, 2, 2, 1, 1)),
                 _neuron("n", "c", 2, gen), ir.MaxPool2d("mp", ("n",)), ir.Flatten("f", ("mp",)),
                 ir.Linear("o", ("f",), weight=_w(gen, 2, 8))]
    qnet = quantize(_graph(on_spikes, "o"))
    assert qnet.output.synapses[0].pool.scheme == "mli"
    with pytest.raises(LoihiConvError, match="sdnn"):
        quantize(_graph(on_spikes, "o"), target="sdnn")


@settings(max_examples=30, deadline=None)
@given(h=st.integers(4, 11), pk=st.integers(1, 3), ps=st.integers(1, 3), k=st.integers(1, 3),
       s=st.integers(1, 2), p=st.integers(0, 1), seed=st.integers(0, 1000))
def test_random_pool_conv_chains_fold_exactly_or_are_refused(h, pk, ps, k, s, p, seed):
    gen = torch.Generator().manual_seed(seed)
    m = _out(h, pk, ps, 0, 1)
    if m < 1 or _out(m, k, s, p, 1) < 1:
        return
    nodes = [ir.Input("x", (), (2, h, h)), ir.Conv2d("c0", ("x",), weight=_w(gen, 2, 2, 1, 1)),
             _neuron("n0", "c0", 2, gen), ir.AvgPool2d("p", ("n0",), kernel_size=(pk, pk), stride=(ps, ps)),
             ir.Conv2d("c", ("p",), weight=_w(gen, 3, 2, k, k), bias=_w(gen, 3), stride=(s, s), padding=(p, p)),
             _neuron("n1", "c", 3, gen), ir.Flatten("f", ("n1",)),
             ir.Linear("o", ("f",), weight=_w(gen, 2, 3 * _out(m, k, s, p, 1) ** 2))]
    graph = _graph(nodes, "o")
    try:
        _check_fold(graph)
    except LoihiConvError:
        # Refused only where the derived condition says the padding would read real input.
        assert p > 0 and (pk > ps or m * ps < h)


# ---- integer mapping: ranges and rounding bounds ------------------------------------------------
def _expected(qnet, graph, target):
    """(W_int, W kappa sigma, sigma_o) per synapse, re-derived from docs/targets.md."""
    blocks = {b.name: b for b in fold(graph)}
    layers = qnet.meta["layers"]
    out = []
    for qb in qnet.blocks[1:]:
        fb, lm = blocks[qb.name], layers[qb.name]
        for qs, fs in zip(qb.synapses, fb.synapses):
            src = blocks[fs.source]
            if target == "sdnn":
                u_src = qnet.input_scale if src.role == "input" else layers[src.name]["scale"]
                kappa = torch.full((src.shape[0],), 1 / (64 * u_src), dtype=torch.float64)
                sigma = torch.full((fb.shape[0],), lm["scale"] * 4096.0, dtype=torch.float64)
            else:
                kappa = torch.full((src.shape[0],), 1 / qnet.input_scale, dtype=torch.float64) \
                    if src.role == "input" else src.threshold
                if target == "cuba" and fb.role == "hidden":
                    sigma = torch.tensor(lm["channel_sigma"], dtype=torch.float64)
                    exact = torch.isclose(sigma, lm["scale"] / fb.threshold, rtol=1e-12)
                    assert int((~exact).sum()) == lm["thresholds_raised"]  # the others: V / theta
                else:
                    sigma = torch.full((fb.shape[0],), float(lm["scale"]), dtype=torch.float64)
            w = fs.weight
            if isinstance(fs, FConv):
                co, cig = w.shape[:2]
                cin = torch.arange(co)[:, None] // (co // fs.groups) * cig + torch.arange(cig)[None, :]
                wk = w * kappa[cin][:, :, None, None]
            else:
                per = int(np.prod(src.shape[1:])) if len(src.shape) > 1 else 1
                wk = w * kappa.repeat_interleave(per)[None, :]
            view = sigma.reshape((-1,) + (1,) * (w.dim() - 1))
            out.append((torch.as_tensor(qs.weight, dtype=torch.float64), wk * view, view, qb, fb))
    return out


def _assert_in_range(qnet, graph, target, step=2):
    for wi, ws, sig, qb, fb in _expected(qnet, graph, target):
        assert wi.abs().max() <= 254 and bool((wi % step == 0).all())
        # Rounding only (searched scales never clip): |W_int/sigma - W kappa| <= step/2 / sigma.
        assert bool(((wi - ws).abs() <= step / 2 + 1e-9).all()), qb.name
        if isinstance(qb.synapses[0], qir.DenseSyn):
            w = wi.numpy()
            assert (w.min() < 0 < w.max() and w.min() >= -256 and w.max() <= 254) or (w.min() >= 0 < w.max() <= 255)
    for qb in qnet.blocks[1:]:
        if qb.bias is not None:
            assert np.abs(qb.bias).max() <= 4095
        n = qb.neuron
        if isinstance(n, qir.SoftIF):
            assert 1 <= n.vth.min() and n.vth.max() <= 131071
        if isinstance(n, (qir.Cuba, qir.SigmaDelta)):
            assert 0 <= n.vth <= 131071


def _normalize(graph, x, rel):
    """Thresholds = per-channel max ANN activation on ``x`` times ``rel`` (what data-based
    normalization produces; rel < 1 clips, rel > 1 under-uses the range)."""
    for n in graph.of_type(ir.Neuron):
        _, acts = ops.forward(graph, x, record=True)
        top = torch.relu(acts[n.inputs[0]]).amax(0).reshape(n.threshold.shape[0], -1).amax(1)
        # Silent channels take the layer's max, a silent layer 1 (as normalize.py does).
        top = torch.where(top > 0, top, torch.full_like(top, float(top.max()) if top.max() > 0 else 1.0))
        n.threshold = (top * rel).float()


def _random_net(seed, sizes, model, gains, brel, x, rel):
    """An MLP with layer gains ``gains`` (He-scaled weights times gain), biases ``brel`` times the
    spread of each layer's pre-activation on ``x``, thresholds normalized on ``x`` (``rel``):
    signals, biases and thresholds keep trained-network proportions at random scales."""
    graph = mlp(seed, sizes, model)
    g = torch.Generator().manual_seed(seed + 1)
    for lin, gain in zip(graph.of_type(ir.Linear), gains):
        fan_in = lin.weight.shape[1]
        lin.weight = torch.randn(lin.weight.shape, generator=g) * gain / fan_in ** 0.5
        lin.weight[0, 0], lin.weight[0, 1] = lin.weight.abs().max(), -lin.weight.abs().max()  # both signs
        lin.bias = torch.zeros(lin.weight.shape[0])
        _, acts = ops.forward(graph, x, record=True)
        lin.bias = torch.randn(lin.weight.shape[0], generator=g) * brel * float(acts[lin.name].std() + 1e-6)
        _normalize(graph, x, rel)
    return graph


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(["if-soft", "cuba", "sdnn"]), seed=st.integers(0, 10_000),
       gains=st.lists(st.floats(0.2, 5), min_size=3, max_size=3), brel=st.floats(0, 1), rel=st.floats(0.3, 3),
       xhi=st.floats(0.2, 4), n_in=st.integers(3, 20), n_h=st.integers(2, 16), calib=st.booleans(),
       step=st.sampled_from([1, 2]))
def test_every_target_stays_in_range_with_rounding_bounds(target, seed, gains, brel, rel, xhi, n_in, n_h,
                                                          calib, step):
    x = torch.rand(40, n_in, generator=torch.Generator().manual_seed(seed)) * xhi
    graph = _random_net(seed, (n_in, n_h, n_h, 3), "if-zero" if target == "cuba" else "if-soft", gains, brel,
                        x, rel)
    # A hidden layer silent on every sample makes the output constant: no scale can carry its
    # (absent) signal, and quantize rightly refuses the all-zero synapse after it.
    _, acts = ops.forward(graph, x, record=True)
    assume(all(float(acts[n.name].max()) > 0 for n in graph.of_type(ir.Neuron)))
    qnet = quantize(graph, target, 32, calib=x if calib else None, weight_step=step,
                    input_range=None if calib else (0.0, xhi))
    _assert_in_range(qnet, graph, target, step)
    assert [b.name for b in qnet.blocks] == ["x", "n0", "n1", "l2"]


@pytest.mark.parametrize("target", ["if-soft", "cuba", "sdnn"])
def test_thresholds_and_biases_obey_their_rounding_bounds(target):
    graph = residual_cnn(1, "if-zero" if target == "cuba" else "if-soft")
    graph.meta["recipe"] = {"neuron_model": "if-soft"}
    x = torch.rand(64, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    qnet = quantize(graph, target, 32, calib=x)
    _assert_in_range(qnet, graph, target)
    blocks = {b.name: b for b in fold(graph)}
    for qb in qnet.blocks[1:-1]:
        fb, s = blocks[qb.name], qnet.meta["layers"][qb.name]["scale"]
        if target == "if-soft":
            assert (np.abs(qb.neuron.vth / s - fb.threshold.numpy()) <= 0.5 / s + 1e-12).all()
            sig = s
        elif target == "cuba":
            assert qb.neuron.vth == s - 1  # Lava's '>' on multiples of 64 == '>=' at V
            sig = (s / fb.threshold).numpy()
        else:
            sig = s
        assert (np.abs(qb.bias / sig - fb.bias.numpy()) <= 0.5 / sig + 1e-12).all()
    assert qnet.meta["target"] == target and qnet.meta["layers"]["n3"]["path_hops"] == [4, 3]
    assert qnet.meta["recipe"] == {"neuron_model": "if-soft"} and json.loads(json.dumps(qnet.meta))
    assert "delay-mismatch" in qnet.meta["layers"]["n3"]["flags"]


def test_weight_error_shrinks_with_more_weight_bits():
    graph = residual_cnn(2)
    x = torch.rand(32, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    err = {wm: max(v["weight_rel_error"] for v in quantize(graph, "if-soft", 32, calib=x, weight_max=wm,
                                                           weight_step=1).meta["layers"].values())
           for wm in (15, 254)}
    assert err[254] < err[15] / 4
    # With 8-bit weights, the relative weight error is that of rounding about 7 bits.
    assert err[254] < 0.03


@pytest.mark.parametrize("target,model", [("cuba", "if-zero"), ("sdnn", "if-soft"), ("if-soft", "if-soft")])
def test_quantized_networks_pass_the_netx_checks_and_cuba_sdnn_are_standard(target, model):
    from netx_export import validate

    for graph in (mlp(0, model=model), residual_cnn(0, model)):
        x = torch.rand((32,) + tuple(graph.input.shape), generator=torch.Generator().manual_seed(0))
        qnet = quantize(graph, target, 32, calib=x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no hardware-limit warning either
            validate.check_structure(qnet)
            validate.check_ranges(qnet)
            validate.check_dense_exact(qnet, standard=True)
        reasons = validate.extension_reasons(qnet)
        if target == "if-soft":
            assert reasons and all("SoftIF" in r or "fan-in" in r for r in reasons)
        else:  # standard NetX, except the residual join's fan-in
            assert reasons == ([] if graph.input.shape == (16,) else ["'n3': 2 synapses (fan-in)"])


# ---- refusal ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["if-soft", "cuba"])
def test_a_channel_with_a_tiny_threshold_is_compromised_not_the_layer(target):
    graph = mlp(3, model="if-zero" if target == "cuba" else "if-soft")
    x = torch.rand(30, 16, generator=torch.Generator().manual_seed(3))
    _normalize(graph, x, 1.0)
    ref = quantize(graph, target, calib=x).meta["layers"]["n0"]
    graph["n0"].threshold[0] = 1e-5  # channel 0's weights are 10^5 thresholds
    qnet = quantize(graph, target, calib=x)
    lm = qnet.meta["layers"]["n0"]
    assert "threshold-raised" in lm["flags"]
    # The other channels keep most of their weight range (a shared scale may shift a little).
    others = np.abs(qnet["n0"].synapses[0].weight[1:]).max()
    assert others >= 64 and lm["scale"] >= ref["scale"] / 4
    if target == "if-soft":  # vth clamped to 1: a threshold ~4 orders of magnitude too high
        assert qnet["n0"].neuron.vth[0] == 1
    else:  # channel 0 scaled at its own limit instead of V/theta_0: full-range, unclipped ints
        w0 = np.abs(qnet["n0"].synapses[0].weight[0])
        assert lm["thresholds_raised"] >= 1 and 128 <= w0.max() <= 254


@pytest.mark.parametrize("target,block,scale,what", [
    ("if-soft", "n0", 1e7, "vThMant|clipped|bias"), ("cuba", "n1", 10 ** 6, "vThMant|clipped|bias"),
    ("if-soft", "l2", 1e6, "accumulat|clipped|bias"), ("sdnn", "n0", 1e6, "clipped|states|graded|bias")])
def test_scale_overrides_beyond_the_limits_are_refused_unless_forced(target, block, scale, what):
    graph = mlp(4, model="if-zero" if target == "cuba" else "if-soft")
    x = torch.rand(20, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(LoihiConvError, match=what) as info:
        quantize(graph, target, calib=x, scales={block: scale})
    assert f"'{block}'" in str(info.value) and "force=True" in str(info.value)
    with pytest.warns(QuantizeWarning):
        qnet = quantize(graph, target, calib=x, scales={block: scale}, force=True)
    assert qnet.meta["layers"][block]["scale"] == scale


def test_readout_that_would_wrap_over_a_long_run_is_refused():
    graph = mlp(5)
    x = torch.rand(20, 16, generator=torch.Generator().manual_seed(0))
    ok = quantize(graph, "if-soft", 64, calib=x)
    sigma = ok.meta["layers"]["l2"]["scale"]
    # The sigma chosen for T=64 accumulates past 2^23 over T=4096 steps.
    with pytest.raises(LoihiConvError, match="readout 'l2': the accumulated output"):
        quantize(graph, "if-soft", 4096, calib=x, scales={"l2": sigma})


def test_bad_arguments_are_refused():
    graph = mlp(0)
    with pytest.raises(LoihiConvError, match="unknown quantization target"):
        quantize(graph, "loihi3")
    with pytest.raises(LoihiConvError, match="unknown option"):
        quantize(graph, wieght_step=2)
    with pytest.raises(LoihiConvError, match="calibration data has shape"):
        quantize(graph, calib=torch.rand(4, 3, 4))
    with pytest.raises(LoihiConvError, match="neuron model 'if-zero'"):
        quantize(mlp(0, model="if-zero"), "if-soft")
    with pytest.raises(LoihiConvError, match="unknown block"):
        quantize(graph, scales={"conv9": 3.0})
    with pytest.raises(LoihiConvError, match="timesteps"):
        quantize(graph, timesteps=0)


# ---- emulated agreement ---------------------------------------------------------------------------
def _emulate(qnet, x, steps, record=()):
    return emulate(qnet, torch.round(x.double() * qnet.input_scale).long(), steps, record=list(record))


# Tolerances (T=128): soft reset carries the residual charge, so rates differ by the weight
# rounding (~1%) plus at most a spike per window; reset to zero loses it, so a neuron whose
# current sits near theta/k can jump between rates 1/k and 1/(k+1) on tiny weight errors.
AGREEMENT = {"if-soft": dict(rate=0.01, out=0.1, argmax=0.9), "cuba": dict(rate=0.05, out=0.25, argmax=0.8)}


@pytest.mark.parametrize("target,model", [("if-soft", "if-soft"), ("cuba", "if-zero")])
@pytest.mark.parametrize("seed", [0, 1])
def test_emulated_rates_and_outputs_match_the_float_snn(target, model, seed):
    graph = residual_cnn(seed, model)
    x, T = torch.rand(24, 3, 12, 12, generator=torch.Generator().manual_seed(seed)), 128
    qnet = quantize(graph, target, T, calib=x)
    sim = simulate(graph, x, [T], record="neuron")
    steps = sim.steps(T)
    assert steps == T + qnet.depth
    res = _emulate(qnet, x, steps, record=["fc"])
    tol = AGREEMENT[target]
    for name, counts in sim.counts[T].items():
        # Per neuron |rate_q - rate_f| (spikes per step over the window), averaged.
        diff = (torch.from_numpy(res.spike_counts[name]).double() - counts.double()) / sim.window(T, name)
        assert float(diff.abs().mean()) < tol["rate"], name
    out_q = res.states["fc"]["v"][:, -1] / qnet.output_scale  # v = u + bias<<6 (meta readout_state)
    out_f = sim.output[T].double().numpy()
    assert np.abs(out_q - out_f).mean() < tol["out"] * np.abs(out_f).mean()
    assert (out_q.argmax(1) == out_f.argmax(1)).mean() >= tol["argmax"]


def _dequantized_ann(qnet, graph):
    """The ANN an SDNN QNetwork computes, re-derived from its ints and meta scales
    (docs/targets.md): W = W_int u_src / (64 u), b = bias / u, output sigma / (u 2^12) + bias."""
    u = {"x": qnet.input_scale, **{k: v["scale"] for k, v in qnet.meta["layers"].items()}}
    blocks = fold(graph)
    out = []
    for b in blocks:
        if b.role == "input":
            out.append(b)
            continue
        qb = qnet[b.name]
        syns = [type(s)(**{**s.__dict__, "weight": torch.as_tensor(q.weight, dtype=torch.float64)
                           * u[s.source] / (64 * u[b.name])}) for s, q in zip(b.synapses, qb.synapses)]
        bias = torch.as_tensor(np.asarray(qnet.meta["output_bias"]), dtype=torch.float64).reshape(b.shape) \
            if b.role == "output" else torch.as_tensor(qb.bias, dtype=torch.float64) / u[b.name]
        out.append(FBlock(b.name, b.shape, b.role, syns, bias, b.neuron))
    return out


def test_sdnn_settles_on_its_quantized_ann_and_near_the_float_ann():
    graph = residual_cnn(7)
    x = torch.rand(30, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    qnet = quantize(graph, "sdnn", 16, calib=x)
    res = _emulate(qnet, x, qnet.depth + 4)
    out = res.output[:, -1] / qnet.output_scale + np.asarray(qnet.meta["output_bias"])
    xq = torch.round(x.double() * qnet.input_scale) / qnet.input_scale
    ann_q = forward(_dequantized_ann(qnet, graph), xq, clip=False)["fc"].numpy()
    ann = forward(fold(graph), x, clip=False)["fc"].numpy()
    # Up to the SigmaDelta truncation (one 2^-6 unit per change), the ints compute exactly the
    # quantized ANN. Quantization itself costs several %: with spike_exp=6 the weights are
    # W_int = 64 W u_l / u_src and the 16-bit payloads cap every u, so |W| ~ 0.3 gets ~5-6 bits.
    assert np.abs(out - ann_q).max() < 2e-3 * np.abs(ann_q).max()
    assert np.abs(out - ann).mean() < 0.12 * np.abs(ann).mean()
    assert (out.argmax(1) == ann.argmax(1)).mean() >= 0.9
    # It has settled: the output no longer changes after depth steps.
    assert np.array_equal(res.output[:, qnet.depth + 1], res.output[:, -1])


@functools.lru_cache(maxsize=1)
def _digits_mlp():
    """A 64-32-10 MLP trained on sklearn digits in about a second, as an SNN IR graph with
    max-activation thresholds."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(net(x[:1400]), y[:1400]).backward()
        opt.step()
    with torch.no_grad():
        th = torch.relu(net[0](x[:1400])).amax(0).clamp(min=1e-3)
    nodes = [ir.Input("x", (), (64,)),
             ir.Linear("l0", ("x",), weight=net[0].weight.detach().clone(), bias=net[0].bias.detach().clone()),
             ir.Neuron("n0", ("l0",), threshold=th, v_init=torch.zeros(32)),
             ir.Linear("l1", ("n0",), weight=net[2].weight.detach().clone(), bias=net[2].bias.detach().clone())]
    return _graph(nodes, "l1"), x[:1400:7], x[1400:], y[1400:]


@pytest.mark.parametrize("target", ["if-soft", "cuba", "sdnn"])
def test_trained_digits_mlp_keeps_its_classifications(target):
    graph, calib, x, y = _digits_mlp()
    graph = graph.copy()
    model = "if-zero" if target == "cuba" else "if-soft"
    graph["n0"].model = model
    T = 64
    qnet = quantize(graph, target, T, calib=calib)
    ann_pred = ops.forward(graph, x).argmax(1).numpy()
    if target == "sdnn":
        res = _emulate(qnet, x, qnet.depth + 2)
        ref = F.linear(torch.relu(F.linear(x, graph["l0"].weight, graph["l0"].bias)), graph["l1"].weight,
                       graph["l1"].bias).argmax(1).numpy()
        pred = (res.output[:, -1] / qnet.output_scale + np.asarray(qnet.meta["output_bias"])).argmax(1)
    else:
        sim = simulate(graph, x, [T])
        ref = sim.predictions(T).numpy()
        res = _emulate(qnet, x, sim.steps(T), record=["l1"])
        pred = res.states["l1"]["v"][:, -1].argmax(1)
    assert (pred == ref).mean() >= 0.95
    acc_ann = (ann_pred == y.numpy()).mean()
    assert acc_ann > 0.85 and (pred == y.numpy()).mean() > acc_ann - 0.05


# ---- report ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["if-soft", "cuba", "sdnn"])
def test_report_worst_case_bounds_contain_the_observed_states(target):
    graph = residual_cnn(8, "if-zero" if target == "cuba" else "if-soft")
    x = torch.rand(24, 3, 12, 12, generator=torch.Generator().manual_seed(8))
    qnet = quantize(graph, target, 32, calib=x)
    rep = report(qnet, calib=x)
    for lr in rep.layers:
        worst = {s.name: s for s in lr.worst}
        assert lr.observed, lr.name
        for s in lr.observed:
            assert not s.exceeds
            if s.name in worst:
                w = worst[s.name]
                assert w.lo <= s.lo and s.hi <= w.hi, (lr.name, s, w)
        assert lr.max_abs_weight <= 254 and lr.weight_bits <= 8  # Loihi's 8-bit weights
        assert 0 <= lr.weight_rel_error < 0.1
    assert "delay-mismatch" in rep["n3"].flags
    assert rep["n1"].sources == ["x"] and "n3" in str(rep)


def test_report_flags_forced_overflow_and_reset_approximation():
    graph = residual_cnn(9)  # if-soft neurons on the reset-to-zero target
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(9))
    ok = quantize(graph, "cuba", 32, calib=x)
    big = ok.meta["layers"]["fc"]["scale"] * 64
    with pytest.warns(QuantizeWarning):
        qnet = quantize(graph, "cuba", 32, calib=x, scales={"fc": big}, force=True)
    rep = report(qnet, calib=x)
    assert "model-approx" in rep["n1"].flags
    assert any("reset-to-zero" in n for n in rep.notes)
    assert any(f.startswith(("overflow:u", "wrap-risk:u")) for f in rep["fc"].flags)


@pytest.mark.parametrize("param,target,fix", [("clamp_steps", "cuba", "clamp_delay=0"),
                                               ("v0", "if-soft", "acp_granularity='channel'")])
def test_float_only_neuron_params_are_refused_by_exact_targets_and_flagged_by_cuba(param, target, fix):
    model = "if-zero" if target == "cuba" else "if-soft"  # exact on its target
    graph = mlp(model=model)
    n0 = graph["n0"]
    value = 3 if param == "clamp_steps" else torch.full(n0.shape, 0.1)
    graph.replace("n0", ir.clone_node(n0, params={**n0.params, param: value}))
    with pytest.raises(LoihiConvError, match="block 'n0'.*cannot run it exactly") as err:
        quantize(graph, target, timesteps=16)
    assert fix in str(err.value)
    soft = graph.copy()  # if-soft neurons: approximated on cuba, which drops and says so
    soft.replace("n0", ir.clone_node(n0, model="if-soft", params={**n0.params, param: value}))
    cuba = quantize(soft, "cuba", timesteps=16)
    assert "params-dropped" in cuba.meta["layers"]["n0"]["flags"]


def test_clamp_steps_become_softif_clamp_steps():
    graph = mlp()
    n0 = graph["n0"]
    graph.replace("n0", ir.clone_node(n0, params={**n0.params, "clamp_steps": 3}))
    qnet = quantize(graph, "if-soft", timesteps=16)
    assert qnet["n0"].neuron.clamp_steps == 3 and qnet["n1"].neuron.clamp_steps == 0
