"""Clipped ReLUs (ReLU6, hardtanh(0, a), clamp(0, a)), x.mean((2, 3)), max-pools with padding and
ceil mode, depthwise convolutions, and the linear resampling layers (nearest Upsample /
interpolate, ConvTranspose2d, AdaptiveAvgPool2d to a larger output), each through as much of the
spine as it can go; and the refusals of what stays unsupported: one line per kind.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loihi_conv import api
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir, ops
from loihi_conv.frontend.prepare import prepare

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class Clipped(nn.Module):
    """MobileNet-like: ReLU6, a depthwise conv, hardtanh(0, a) and clamp(0, a); max-pool with
    padding and ceil mode; global average pool written as x.mean((2, 3))."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 6, 3, padding=1)
        self.act = nn.ReLU6()
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.c1 = nn.Conv2d(6, 4, 1)
        self.fc = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        x = self.act(self.c0(x))
        x = torch.clamp(self.dw(x), min=0, max=0.5)
        x = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
        x = F.hardtanh(self.c1(x), 0.0, 0.25)
        return self.fc(x.mean((2, 3)))


class Head(nn.Module):
    """A VGG/AlexNet classifier head on a small map: AdaptiveAvgPool2d replicates 2x2 to 3x3."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.fc = nn.Linear(4 * 9, 3, bias=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(F.relu(self.c0(x))), 1))


class Decoder(nn.Module):
    """U-Net-like: nearest upsampling and a transposed conv joined by a concatenation."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.ct = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.c1 = nn.Conv2d(7, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 3, bias=False)

    def forward(self, x):
        x = F.relu(self.c0(x))
        x = torch.cat([self.up(x), F.relu(self.ct(x))], 1)
        x = F.relu(self.c1(x))
        return self.fc(F.avg_pool2d(x, 2).flatten(1))


def _snn(model, shape, n=256):
    torch.manual_seed(0)
    calib = torch.rand(n, *shape)
    return calib, api.convert(model, calib, api.Recipe(calib_size=n, normalizer="max"))


def test_clipped_relus_trace_to_clipped_neurons_whose_threshold_is_the_clip():
    model = Clipped().eval()
    graph = prepare(model, (2, 8, 8))
    clips = {n.name: n.max_value for n in graph.of_type(ir.ClippedReLU)}
    assert sorted(clips.values()) == [0.25, 0.5, 6.0]
    x = torch.randn(4, 2, 8, 8)
    assert (ops.forward(graph, x) - model(x)).abs().max().item() < 1e-6
    with torch.no_grad():  # drive the layers far past their clips: thresholds stop at the clip
        model.c0.weight.mul_(30), model.dw.weight.mul_(30), model.c1.weight.mul_(30)
    _, snn = _snn(model, (2, 8, 8))
    for node in snn.of_type(ir.Neuron):
        assert float(node.threshold.max()) <= clips[node.name] + 1e-6
    assert float(snn["hardtanh"].threshold.min()) == pytest.approx(0.25)


@pytest.mark.parametrize("name", ["clipped", "head"])
def test_float_snn_fixed_point_and_emulator_follow_the_ann(name, follows_the_ann):
    model, shape = {"clipped": (Clipped(), (2, 8, 8)), "head": (Head(), (2, 4, 4))}[name]
    model.eval()
    calib, snn = _snn(model, shape)
    x = torch.rand(40, *shape)
    follows_the_ann(model, snn, x, calib)


def test_upsampling_decoder_runs_as_float_snn_and_is_refused_clearly_in_fixed_point():
    model = Decoder().eval()
    graph = prepare(model, (2, 8, 8))
    assert {type(n).__name__ for n in graph} >= {"Upsample", "ConvTranspose2d", "Concat"}
    calib, snn = _snn(model, (2, 8, 8))
    x = torch.rand(30, 2, 8, 8)
    ann = model(x)
    sim = api.simulate(snn, x, [512])
    assert (sim.mean_output(512) - ann).abs().max().item() < 0.05 * ann.abs().max().item()
    with pytest.raises(LoihiConvError, match="into a \\(C, H, W\\) population is no single convolution"):
        api.quantize(snn, "if-soft", timesteps=64, calib=calib)


@pytest.mark.parametrize("spelling", ["nn.Upsample", "F.interpolate", "UpsamplingNearest2d"])
def test_nearest_upsampling_spellings(spelling):
    up = {"nn.Upsample": nn.Upsample(scale_factor=(2, 3)), "UpsamplingNearest2d": nn.UpsamplingNearest2d(size=(6, 9)),
          "F.interpolate": None}[spelling]

    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.up, self.fc = nn.Conv2d(1, 2, 1), up, nn.Linear(2 * 6 * 9, 2)

        def forward(self, x):
            x = self.c(x)
            x = self.up(x) if self.up is not None else F.interpolate(x, scale_factor=(2, 3))
            return self.fc(x.flatten(1))

    model = Up().eval()
    graph = prepare(model, (1, 3, 3))
    assert [n.scale for n in graph.of_type(ir.Upsample)] == [(2, 3)]
    x = torch.randn(2, 1, 3, 3)
    assert (ops.forward(graph, x) - model(x)).abs().max().item() < 1e-6


@pytest.mark.lava
def test_depthwise_clipped_network_on_lava_equals_the_emulator(tmp_path):
    from loihi_conv.app.verify import verify

    model = Clipped().eval()
    calib, snn = _snn(model, (2, 8, 8), n=128)
    q = api.load(api.save(api.quantize(snn, "if-soft", timesteps=8, calib=calib), tmp_path / "dw.net"))
    assert any(getattr(s, "groups", 1) == 6 for b in q.blocks for s in b.synapses)  # depthwise on Lava
    ver = verify(q, calib[:1], 8)
    assert ver.total_compared > 1000 and ver.total_mismatches == 0


class Gated(nn.Module):
    """EfficientNet-like: SiLU everywhere, sigmoid gating (a product of activations)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2, 2, 1) for _ in range(5))
        self.act = nn.SiLU()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        for c in self.convs:
            y = self.act(c(x))
            x = y * torch.sigmoid(y.mean((2, 3), keepdim=True))
        return self.fc(x.mean((2, 3)))


def test_refusals_are_one_line_per_kind_with_count_first_place_and_fix():
    with pytest.raises(LoihiConvError) as info:
        prepare(Gated(), (2, 4, 4))
    problem, fix = info.value.problem, info.value.fix
    lines = problem.splitlines()
    assert lines[0] == "unsupported layers: 15 layer(s) of 3 kind(s):"
    assert len(lines) == 4
    silu = next(line for line in lines if "nn.SiLU" in line)
    assert silu.startswith("  - 5 layers, first 'act' (nn.SiLU) at ") and "test_layers_clip_resample.py:" in silu
    assert "fix: use ReLU or a clipped ReLU" in silu
    assert any("torch.sigmoid" in line and "5 layers" in line for line in lines)
    assert any("operator.mul" in line and "products of activations" in line for line in lines)
    assert "torch.cat(xs, 1)" in fix


class PoolChain(nn.Module):
    """GoogLeNet's pattern: a stem max-pool feeding both a conv and a 3x3/1 max-pool branch."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 4, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(4, 3, 1), nn.Conv2d(4, 3, 1)
        self.fc = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c0(x)), 3, 2, ceil_mode=True)
        x = torch.cat([F.relu(self.b1(x)), F.relu(self.b2(F.max_pool2d(x, 3, 1, 1, ceil_mode=True)))], 1)
        return self.fc(x.mean((2, 3)))


def test_a_max_pool_of_a_max_pool_merges_into_one_exact_pool_and_converts():
    from loihi_conv.frontend.pools import _merged

    rng = np.random.default_rng(0)
    merged = 0
    for _ in range(400):  # random pool pairs: a merge, when made, equals the pair on every input
        k, s, c = rng.integers(1, 5, 2), rng.integers(1, 4, 2), rng.integers(0, 2, 2).astype(bool)
        p = [int(rng.integers(0, kk // 2 + 1)) for kk in k]
        a = ir.MaxPool2d("a", ("x",), kernel_size=(int(k[0]),) * 2, stride=(int(s[0]),) * 2, padding=(p[0],) * 2,
                         ceil_mode=bool(c[0]))
        b = ir.MaxPool2d("b", ("a",), kernel_size=(int(k[1]),) * 2, stride=(int(s[1]),) * 2, padding=(p[1],) * 2,
                         ceil_mode=bool(c[1]))
        h = int(rng.integers(5, 13))
        x = torch.randn(2, 2, h, h)
        try:
            want = ops.apply(b, ops.apply(a, x))
        except RuntimeError:  # the pair does not fit this size
            continue
        m = _merged(a, b, (h, h))
        if m is not None:
            merged += 1
            assert torch.equal(ops.apply(m, x), want)
    assert merged > 150
    model = PoolChain().eval()
    graph = prepare(model, (2, 9, 9))
    pools = graph.of_type(ir.MaxPool2d)
    assert all(isinstance(graph[p.inputs[0]], ir.Neuron | ir.ReLU) for p in pools) and len(pools) == 2
    x = torch.randn(3, 2, 9, 9)
    assert (ops.forward(graph, x) - model(x)).abs().max().item() < 1e-6
    calib, snn = _snn(model, (2, 9, 9))
    q = api.quantize(snn, "if-soft", timesteps=32, calib=calib)
    assert sorted(s.pool.kernel for b in q.blocks for s in b.synapses if s.pool) == [(3, 3), (7, 7)]
