"""Event-stream inputs (N, T, C, H, W): a NIR network fed spikes frame by frame -- the float
simulation against the NIR reference, then the quantized network on the emulator and Lava."""
import importlib.util
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from loihi_conv.interop import load_nir
from loihi_conv.snn.simulate import simulate

_spec = importlib.util.spec_from_file_location("nir_reference_ev", Path(__file__).parent / "fixtures/nir/reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
T = 16


def _net():
    rng = np.random.default_rng(7)
    return nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([2, 6, 6])),
        "conv": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(0.4, 0.5, (3, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=np.zeros(3)),
        "lif": nir.LIF(tau=np.full((3, 6, 6), 4.0), r=np.full((3, 6, 6), 4.0), v_leak=np.zeros((3, 6, 6)),
                       v_threshold=np.full((3, 6, 6), 1.0)),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0),
        "fc": nir.Linear(weight=rng.normal(0.2, 0.4, (4, 27))),
        "out_if": nir.IF(r=np.ones(4), v_threshold=np.full(4, 1.5)),
        "output": nir.Output(output_type=np.array([4]))},
        edges=[("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"), ("flat", "fc"),
               ("fc", "out_if"), ("out_if", "output")], type_check=False)


def _events(n=3, seed=0):
    return (np.random.default_rng(seed).uniform(size=(n, T, 2, 6, 6)) < 0.3).astype(np.float32)


def test_event_stream_float_simulation_equals_the_nir_reference():
    g, x = _net(), _events()
    ref = reference.simulate(g, x)
    res = simulate(load_nir(g), torch.as_tensor(x), [T], delay=0, record="neuron")
    for name in ("lif", "out_if"):
        assert ref[name].sum() > 0
        np.testing.assert_array_equal(res.counts[T][name].numpy(), ref[name].sum(1), err_msg=name)
    static = simulate(load_nir(g), torch.as_tensor(x[:, 0]), [T], delay=0)
    assert not torch.equal(static.output[T], res.output[T])  # the frames do matter


@pytest.mark.lava
def test_event_stream_on_lava_matches_the_emulator():
    from loihi_conv.app.verify import verify
    from loihi_conv.fixed.quantize import quantize

    x = torch.as_tensor(_events(2, seed=1))
    qnet = quantize(load_nir(_net()), "cuba", timesteps=T, calib=x.reshape(-1, 2, 6, 6))
    ver = verify(qnet, x, T)
    assert ver.total_compared > 0 and ver.total_mismatches == 0, ver.table()
