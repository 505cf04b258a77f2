"""Spiking max-pool schemes (loihi_conv.snn.pooling) and their dispatch in the simulator.

Spike trains come from if-soft neurons driven by constant currents, so every input neuron has a
known rate. Layout: (N, C, H, W) everywhere, spike trains (T, N, C, H, W).
"""
import pytest
import torch
import torch.nn.functional as F

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.normalize import to_snn
from loihi_conv.frontend import ir
from loihi_conv.frontend.ops import forward, infer_shapes
from loihi_conv.snn.neurons import get_neuron_model
from loihi_conv.snn.pooling import get_pooling
from loihi_conv.snn.simulate import simulate

POOL = ir.MaxPool2d("p", ("n",), kernel_size=(3, 3), stride=(2, 2), ceil_mode=True)  # overlapping


def spike_trains(rates: torch.Tensor, T: int) -> torch.Tensor:
    """0/1 trains (T, *rates.shape) of if-soft neurons with constant current ``rates`` (theta 1)."""
    node = ir.Neuron("n", (), model="if-soft", threshold=torch.ones(rates.shape[1]))
    m = get_neuron_model("if-soft")
    state = m.init_state(tuple(rates.shape), node)
    return torch.stack([m.step(state, rates).clone() for _ in range(T)])


def pooled(scheme: str, trains: torch.Tensor, node: ir.MaxPool2d = POOL) -> torch.Tensor:
    s = get_pooling(scheme)
    state = s.init_state(node, trains[0])
    return torch.stack([s.step(node, state, x) for x in trains])


def li_reference(trains: torch.Tensor, node: ir.MaxPool2d) -> torch.Tensor:
    """MLIPooling written as in SpiCalib §3.4: a private copy of each block's neurons (unfold),
    u += x, o = max_j u, u -= o. Ceil mode: zero padding right/bottom."""
    n, c, h, w = trains.shape[1:]
    out_h, out_w = F.max_pool2d(trains[0], node.kernel_size, node.stride, ceil_mode=node.ceil_mode).shape[2:]
    k, s = node.kernel_size[0], node.stride[0]
    pad_h, pad_w = (out_h - 1) * s + k - h, (out_w - 1) * s + k - w
    u, outs = None, []
    for x in trains:
        blocks = F.unfold(F.pad(x, (0, pad_w, 0, pad_h)).reshape(n * c, 1, h + pad_h, w + pad_w), k, stride=s)
        u = blocks if u is None else u + blocks
        o = u.amax(1, keepdim=True)
        u = u - o
        outs.append(o.reshape(n, c, out_h, out_w))
    return torch.stack(outs)


def test_mli_output_equals_max_rate_for_overlapping_ceil_windows():
    T = 512
    rates = torch.rand(4, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    out = pooled("mli", spike_trains(rates, T))
    want = F.max_pool2d(rates, 3, 2, ceil_mode=True)
    assert out.shape[1:] == want.shape == (4, 3, 5, 5)
    assert ((out.sum(0) / T - want).abs() <= 1 / T + 1e-6).all()
    # The stateless max of spikes over-counts (union of the window's spike trains).
    naive = pooled("spike-max", spike_trains(rates, T)).sum(0) / T
    assert (naive - want).mean() > 0.1


def test_mli_matches_per_block_lateral_inhibition():
    trains = spike_trains(torch.rand(2, 2, 7, 8, generator=torch.Generator().manual_seed(1)), 40)
    assert torch.allclose(pooled("mli", trains), li_reference(trains, POOL), atol=1e-6)


def test_rate_gate_tracks_max_rate():
    # Well separated rates: the gate settles on the fastest neuron of each window. (With close
    # rates the EWMA gate switches between near-equal neurons and over-counts: approximate.)
    T = 400
    rates = torch.full((1, 1, 5, 5), 0.2)
    for (i, j), r in {(1, 1): 0.9, (1, 3): 0.6, (3, 1): 0.7, (3, 4): 0.5}.items():
        rates[0, 0, i, j] = r
    out = pooled("rate-gate", spike_trains(rates, T))
    want = F.max_pool2d(rates, 3, 2, ceil_mode=True)
    assert ((out.sum(0) / T - want).abs() < 0.05).all()
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # passes spikes, never invents graded values


def test_avg_replacement_passes_the_window_mean_rate_not_the_max():
    T = 256
    rates = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    out = pooled("avg", spike_trains(rates, T)).sum(0) / T
    mean = F.avg_pool2d(rates, 3, 2, ceil_mode=True)
    assert ((out - mean).abs() <= 1 / T + 1e-6).all()
    assert (F.max_pool2d(rates, 3, 2, ceil_mode=True) - out).mean() > 0.2  # what it loses vs max


def _pool_graph() -> ir.Graph:
    g = torch.Generator().manual_seed(3)
    nodes = {"x": ir.Input("x", (), (1, 8, 8)),
             "c": ir.Conv2d("c", ("x",), weight=torch.randn(4, 1, 3, 3, generator=g), bias=None, padding=(1, 1)),
             "n": ir.ReLU("n", ("c",)),
             "p": ir.MaxPool2d("p", ("n",), kernel_size=(3, 3), stride=(2, 2), ceil_mode=True),
             "f": ir.Flatten("f", ("p",)),
             "o": ir.Linear("o", ("f",), weight=torch.randn(5, 64, generator=g), bias=None)}
    return infer_shapes(ir.Graph(nodes, "o"))


@pytest.mark.parametrize("delay", [0, 1])
def test_simulator_dispatches_maxpool_to_recipe_scheme(delay):
    ann = _pool_graph()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    snn = to_snn(ann, {"n": forward(ann, x, record=True)[1]["n"].amax((0, 2, 3)).clamp(min=0.1)})
    ref = forward(snn, x)  # ANN with ReLU clipped at the thresholds and a true max-pool
    T = 256
    errs = {}
    for scheme in ("mli", "spike-max"):
        snn.meta["recipe"] = {"max_pool": scheme}
        errs[scheme] = float((simulate(snn, x, [T], delay=delay).mean_output(T) - ref).abs().mean())
    assert errs["mli"] < 0.1 * errs["spike-max"]
    snn.meta["recipe"] = {"max_pool": "nope"}
    with pytest.raises(LoihiConvError, match="max-pool scheme"):
        simulate(snn, x, [4])
