"""Target ``if-soft``: the loihi-conv SoftIF neuron (reset by subtraction, per-channel vth).

One scale sigma per layer (``sigma_o = sigma``): ``W_int = round(W theta_in sigma)``,
``bias = round(b sigma)``, ``vth[o] = round(theta_out[o] sigma)``, ``v_init[o] =
round(v_init[o] vth[o])``. Dividing the SoftIF update ``v += (a << 6) + (bias << 6)``,
``s = v >= vth << 6``, ``v -= s (vth << 6)`` by ``64 sigma`` gives back the float if-soft neuron
(Rueckauer et al. 2016, eq. 4b) up to rounding, so spike trains match the float SNN as long as
no state saturates. sigma is the grid point in [sigma_max/2, sigma_max] with the smallest
threshold-normalized pre-activation error (``common.relative_error``).

Graded spikes: the float models ``if-burst``, ``if-multibit`` and ``if-buffered`` send n
threshold units per step (``loihi_conv.snn.neurons``); ``qir.SoftIF(mode=model, max_units=U)``
computes the same n from ``q = floor(v / (vth << 6))`` in integers and sends it as a graded
spike, so the next layer's ``a = sum W_int n`` is the float ``sum W (n theta)`` times sigma: the
weights keep ``W theta sigma`` per unit. The search accounts for the larger payload: sources
send up to U units per step ([-U, U] for negative spikes), a neuron holds up to ``U vth`` before
it sends them, and the rate metric clips at U thresholds (``spiking.message_range``).

Step-counted float features map one to one (``neuron_fields``): voltage clamping
(``params['clamp_steps']``, ``Recipe.clamp_delay``) becomes ``SoftIF.clamp_steps``, and a
``spicalib`` neuron becomes its base model's SoftIF mode with ``spicalib_beta = beta`` (an
integer: the fixed-point monitor compares step counts exactly, loihi_conv/snn/neurons/spicalib.py). Its
payload may be one unit lower (-1, the twin synapse), which ``spiking.message_range`` gives the
search.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.limits import GRADED_UNITS_MAX
from loihi_conv.fixed import qir
from loihi_conv.fixed.softif_modes import SOFTIF_MODES
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons import spicalib
from loihi_conv.snn.neurons.cuba_lif import RESETS, choice, decay

from .blocks import FBlock
from .common import DT, Context, Problem, geometric_grid, register_target
from .spiking import hidden_candidate, message_range, quantize_spiking


class SoftIFRule:
    """One sigma per layer; per-channel vth = round(theta sigma) (module doc). Every float model
    maps to the SoftIF mode of the same name (binary 'if-soft', graded others)."""
    name = "if-soft"
    exact_params = frozenset({"clamp_steps"})  # spiking.FLOAT_ONLY_PARAMS that SoftIF holds

    @property
    def models(self) -> dict[str, str]:
        # every SoftIF payload mode runs the float model of its name; SpiCalib runs on its base's
        # (read at use: a mode registered later, e.g. by a plug-in, is known too)
        return {**{mode: "exact" for mode in SOFTIF_MODES}, "spicalib": "exact", "cuba-lif": "exact"}

    def scales(self, block: FBlock, data, limit: torch.Tensor, opts) -> tuple[list, list]:
        top = float(limit.min())
        return geometric_grid(top, opts.grid), geometric_grid(top / 2, 1, 8)[1:]

    def candidate(self, block: FBlock, data, scale, opts):
        theta = block.threshold
        sigma = torch.full((block.channels,), float(scale), dtype=DT)
        # A channel whose weights exceed 254 vth at the layer's scale gets vth = 1 (flagged).
        vth = torch.round(theta * scale).clamp(min=1)
        v0 = block.neuron.v_init
        v_init = None
        if v0 is not None and bool((v0 != 0).any()):
            v_init = torch.round(v0.to(DT).flatten().expand(block.channels) * vth)
        units = message_range(block)[1]
        neuron = qir.SoftIF(vth=_ints(vth), v_init=None if v_init is None else _ints(v_init),
                            bias_exp=6, params=dict(block.neuron.params or {}), max_units=units,
                            **neuron_fields(block.neuron, block.name))
        cand = hidden_candidate(block, data, opts, scale, sigma, vth, neuron, units)
        if units > GRADED_UNITS_MAX:
            cand.problems.append(Problem(
                f"block '{block.name}': {block.neuron.model} sends up to {units} threshold units per "
                f"step; graded SoftIF payloads are at most {GRADED_UNITS_MAX} (a signed 8-bit message)",
                f"lower the neuron's burst / s_max parameter to <= {GRADED_UNITS_MAX}"))
        clamped = theta * scale < 0.5
        err = ((vth / sigma) / theta - 1).abs()[~clamped]
        cand.info["threshold_rel_error"] = float(err.max()) if err.numel() else 0.0  # clamped ones: flagged
        cand.info["thresholds_clamped"] = int(clamped.sum())
        return cand


def neuron_fields(node: ir.Neuron, name: str) -> dict:
    """``mode``, ``clamp_steps`` and ``spicalib_beta`` of the SoftIF reproducing float ``node``."""
    fields = MODEL_FIELDS.get(node.model, lambda n, b: {"mode": n.model})(node, name)
    return {**fields, "clamp_steps": _clamp_steps(node, name)}


def _spicalib_fields(node: ir.Neuron, name: str) -> dict:
    """SpiCalib (eq. 10-11) on the base model's payload, with an integer allowance."""
    beta = spicalib.beta(node)
    if not float(beta).is_integer():
        raise LoihiConvError(f"block '{name}': SpiCalib beta={beta} is not an integer; the fixed-point "
                             "ISI monitor compares integer step counts (N (t - t') > t' + N beta)",
                             f"use an integer beta, e.g. neuron_params={{'beta': {round(beta)}}}")
    return {"mode": spicalib.base_node(node).model, "spicalib_beta": int(beta)}


def _cuba_lif_fields(node: ir.Neuron, name: str) -> dict:
    """An imported NIR neuron (``cuba-lif``) runs as SoftIF when it is an IF with reset by
    subtraction; '>' then becomes SoftIF's '>=' (they differ only when v lands exactly on theta)."""
    if decay(node, "du", 1.0) != 1.0 or decay(node, "dv", 0.0) != 0.0 or choice(node, "reset", RESETS) != "subtract":
        raise LoihiConvError(f"block '{name}': SoftIF runs IF neurons with reset by subtraction, not a leaky "
                             "or reset-to-zero cuba-lif neuron", "quantize for target 'cuba'")
    return {"mode": "if-soft"}


MODEL_FIELDS = {"spicalib": _spicalib_fields, "cuba-lif": _cuba_lif_fields}  # float model -> SoftIF fields (default: same mode)


def _clamp_steps(node: ir.Neuron, name: str) -> int:
    steps = (node.params or {}).get("clamp_steps", 0)
    if not isinstance(steps, numbers.Real) or isinstance(steps, bool) or not float(steps).is_integer() \
            or steps < 0:
        raise LoihiConvError(f"block '{name}': params['clamp_steps']={steps!r} is not an integer >= 0",
                             "set voltage clamping with Recipe.clamp_delay (an integer)")
    return int(steps)


def _ints(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.to(torch.int64).numpy(), dtype=np.int64)


@register_target("if-soft", spiking=True, neuron_models=("if-soft", "if-multibit", "if-burst"),
                 recipe_knobs=("v_init", "clip_round", "clamp_delay", "lcp", "acp", "acp_weights", "max_pool"),
                 recipe_fixed={"acp_granularity": "channel"})  # per-channel v(0): SoftIF v_init
def quantize_softif(ctx: Context) -> qir.QNetwork:
    """SNN IR -> SoftIF blocks + Readout (docs/targets.md, "if-soft")."""
    return quantize_spiking(ctx, SoftIFRule())
