"""if-burst: up to Γ spikes per step, reset by subtraction. Integer form:
``fixed/softif_modes/if_burst.py``."""
from __future__ import annotations

import torch

from loihi_conv.base.knobs import Choice
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons.neuron_model import NeuronModel, State, Tensor, int_param, register_neuron


@register_neuron("if-burst")
class BurstIF(NeuronModel):
    """IF with burst spikes and reset by subtraction (Li & Zeng 2022 burst spikes, as used by
    SpiCalib §3.1 below eq. 3, Γ = 5 there): up to Γ spikes per step,

    ``V' = V(t-1) + z(t)``, ``n(t) = clip(floor(V'/theta), 0, Γ)``, ``V(t) = V' - n(t) theta``.
    Charge is conserved (``V(T) + theta Σn = V(0) + Σz``) and the rate ceiling is Γ, so
    activations up to ``Γ * theta`` are represented (the clipping error of SpiCalib eq. 6 shrinks).
    ``params["burst"]`` = Γ (default 5). The threshold keeps the normalized lambda.
    """

    knobs = {"burst": Choice((2, 3))}

    @staticmethod
    def max_units(node: ir.Neuron) -> int:
        return int_param(node, "burst", 5)

    @classmethod
    def clip_floor(cls, node: ir.Neuron) -> bool:
        return True

    def init_state(self, shape, node, dtype=torch.float32, device=None) -> State:
        state = super().init_state(shape, node, dtype, device)
        state["burst"] = torch.tensor(float(self.max_units(node)), dtype=dtype, device=device)
        return state

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes = state["v"], state["theta"], state["spikes"]
        v.add_(current)
        torch.div(v, theta, out=spikes).floor_().clamp_(min=0).clamp_(max=state["burst"])
        v.addcmul_(spikes, theta, value=-1.0)
        return spikes
