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

from typing import Callable, ClassVar

import torch

from loihi_conv import ir
from loihi_conv.errors import LoihiConvError

Tensor = torch.Tensor
State = dict[str, Tensor]

NEURON_MODELS: dict[str, type["NeuronModel"]] = {}


def register_neuron(name: str) -> Callable[[type["NeuronModel"]], type["NeuronModel"]]:
    """Class decorator: make a neuron model available under ``name`` (``ir.Neuron.model``)."""

    def deco(cls: type[NeuronModel]) -> type[NeuronModel]:
        cls.name = name
        NEURON_MODELS[name] = cls
        return cls

    return deco


def get_neuron_model(name: str) -> "NeuronModel":
    """The registered model called ``name``; a LoihiConvError lists the known names otherwise."""
    try:
        return NEURON_MODELS[name]()
    except KeyError:
        raise LoihiConvError(f"unknown neuron model {name!r}",
                             f"use one of: {', '.join(sorted(NEURON_MODELS))}") from None


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
