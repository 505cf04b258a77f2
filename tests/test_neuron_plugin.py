"""A neuron model added from outside the package, as docs/architecture.md describes: a float half
(``@register_neuron``) and an integer half (``register_mode``), nothing else. It must then
quantize for if-soft, emulate like its float SNN, and travel through the NetX extension."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loihi_conv.emulate import emulate
from loihi_conv.fixed.decode import encode
from loihi_conv.fixed.quantize import quantize
from loihi_conv.fixed.softif_modes import SOFTIF_MODES, SoftIFMode, register_mode
from loihi_conv.snn.neurons import NEURON_MODELS, NeuronModel, State, Tensor, int_param, register_neuron
from loihi_conv.snn.simulate import simulate
from netx_export.reader import load
from netx_export.writer import save

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

NAME = "if-pairs"


@pytest.fixture
def pairs_model():
    """Sends its threshold units two at a time: ``n = 2 floor(clip(floor(v / theta), 0, U) / 2)``
    with U = 2 * params['pairs'] (reset by subtraction, so a lone unit waits in v)."""

    @register_neuron(NAME)
    class PairsIF(NeuronModel):  # the float half (snn/neurons/<name>.py)
        @classmethod
        def max_units(cls, node) -> int:
            return 2 * int_param(node, "pairs", 1)

        def init_state(self, shape, node, dtype=torch.float32, device=None) -> State:
            state = super().init_state(shape, node, dtype, device)
            state["units"] = float(self.max_units(node))
            return state

        def step(self, state: State, current: Tensor) -> Tensor:
            v, theta, spikes = state["v"], state["theta"], state["spikes"]
            v.add_(current)
            torch.div(v, theta, out=spikes).floor_().clamp_(0, state["units"]).div_(2).floor_().mul_(2)
            v.addcmul_(spikes, theta, value=-1.0)
            return spikes

    def emulate_rule(q, vb, units, table):  # the integer half (fixed/softif_modes/<name>.py)
        return q.clamp_(0, units).div(2, rounding_mode="floor").mul_(2)

    def lava_rule(q, vb, units):
        return np.clip(q, 0, units) // 2 * 2

    register_mode(SoftIFMode(NAME, power_of_two=False, buffered=False, emulate=emulate_rule, lava=lava_rule))
    yield NAME
    del NEURON_MODELS[NAME], SOFTIF_MODES[NAME]


def test_a_two_file_neuron_model_runs_in_fixed_point(pairs_model, small_snn, tmp_path):
    graph = small_snn(pairs_model, {"pairs": 2})
    x = 2 * torch.rand(16, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    T = 32
    qnet = quantize(graph, "if-soft", T, calib=x)
    assert (qnet["n1"].neuron.mode, qnet["n1"].neuron.max_units) == (NAME, 4)
    sim = simulate(graph, x, [T], record="neuron")
    res = emulate(qnet, encode(qnet, x), sim.steps(T), record=["n1", "n2"])
    for name in ("n1", "n2"):
        payload = res.states[name]["s"]
        assert set(np.unique(payload)) <= {0, 2, 4} and payload.max() == 4  # pairs only, up to U
        units_q = payload.sum(1).astype(np.float64)
        units_f = sim.counts[T][name].double().numpy()
        assert np.corrcoef(units_q.ravel(), units_f.ravel())[0, 1] > 0.99, name
    back = load(save(qnet, tmp_path / "pairs.net"))
    assert (back["n2"].neuron.mode, back["n2"].neuron.max_units) == (NAME, 4)
    again = emulate(back, encode(back, x), sim.steps(T), record=["n2"])
    assert np.array_equal(again.states["n2"]["s"], res.states["n2"]["s"])
