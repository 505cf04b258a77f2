"""Grouped convolutions with 128+ groups on Lava: Lava 0.10 keeps Conv's ``groups`` in an int8 Var
(128 wraps to -128, 256 to 0), which broke every depthwise conv and identity shortcut on 128+
channels (resnet18's layer2+); the builder merges groups (``lava_conv_groups``) so the sums stay
the same."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loihi_conv import api
from netx_export.weights import lava_conv_groups

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("groups, ci_g, co_g, merged", [(128, 1, 1, 64), (256, 1, 2, 64), (130, 2, 1, 65),
                                                        (254, 1, 1, 127), (64, 1, 1, 64)])
def test_merged_groups_give_the_same_sums(groups, ci_g, co_g, merged):
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (groups * co_g, ci_g, 3, 3))
    s = torch.from_numpy(rng.integers(0, 2, (2, groups * ci_g, 5, 5))).double()
    w2, g2 = lava_conv_groups(w, groups)
    assert g2 == merged and g2 <= 127 and w2.shape[1] * g2 == groups * ci_g
    want = F.conv2d(s, torch.from_numpy(w).double(), groups=groups, padding=1)
    got = F.conv2d(s, torch.from_numpy(w2).double(), groups=g2, padding=1)
    assert torch.equal(want, got) and np.count_nonzero(w2) == np.count_nonzero(w)


class Depthwise128(nn.Module):
    """1x1 conv to 128 channels, a 3x3 depthwise conv on them (groups=128), global mean, dense."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(2, 128, 1)
        self.dw = nn.Conv2d(128, 128, 3, padding=1, groups=128)
        self.fc = nn.Linear(128, 3)

    def forward(self, x):
        return self.fc(F.relu(self.dw(F.relu(self.c0(x)))).mean((2, 3)))


@pytest.mark.lava
def test_depthwise_conv_on_128_channels_runs_bit_exact_on_lava(tmp_path):
    from loihi_conv.app.verify import verify

    torch.manual_seed(0)
    model = Depthwise128().eval()
    calib = torch.rand(64, 2, 3, 3)
    snn = api.convert(model, calib, api.Recipe(calib_size=64, normalizer="max"))
    q = api.load(api.save(api.quantize(snn, "if-soft", timesteps=6, calib=calib), tmp_path / "dw128.net"))
    assert any(getattr(s, "groups", 1) == 128 for b in q.blocks for s in b.synapses)
    ver = verify(q, calib[:1], 6)
    assert ver.total_compared > 1000 and ver.total_mismatches == 0
