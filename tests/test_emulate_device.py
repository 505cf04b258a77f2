"""emulate(device=...): cpu (by name, torch.device or None) gives the default run's results;
unknown names and cuda (no GPU here, and no CUDA path yet) are one clear error each."""
import numpy as np
import pytest
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.emulate import emulate, emulator_predictions
from loihi_conv.fixed import qir


def _net(rng):
    return qir.QNetwork([
        qir.Block("in", (6,)),
        qir.Block("a", (5,), [qir.DenseSyn("in", rng.integers(-60, 61, (5, 6)))], neuron=qir.SoftIF(vth=np.full(5, 20))),
        qir.Block("out", (3,), [qir.DenseSyn("a", rng.integers(-60, 61, (3, 5)))], neuron=qir.Readout()),
    ])


def test_cpu_device_equals_default():
    rng = np.random.default_rng(0)
    q, x = _net(rng), rng.integers(0, 30, (4, 6))
    want = emulate(q, x, 9)
    assert want.spike_counts["a"].sum() > 0
    for dev in ("cpu", torch.device("cpu"), None):
        got = emulate(q, x, 9, device=dev)
        assert np.array_equal(got.output, want.output) and np.array_equal(got.readout, want.readout)


def test_unknown_and_cuda_devices_are_one_clear_error():
    rng = np.random.default_rng(1)
    q, x = _net(rng), rng.integers(0, 30, (2, 6))
    with pytest.raises(LoihiConvError, match="unknown device 'tpu'"):
        emulate(q, x, 3, device="tpu")
    with pytest.raises(LoihiConvError, match="cuda"):  # no GPU here; with one: no CUDA path yet
        emulator_predictions(q, rng.random((2, 6)), 3, device="cuda")
