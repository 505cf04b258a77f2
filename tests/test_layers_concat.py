"""Channel concatenation (torch.cat dim 1) through the whole spine: float IR (with per-channel ops
pushed in front of it, ``frontend.concat``), float SNN, fixed point, emulator and Lava.

Small random networks in the shapes real ones use: a SqueezeNet fire (two ReLU branches
concatenated, then a ceil-mode max-pool), a DenseNet layer (BatchNorm + ReLU on the concatenation
of a conv output and an earlier feature map) and an Inception join of branches at different
scales (each concatenated population keeps its own per-channel thresholds).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loihi_conv import api
from loihi_conv.frontend import ir, ops
from loihi_conv.frontend.prepare import prepare

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class Fire(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.e1, self.e3 = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 5, 3, padding=1)
        self.c2 = nn.Conv2d(8, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 2 * 2, 4, bias=False)

    def forward(self, x):
        x = F.relu(self.c0(x))
        x = torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)
        x = F.max_pool2d(x, 2, 1, ceil_mode=True)
        return self.fc(torch.flatten(F.relu(self.c2(x)), 1))


class Dense(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.c1 = nn.Conv2d(4, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(7)
        self.c2 = nn.Conv2d(7, 5, 1)
        self.fc = nn.Linear(5, 3, bias=False)

    def forward(self, x):
        a = F.relu(self.c0(x))
        x = torch.cat([a, self.c1(a)], dim=1)  # a feature map and a conv output (DenseNet)
        x = self.c2(F.relu(self.bn(x)))
        return self.fc(F.adaptive_avg_pool2d(F.relu(x), 1).flatten(1))


class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(2, 3, 1)
        self.b2 = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(7, 3, bias=False)

    def forward(self, x):
        x = torch.cat((F.relu(self.b1(x)), F.relu(self.b2(x))), -3)
        return self.fc(x.mean((2, 3)))


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
    return model.eval()


NETS = {"fire": Fire, "dense": Dense}


@pytest.mark.parametrize("name", NETS)
def test_float_ir_equals_the_model_and_concat_feeds_only_synapses(name):
    model = _randomize_bn(NETS[name]())
    graph = prepare(model, (2, 6, 6))
    x = torch.randn(5, 2, 6, 6)
    assert (ops.forward(graph, x) - model(x)).abs().max().item() < 1e-5
    # per-channel ops were pushed in front of every concatenation: what reads one is a synapse
    for cat in graph.of_type(ir.Concat):
        assert all(isinstance(u, (ir.Conv2d, ir.Linear, ir.Concat)) for u in graph.users(cat.name)), cat.name
    if name == "dense":  # the BN on the concatenation became two per-input affine pieces + ReLUs
        assert len(graph.of_type(ir.ReLU)) == 4
        assert {type(n).__name__ for n in graph if n.name.startswith("bn_part")} == {"Conv2d"}


def test_concat_of_branches_at_different_scales_keeps_per_channel_thresholds():
    model = Inception().eval()
    with torch.no_grad():
        model.b2.weight.mul_(20.0)  # branch 2 lives at a 20x larger scale
    snn = api.convert(model, torch.rand(256, 2, 5, 5), api.Recipe(calib_size=256, normalizer="max"))
    th = {n.name: n.threshold for n in snn.of_type(ir.Neuron)}
    assert len(th) == 2 and max(th.values(), key=lambda t: t.max()).min() > 2 * min(t.max() for t in th.values())
    x = torch.rand(30, 2, 5, 5)
    sim = api.simulate(snn, x, [512])
    ann = model(x)
    assert (sim.mean_output(512) - ann).abs().max().item() < 0.02 * ann.abs().max().item()


@pytest.mark.parametrize("name", NETS)
def test_float_snn_at_large_T_approaches_the_ann_and_fixed_point_follows(name, follows_the_ann):
    torch.manual_seed(0)
    model = _randomize_bn(NETS[name]())
    calib = torch.rand(256, 2, 6, 6)
    snn = api.convert(model, calib, api.Recipe(calib_size=256, normalizer="max"))
    x = torch.rand(40, 2, 6, 6)
    follows_the_ann(model, snn, x, calib)


@pytest.mark.lava
def test_concat_network_on_lava_equals_the_emulator(tmp_path):
    from loihi_conv.app.verify import verify

    torch.manual_seed(1)
    model = Fire().eval()
    calib = torch.rand(128, 2, 6, 6)
    snn = api.convert(model, calib, api.Recipe(calib_size=128, normalizer="max"))
    q = api.load(api.save(api.quantize(snn, "if-soft", timesteps=8, calib=calib), tmp_path / "fire.net"))
    # the concatenation became fan-in synapses of the standard kind plus spiking max-pool stages
    assert [len(b.synapses) for b in q.blocks] == [0, 1, 1, 1, 2, 1]
    ver = verify(q, calib[:1], 8)
    assert ver.total_compared > 1000 and ver.total_mismatches == 0


class SqueezeHead(nn.Module):
    """SqueezeNet's classifier: conv -> ReLU -> global average pool is the output (no Linear)."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 6, 3, padding=1)
        self.e1, self.e3 = nn.Conv2d(6, 3, 1), nn.Conv2d(6, 3, 3, padding=1)
        self.cls = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        x = F.relu(self.c0(x))
        x = torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(F.relu(self.cls(x)), 1), 1)


def test_a_relu_then_average_pool_output_reads_out_a_spiking_population(follows_the_ann):
    torch.manual_seed(2)
    model = SqueezeHead().eval()
    calib = torch.rand(256, 2, 6, 6)
    snn = api.convert(model, calib, api.Recipe(calib_size=256, normalizer="max"))
    assert isinstance(snn[snn.output], ir.Flatten) and len(snn.of_type(ir.Neuron)) == 4
    x = torch.rand(40, 2, 6, 6)
    q = follows_the_ann(model, snn, x, calib)
    assert q.blocks[-1].synapses[0].source == "relu_3"  # the pool is the readout synapse
