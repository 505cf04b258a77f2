"""The emulator's fast paths (issue 18) give exactly what the general int64 paths give."""
import numpy as np
import pytest
import torch

from loihi_conv.emulate.neurons import DeltaRunner, SigmaDeltaRunner
from loihi_conv.emulate.synapses import ConvRunner
from loihi_conv.fixed.qir import Block, ConvSyn, Delta, SigmaDelta


def _run(runner, a_bound, inputs, fast):
    runner.reset(inputs[0].shape[0], a_bound)
    if not fast and runner.fast:
        runner._widen(runner.state_names)
    out = []
    for a in inputs:
        msg = runner.step(a)
        out.append((msg.clone(), {k: v.clone().to(torch.int64) for k, v in runner.states().items()}))
    return out, runner.fast


@pytest.mark.parametrize("vth,bias,a_bound,steps", [(37, 5, 2 ** 20, 12), (1, -1, 9000, 9),
                                                    (200, 0, 2 ** 26, 40)])
def test_sigma_delta_int32_path_equals_int64_path(vth, bias, a_bound, steps):
    g = torch.Generator().manual_seed(vth)
    shape = (3, 5, 4)
    block = Block("b", shape, bias=np.full(3, bias))
    inputs = [torch.randint(-a_bound, a_bound + 1, (6, *shape), generator=g, dtype=torch.int32)
              for _ in range(steps)]
    fast, fast_end = _run(SigmaDeltaRunner(SigmaDelta(vth=vth), block), a_bound, inputs, True)
    slow, _ = _run(SigmaDeltaRunner(SigmaDelta(vth=vth), block), a_bound, inputs, False)
    for (m1, s1), (m2, s2) in zip(fast, slow):
        assert m1.dtype == m2.dtype == torch.int32 and torch.equal(m1, m2)
        assert all(torch.equal(s1[k], s2[k]) for k in s2)
    if a_bound == 2 ** 26:
        assert not fast_end  # sigma's bound outgrew int32: the run widened mid-way and stayed exact
    assert any(bool(m.any()) for m, _ in fast)


def test_delta_int32_path_equals_int64_path():
    g = torch.Generator().manual_seed(1)
    block = Block("x", (1, 6, 6))
    inputs = [torch.randint(-255, 256, (4, 1, 6, 6), generator=g, dtype=torch.int32) for _ in range(7)]
    fast, f = _run(DeltaRunner(Delta(vth=3), block), 255, inputs, True)
    slow, _ = _run(DeltaRunner(Delta(vth=3), block), 255, inputs, False)
    assert f
    for (m1, s1), (m2, s2) in zip(fast, slow):
        assert torch.equal(m1, m2) and all(torch.equal(s1[k], s2[k]) for k in s2)


def test_conv_24bit_wrap_in_int32_equals_int64_wrap():
    g = torch.Generator().manual_seed(2)
    w = torch.randint(-128, 128, (4, 3, 3, 3), generator=g).numpy() * 64
    runner = ConvRunner(ConvSyn(source="a", weight=w, padding=(1, 1)), (3, 8, 8), (4, 8, 8))
    m = 2 ** 12  # bound = row_l1 * m: above 2^23 (the wrap happens), below 2^31 (int32 path)
    assert 2 ** 23 <= runner.bound(m) < 2 ** 31
    s = torch.randint(-m, m + 1, (5, 3, 8, 8), generator=g, dtype=torch.int32)
    got = runner._buffer(s, m)
    exact = torch.nn.functional.conv2d(s.double(), torch.from_numpy(w).double(), padding=1).long()
    want = ((exact + 2 ** 23) % 2 ** 24) - 2 ** 23
    assert got.dtype == torch.int32 and torch.equal(got.long(), want)
    assert bool((exact.abs() >= 2 ** 23).any())  # some sums really wrapped
