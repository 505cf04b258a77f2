"""if-soft: integrate-and-fire with reset by subtraction, binary spikes (the default model).
Integer form: ``fixed/softif_modes/if_soft.py``."""
from __future__ import annotations

import torch

from loihi_conv.frontend import ir
from loihi_conv.snn.neurons.neuron_model import NeuronModel, State, Tensor, register_neuron


@register_neuron("if-soft")
class SoftResetIF(NeuronModel):
    """IF with reset by subtraction (Rueckauer et al. 2016, eq. 4b):

    ``V(t) = V(t-1) + z(t) - theta * S(t)``, ``S(t) = [V(t-1) + z(t) >= theta]``.
    For a constant current ``0 <= z <= theta`` the count after T steps is
    ``floor((V(0) + T*z) / theta)``: the residual charge is carried over, so the rate error is
    at most one spike over the run (``theta/T`` in ANN units).
    """

    @classmethod
    def clip_floor(cls, node: ir.Neuron) -> bool:
        return True

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes = state["v"], state["theta"], state["spikes"]
        v.add_(current)
        torch.ge(v, theta, out=spikes)
        v.addcmul_(spikes, theta, value=-1.0)  # v -= spikes * theta, without a temporary
        return spikes
