"""if-buffered: buffered IF with negative spikes (HPC eq. 12-14). Integer form:
``fixed/softif_modes/if_buffered.py``."""
from __future__ import annotations

import torch

from loihi_conv.base.knobs import Choice
from loihi_conv.snn.neurons.neuron_model import MultiUnit, State, Tensor, adjust, register_neuron


@register_neuron("if-buffered")
class BufferedIF(MultiUnit):
    """Buffered non-leaky IF with negative spikes (HPC eq. 12-14):

    ``V' = V(t-1) + z(t)``;
    ``S(t) = A(floor(V'/theta))``                          if ``V' >= theta``,
    ``S(t) = -A(min(ceil(-V'/theta), floor(V^b(t-1)/theta)))`` if ``V' < 0``, else 0;
    ``V(t) = V' - S(t) theta``, ``V^b(t) = V^b(t-1) + theta S(t)`` (eq. 12), ``V^b(1) = 0``.
    A negative spike retracts an earlier spike whose charge the membrane no longer holds, which
    cancels over-firing (eq. 4 over-fire); ``V^b`` (the net charge sent) never goes negative.
    ``params["s_max"]`` (power of two, default 1): 1 is eq. 13 (unit +-1 spikes), >1 eq. 14
    (multi-bit, ``theta = lambda / S_max`` as for ``if-multibit``).
    Deviations: '>=' where the paper writes '>'; ``ceil`` instead of eq. 14's ``floor(V'/-theta)``
    in the negative branch, so that S_max=1 reduces to eq. 13 (a floor would leave every
    ``-theta < V' < 0`` uncancelled).
    """

    default_s_max = 1
    signed = True
    knobs = {"s_max": Choice((1, 2))}

    def init_state(self, shape, node, dtype=torch.float32, device=None) -> State:
        state = super().init_state(shape, node, dtype, device)
        state["buffer"] = torch.zeros(shape, dtype=dtype, device=device)  # V^b / theta (net units sent)
        return state

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes, buf, s_max = state["v"], state["theta"], state["spikes"], state["buffer"], state["s_max"]
        v.add_(current)
        units = v / theta
        positive = adjust(torch.floor(units), s_max)  # 0 below threshold
        negative = adjust(torch.minimum(torch.ceil(-units), torch.floor(buf)), s_max)  # 0 unless V' < 0
        torch.sub(positive, negative, out=spikes)
        v.addcmul_(spikes, theta, value=-1.0)
        buf.add_(spikes)
        return spikes
