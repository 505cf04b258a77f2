"""cuba-lif: current-based leaky integrate-and-fire, the discrete neuron Loihi 2's CUBA LIF runs
(and what NIR's IF / LIF / CubaLIF / Threshold become on import, ``loihi_conv.interop``).

Per step, with the synapse input ``a`` (biases included) and per-channel threshold theta:

    u = (1 - du) * u + a
    v = (1 - dv) * v + u
    s = v > theta          (params["compare"] = "gt", NIR's and Lava's test; "ge": v >= theta)
    v = 0 where s          (params["reset"] = "zero", Lava's CUBA; "subtract": v -= theta * s)

``du``, ``dv`` are decay fractions in [0, 1] (Loihi stores them as integers of 1/4096):
``du = 1, dv = 0`` is plain IF, ``du = 1`` a LIF, ``dv = 1`` a stateless threshold unit.
"""
from __future__ import annotations

import numbers

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons.neuron_model import NeuronModel, State, Tensor, register_neuron

RESETS = ("zero", "subtract")
COMPARES = ("gt", "ge")


def decay(node: ir.Neuron, key: str, default: float) -> float:
    """``node.params[key]`` as a decay fraction in [0, 1], or a LoihiConvError."""
    value = node.params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise LoihiConvError(f"neuron {node.name!r} (cuba-lif): params[{key!r}]={value!r} must be a decay "
                             "fraction in [0, 1]", f"set e.g. params={{{key!r}: {default}}}")
    return float(value)


def choice(node: ir.Neuron, key: str, options: tuple[str, ...]) -> str:
    value = node.params.get(key, options[0])
    if value not in options:
        raise LoihiConvError(f"neuron {node.name!r} (cuba-lif): params[{key!r}]={value!r} is not one of "
                             f"{', '.join(options)}", f"set params[{key!r}] to one of {', '.join(options)}")
    return value


@register_neuron("cuba-lif")
class CubaLIF(NeuronModel):
    """Module doc. State: ``u`` (synaptic current), ``v`` (membrane), both starting at 0 (plus
    ``v_init * theta`` for v as in every model)."""

    def init_state(self, shape, node, dtype=torch.float32, device=None) -> State:
        state = super().init_state(shape, node, dtype, device)
        state["u"] = torch.zeros(shape, dtype=dtype, device=device)
        state["keep_u"] = 1.0 - decay(node, "du", 1.0)
        state["keep_v"] = 1.0 - decay(node, "dv", 0.0)
        state["subtract"] = choice(node, "reset", RESETS) == "subtract"
        state["strict"] = choice(node, "compare", COMPARES) == "gt"
        return state

    def step(self, state: State, current: Tensor) -> Tensor:
        u, v, theta, spikes = state["u"], state["v"], state["theta"], state["spikes"]
        u.mul_(state["keep_u"]).add_(current)
        v.mul_(state["keep_v"]).add_(u)
        (torch.gt if state["strict"] else torch.ge)(v, theta, out=spikes)
        if state["subtract"]:
            v.addcmul_(spikes, theta, value=-1.0)
        else:
            v.addcmul_(v, spikes, value=-1.0)  # exactly 0 where it spiked
        return spikes
