"""if-zero: integrate-and-fire with reset to zero (what Lava's CUBA LIF does)."""
from __future__ import annotations

import torch

from loihi_conv.frontend import ir
from loihi_conv.snn.neurons.neuron_model import NeuronModel, State, Tensor, register_neuron


@register_neuron("if-zero")
class ZeroResetIF(NeuronModel):
    """IF with reset to zero (Diehl et al. 2015; Rueckauer et al. 2016, eq. 4a):

    ``V(t) = (V(t-1) + z(t)) * (1 - S(t))``, ``S(t) = [V(t-1) + z(t) >= theta]``.
    The charge above threshold is lost at every spike, so rates are biased low (Rueckauer eq. 5).
    """

    @classmethod
    def count_curve(cls, node: ir.Neuron, q: Tensor, window: int) -> Tensor:
        # from v = 0, a per-step charge x = q / window thresholds fires every k = ceil(1 / x)
        # steps (the excess is lost at each reset): floor(window / k) spikes. Straight-through
        # gradient of the linear rate, as for ClipFloor.
        # (in place and outside autograd: the ACP weights calibration calls this on every
        # mini-batch of a layer's cached inputs)
        lin = q.clamp(0, window)
        with torch.no_grad():
            n = torch.tensor(float(window), dtype=q.dtype)
            count = torch.div(n, q.detach().clamp_min(1e-12))
            count.ceil_().clamp_min_(1)
            torch.div(n, count, out=count).floor_().masked_fill_(q <= 0, 0)
            count.sub_(lin)
        return lin + count

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes = state["v"], state["theta"], state["spikes"]
        v.add_(current)
        torch.ge(v, theta, out=spikes)
        v.addcmul_(v, spikes, value=-1.0)  # v -= v * spikes: exactly 0 where it spiked
        return spikes
