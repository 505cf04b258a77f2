"""Float spiking neuron models for the float SNN simulator, registered by name.

A model is a small stateless class; its per-population state lives in a dict of batched torch
tensors so one model instance serves every ``ir.Neuron`` node that names it. Shapes: ``shape``
is the full batched shape of the population, (N, C, H, W) or (N, F); per-channel vectors
(``node.threshold``, ``node.v_init``) are (C,) and broadcast over the batch and positions.

Adding a model (multi-spike, burst, buffered IF, ...): subclass ``NeuronModel``, decorate it
with ``@register_neuron("name")``, and read any extra options from ``node.params`` in
``init_state``. Nothing else in the simulator changes: it only calls ``init_state`` and ``step``.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from loihi_conv import ir
from loihi_conv.errors import LoihiConvError
from loihi_conv.registry import lookup, registrar

Tensor = torch.Tensor
State = dict[str, Tensor]

NEURON_MODELS: dict[str, type["NeuronModel"]] = {}


register_neuron = registrar(NEURON_MODELS, "neuron model (``ir.Neuron.model``)")


def get_neuron_model(name: str) -> "NeuronModel":
    """The registered model called ``name``; a LoihiConvError lists the known names otherwise."""
    return lookup(NEURON_MODELS, name, "neuron model")()


def channel_view(vec: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A (C,) per-channel vector as (1, C, 1, ...) so it broadcasts against ``shape`` (N, C, ...)."""
    return vec.reshape((1, -1) + (1,) * (len(shape) - 2))


class NeuronModel:
    """Integrate-and-fire skeleton: ``v(0) = v_init * threshold``, ``v += current`` every step.

    Subclasses define ``step``. ``step`` mutates ``state`` in place and returns the spikes as a
    0/1 float tensor of the population's shape (the simulator multiplies them by the threshold).
    The returned tensor is the state's ``spikes`` buffer, overwritten by the next step: steps
    write into preallocated buffers (``out=`` / in-place ops) because on CPU the allocation of
    large temporaries, not the arithmetic, dominates a step.
    """

    name: ClassVar[str] = ""

    def init_state(self, shape: tuple[int, ...], node: ir.Neuron, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> State:
        """State for a population of batched ``shape`` (N, C, ...) described by ``node``."""
        theta = channel_view(node.threshold.to(dtype=dtype, device=device), shape)
        v_init = node.v_init if node.v_init is not None else torch.zeros_like(node.threshold)
        v0 = channel_view(v_init.to(dtype=dtype, device=device), shape) * theta
        if node.params.get("v0") is not None:  # absolute per-neuron offset (C, ...) in ANN units,
            v0 = v0 + torch.as_tensor(node.params["v0"], dtype=dtype, device=device)  # methods/calibrate ACP
        return {"v": v0.expand(shape).clone(), "theta": theta,
                "spikes": torch.empty(shape, dtype=dtype, device=device)}

    def step(self, state: State, current: Tensor) -> Tensor:
        raise NotImplementedError


@register_neuron("if-soft")
class SoftResetIF(NeuronModel):
    """IF with reset by subtraction (Rueckauer et al. 2016, eq. 4b):

    ``V(t) = V(t-1) + z(t) - theta * S(t)``, ``S(t) = [V(t-1) + z(t) >= theta]``.
    For a constant current ``0 <= z <= theta`` the count after T steps is
    ``floor((V(0) + T*z) / theta)``: the residual charge is carried over, so the rate error is
    at most one spike over the run (``theta/T`` in ANN units).
    """

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes = state["v"], state["theta"], state["spikes"]
        v.add_(current)
        torch.ge(v, theta, out=spikes)
        v.addcmul_(spikes, theta, value=-1.0)  # v -= spikes * theta, without a temporary
        return spikes


@register_neuron("if-zero")
class ZeroResetIF(NeuronModel):
    """IF with reset to zero (Diehl et al. 2015; Rueckauer et al. 2016, eq. 4a):

    ``V(t) = (V(t-1) + z(t)) * (1 - S(t))``, ``S(t) = [V(t-1) + z(t) >= theta]``.
    The charge above threshold is lost at every spike, so rates are biased low (Rueckauer eq. 5).
    """

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes = state["v"], state["theta"], state["spikes"]
        v.add_(current)
        torch.ge(v, theta, out=spikes)
        v.addcmul_(v, spikes, value=-1.0)  # v -= v * spikes: exactly 0 where it spiked
        return spikes


# ---- beyond plain IF: burst, multi-bit and buffered neurons ------------------------------------
# These models return spikes in *units of the threshold*: an integer-valued float per neuron and
# step (n burst spikes, a 2^k multi-bit spike, -1 for a negative spike). The simulator multiplies
# them by ``theta`` as for 0/1 spikes, so ``counts * theta / T`` still estimates the activation;
# a recorded "count" is then the number of threshold units sent, not of spike events.
def _int_param(node: ir.Neuron, key: str, default: int, power_of_two: bool = False) -> int:
    """``node.params[key]`` as a positive int (a power of two if asked), or a LoihiConvError."""
    value = node.params.get(key, default)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if ok and power_of_two:
        ok = value & (value - 1) == 0
    if not ok:
        kind = "a power of two" if power_of_two else "a positive integer"
        raise LoihiConvError(f"neuron {node.name!r} ({node.model}): params[{key!r}]={value!r} must be {kind}",
                             f"set e.g. params={{{key!r}: {default}}}")
    return value


def threshold_scale(model: str, params: dict) -> float:
    """Factor applied to the normalized threshold lambda when a ReLU becomes a ``model`` neuron.

    1 for unit-spike models; ``1/S_max`` for multi-bit models, whose quantization boundary is
    ``lambda^b = theta * S_max`` (HPC eq. 16): the clipping level stays lambda and the resolution
    becomes ``lambda / P`` with representation power ``P = T * S_max``.
    """
    cls = NEURON_MODELS[model]
    probe = ir.Neuron("probe", (), model=model, params=dict(params or {}))
    return float(cls.threshold_scale(probe)) if hasattr(cls, "threshold_scale") else 1.0


def max_units(node: ir.Neuron) -> int:
    """Largest spike value per step in threshold units (the rate ceiling), for the ANN view."""
    cls = NEURON_MODELS[node.model]
    return int(cls.max_units(node)) if hasattr(cls, "max_units") else 1


def adjust(k: Tensor, s_max: int) -> Tensor:
    """HPC eq. 15: ``A(x) = 2^floor(log2(min(x, S_max)))`` elementwise, with ``A(0) = 0``."""
    return torch.exp2(torch.floor(torch.log2(k.clamp(0, s_max))))  # log2(0) = -inf -> 0


@register_neuron("if-burst")
class BurstIF(NeuronModel):
    """IF with burst spikes and reset by subtraction (Li & Zeng 2022 burst spikes, as used by
    SpiCalib §3.1 below eq. 3, Γ = 5 there): up to Γ spikes per step,

    ``V' = V(t-1) + z(t)``, ``n(t) = clip(floor(V'/theta), 0, Γ)``, ``V(t) = V' - n(t) theta``.
    Charge is conserved (``V(T) + theta Σn = V(0) + Σz``) and the rate ceiling is Γ, so
    activations up to ``Γ * theta`` are represented (the clipping error of SpiCalib eq. 6 shrinks).
    ``params["burst"]`` = Γ (default 5). The threshold keeps the normalized lambda.
    """

    @staticmethod
    def max_units(node: ir.Neuron) -> int:
        return _int_param(node, "burst", 5)

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


class _MultiUnit(NeuronModel):
    """Shared by models whose spikes carry up to ``params["s_max"]`` threshold units (a power of
    two): the threshold becomes lambda / S_max so the clipping level stays lambda (HPC eq. 16)."""

    default_s_max = 1

    @classmethod
    def max_units(cls, node: ir.Neuron) -> int:
        return _int_param(node, "s_max", cls.default_s_max, power_of_two=True)

    @classmethod
    def threshold_scale(cls, node: ir.Neuron) -> float:
        return 1.0 / cls.max_units(node)

    def init_state(self, shape, node, dtype=torch.float32, device=None) -> State:
        state = super().init_state(shape, node, dtype, device)
        state["s_max"] = self.max_units(node)
        return state


@register_neuron("if-multibit")
class MultiBitIF(_MultiUnit):
    """IF with shift-based multi-bit spikes (HPC eq. 14 positive branch, eq. 15), soft reset:

    ``V' = V(t-1) + z(t)``, ``S(t) = A(floor(V'/theta))`` if ``V' >= theta`` else 0, with
    ``A(x) = 2^floor(log2(min(x, S_max)))``; ``V(t) = V' - S(t) theta``.
    Spike values are powers of two up to ``S_max`` (a shift on the receiving side). Representation
    power ``P = T * S_max`` (HPC eq. 16): ``to_snn`` sets ``theta = lambda / S_max`` so the
    clipping level stays lambda. ``params["s_max"]`` (power of two, default 2).
    Deviation: '>=' (as ``if-soft``) where the paper writes '>'.
    """

    default_s_max = 2

    def step(self, state: State, current: Tensor) -> Tensor:
        v, theta, spikes = state["v"], state["theta"], state["spikes"]
        v.add_(current)
        spikes.copy_(adjust(torch.floor(v / theta), state["s_max"]))
        v.addcmul_(spikes, theta, value=-1.0)
        return spikes


@register_neuron("if-buffered")
class BufferedIF(_MultiUnit):
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


from loihi_conv import spicalib  # noqa: E402,F401  (registers "spicalib"; it builds on the models above)
