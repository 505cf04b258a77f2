"""The neuron-model skeleton and registry (``NEURON_MODELS``) every float model file builds on.

A model is a small stateless class; its per-population state lives in a dict of batched torch
tensors so one model instance serves every ``ir.Neuron`` node that names it. Shapes: ``shape``
is the full batched shape of the population, (N, C, H, W) or (N, F); per-channel vectors
(``node.threshold``, ``node.v_init``) are (C,) and broadcast over the batch and positions.

Graded models (burst, multi-bit, buffered) return spikes in *units of the threshold*: an
integer-valued float per neuron and step (n burst spikes, a 2^k multi-bit spike, -1 for a
negative spike). The simulator multiplies them by ``theta`` as for 0/1 spikes, so
``counts * theta / T`` still estimates the activation; a recorded "count" is then the number of
threshold units sent, not of spike events.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.knobs import Knobs
from loihi_conv.base.registry import lookup, registrar
from loihi_conv.frontend import ir

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
    signed: ClassVar[bool] = False  # can send negative spikes (HPC eq. 13-14)
    knobs: ClassVar[Knobs] = {}  # ``params`` the recipe search may choose (``neuron_params``)

    @classmethod
    def max_units(cls, node: ir.Neuron) -> int:
        """Largest spike value per step in threshold units (the rate ceiling U)."""
        return 1

    @classmethod
    def threshold_scale(cls, node: ir.Neuron) -> float:
        """Factor on the normalized threshold lambda when a ReLU becomes this neuron."""
        return 1.0

    @classmethod
    def clip_floor(cls, node: ir.Neuron) -> bool:
        """Whether the output for a constant input is the calibration paper's ClipFloor of the
        charge with a ceiling of U per step (eq. 21), ``clip(floor(charge / theta), 0, U *
        window)``: the charge-conserving soft-reset models that can send every count up to U in
        one step. The ACP weights calibration models exactly this."""
        return False

    @classmethod
    def count_curve(cls, node: ir.Neuron, q: Tensor, window: int) -> Tensor | None:
        """Threshold units sent in ``window`` steps for a constant input of total charge ``q``
        thresholds (its per-step charge is ``q / window``), differentiable in ``q`` through the
        straight-through estimator; None when the model has no closed form. The ACP weights
        calibration (calibration paper eq. 23) fits this curve. Default: ClipFloor (eq. 21) for
        the ``clip_floor`` models."""
        if not cls.clip_floor(node):
            return None
        return floor_ste(q).clamp(0, window * cls.max_units(node))

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


def int_param(node: ir.Neuron, key: str, default: int, power_of_two: bool = False) -> int:
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
    probe = ir.Neuron("probe", (), model=model, params=dict(params or {}))
    return float(NEURON_MODELS[model].threshold_scale(probe))


def max_units(node: ir.Neuron) -> int:
    """Largest spike value per step in threshold units (the rate ceiling), for the ANN view."""
    return int(NEURON_MODELS[node.model].max_units(node))


def adjust(k: Tensor, s_max: int) -> Tensor:
    """HPC eq. 15: ``A(x) = 2^floor(log2(min(x, S_max)))`` elementwise, with ``A(0) = 0``."""
    return torch.exp2(torch.floor(torch.log2(k.clamp(0, s_max))))  # log2(0) = -inf -> 0


def has_count_curve(model: str, params: dict | None = None) -> bool:
    """Whether a ``model`` neuron with ``params`` has a closed-form ``count_curve``."""
    probe = ir.Neuron("probe", (), model=model, params=dict(params or {}))
    return NEURON_MODELS[model].count_curve(probe, torch.zeros(1), 1) is not None


def floor_ste(u: Tensor) -> Tensor:
    """floor with the straight-through gradient d floor(u)/du = 1 (calibration paper eq. 24)."""
    return u + (torch.floor(u) - u).detach()


class MultiUnit(NeuronModel):
    """Shared by models whose spikes carry up to ``params["s_max"]`` threshold units (a power of
    two): the threshold becomes lambda / S_max so the clipping level stays lambda (HPC eq. 16)."""

    default_s_max = 1

    @classmethod
    def max_units(cls, node: ir.Neuron) -> int:
        return int_param(node, "s_max", cls.default_s_max, power_of_two=True)

    @classmethod
    def threshold_scale(cls, node: ir.Neuron) -> float:
        return 1.0 / cls.max_units(node)

    def init_state(self, shape, node, dtype=torch.float32, device=None) -> State:
        state = super().init_state(shape, node, dtype, device)
        state["s_max"] = self.max_units(node)
        return state
