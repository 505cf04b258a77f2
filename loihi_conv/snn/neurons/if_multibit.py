"""if-multibit: shift-based multi-bit spikes (HPC eq. 14-15). Integer form:
``fixed/softif_modes/if_multibit.py``."""
from __future__ import annotations

import torch

from loihi_conv.base.knobs import Choice
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons.neuron_model import MultiUnit, State, Tensor, adjust, register_neuron


@register_neuron("if-multibit")
class MultiBitIF(MultiUnit):
    """IF with shift-based multi-bit spikes (HPC eq. 14 positive branch, eq. 15), soft reset:

    ``V' = V(t-1) + z(t)``, ``S(t) = A(floor(V'/theta))`` if ``V' >= theta`` else 0, with
    ``A(x) = 2^floor(log2(min(x, S_max)))``; ``V(t) = V' - S(t) theta``.
    Spike values are powers of two up to ``S_max`` (a shift on the receiving side). Representation
    power ``P = T * S_max`` (HPC eq. 16): ``to_snn`` sets ``theta = lambda / S_max`` so the
    clipping level stays lambda. ``params["s_max"]`` (power of two, default 2).
    Deviation: '>=' (as ``if-soft``) where the paper writes '>'.
    """

    default_s_max = 2
    knobs = {"s_max": Choice((2,))}  # 4 skips counts (3 units become a 2-spike), see clip_floor

    @classmethod
    def clip_floor(cls, node: ir.Neuron) -> bool:
        return cls.max_units(node) <= 2  # payloads {0, 1, 2} are every count; S_max=4 skips 3

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes = state["v"], state["theta"], state["spikes"]
        v.add_(current)
        spikes.copy_(adjust(torch.floor(v / theta), state["s_max"]))
        v.addcmul_(spikes, theta, value=-1.0)
        return spikes
