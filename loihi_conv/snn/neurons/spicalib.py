"""SpiCalib (Li, He, Dong, Kong & Zeng 2022, "Spike Calibration", §3.3): an ISI monitor per
neuron plus a twin synapse that takes back the spikes of an inactivated neuron (SIN).

Why. A neuron whose ANN activation is negative (``o < 0``) can still fire when its summed
input ``kappa_t`` crosses the threshold early (SpiCalib eq. 8-9: the count is the running *max*
of ``floor(kappa_t)``, not its final value). Such neurons "fire early and then silence". The
monitor keeps each neuron's average inter-spike interval (eq. 10); a neuron still silent
``beta`` steps after its expected next spike is flagged, and its twin synapse (weight ``-W``)
sends one negative spike per step until the net effect of its spikes downstream is zero
(eq. 11). Here the twin synapse is folded into the neuron's output: a negative spike of
``-1`` threshold units crosses the normal synapse ``W``, which is the same current as ``+1``
through ``-W`` (spikes in threshold units, as ``if-buffered`` sends them).

Options (``ir.Neuron.params``, set through ``Recipe.neuron_params``):
* ``beta``: the allowance in steps, a number >= 0. The paper sets ``beta = T/2`` for a readout
  window T (§4.1) and reports allowances 64 and 128 (Tables 1, 4). Default 16 = T/2 for the
  recipe's default ``calib_timesteps`` (32): set it to half your readout window.
* ``base``: the registered neuron model whose spikes are monitored (default ``"if-soft"``; the
  paper uses burst spikes, ``base = "if-burst"`` with ``burst = 5``). Its own options (``burst``,
  ``s_max``) are read from the same params.

Layouts: as every neuron model (``loihi_conv.snn.neurons``): state tensors have the population's
batched shape (N, C, H, W) or (N, F); spikes are returned in threshold units.
"""
from __future__ import annotations

import numbers

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.frontend import ir
from loihi_conv.snn.neurons.neuron_model import (
    NEURON_MODELS,
    NeuronModel,
    State,
    Tensor,
    get_neuron_model,
    max_units,
    register_neuron,
    threshold_scale,
)

DEFAULT_BETA = 16
DEFAULT_BASE = "if-soft"


def _beta(node: ir.Neuron) -> float:
    beta = node.params.get("beta", DEFAULT_BETA)
    if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not 0 <= beta < float("inf"):
        raise LoihiConvError(f"neuron {node.name!r} (spicalib): params['beta']={beta!r} must be a number >= 0 "
                             "(the allowance in steps)",
                             "set e.g. neuron_params={'beta': 16}: the paper uses beta = T/2 for window T")
    return float(beta)


def _base(node: ir.Neuron) -> str:
    base = node.params.get("base", DEFAULT_BASE)
    if not isinstance(base, str) or base not in NEURON_MODELS or base == "spicalib":
        choices = ", ".join(sorted(set(NEURON_MODELS) - {"spicalib"}))
        raise LoihiConvError(f"neuron {node.name!r} (spicalib): params['base']={base!r} is not a neuron model "
                             "SpiCalib can monitor", f"use one of: {choices} (e.g. 'if-burst' as in the paper)")
    return base


def base_node(node: ir.Neuron) -> ir.Neuron:
    """The monitored ``base`` neuron of a spicalib ``node`` (same params, model = base)."""
    return ir.clone_node(node, model=_base(node))


def beta(node: ir.Neuron) -> float:
    """The allowance ``params['beta']`` of a spicalib ``node`` (validated, steps >= 0)."""
    return _beta(node)


@register_neuron("spicalib")
class SpiCalibNeuron(NeuronModel):
    """A ``base`` neuron (default ``if-soft``) whose output passes SpiCalib's monitor (§3.3):

    ISI monitor (eq. 10), on every step t = 1, 2, ... where the base neuron spikes (s(t) > 0):
    ``phi <- (phi * N + t - t') / (N + 1)``, then ``N <- N + 1``, ``t' <- t``
    (``N`` spikes so far, ``t'`` the last spike time, ``phi = t' = N = 0`` initially).
    SIN detection: ``t - t' > phi + beta`` (no spike although the expected next one is more than
    the allowance ``beta`` overdue).
    Twin synapse (eq. 11): while a neuron is flagged and ``net >= 1`` (net threshold units sent
    so far, spikes minus corrections), it sends ``-1``; the membrane is untouched.
    Output: ``s(t) - correction(t)`` threshold units.

    Exact integer form (shared with the fixed-point SoftIF, ``qir.SoftIF.spicalib_beta``): the
    mean ISI is ``phi = t' / N`` exactly, so ``phi`` need not be stored. Proof by induction: it
    holds initially (``phi = t' = N = 0``, i.e. ``phi N = t'``); if ``phi N = t'`` before a spike
    at t, eq. 10 gives ``phi_new (N + 1) = phi N + t - t' = t = t'_new``. Hence, for ``N >= 1``,
    the SIN test ``t - t' > phi + beta`` is ``N (t - t') > t' + N beta`` (multiplied by N > 0),
    and for ``N = 0`` nothing was sent (``net = 0``) so no correction can happen either way. In
    integers (integer beta) there is no division and no rounding; here the float tensors hold
    the same integers (exact below 2^24 in float32), so float and fixed point agree spike for
    spike. ``beta`` may stay real in this float model.

    Deviations from the authors' code (BrainCog ``SpiCalib``): ``t`` counts the neuron's own
    steps from 1 -- the steps it integrates, so a clamped neuron (``clamp_steps``) starts
    counting when the clamp ends -- and a neuron spiking every step has ``phi = 1`` from its first
    spike (theirs starts at t = 0); and a correction needs ``net >= 1``, so corrections alone
    never take ``net`` below zero (theirs keeps decreasing while a never-spiking neuron stays
    flagged, which later swallows that many of its genuine spikes -- nothing in the paper asks for
    that). With ``base = 'if-buffered'`` the base's own negative spikes still count into ``net``.
    """

    @staticmethod
    def threshold_scale(node: ir.Neuron) -> float:
        _beta(node)  # recipe validation reaches the options through here
        base = base_node(node)
        return threshold_scale(base.model, base.params)

    @staticmethod
    def max_units(node: ir.Neuron) -> int:
        return max_units(base_node(node))

    def init_state(self, shape, node, dtype=torch.float32, device=None) -> State:
        bnode = base_node(node)
        base = get_neuron_model(bnode.model)
        state = base.init_state(shape, bnode, dtype, device)
        zeros = lambda: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        # The base model rides in the state: one SpiCalib instance may serve nodes with different bases.
        state.update({"base_model": base, "t": torch.zeros((), dtype=dtype, device=device),
                      "beta": torch.tensor(_beta(node), dtype=dtype, device=device),
                      "n_spikes": zeros(), "t_last": zeros(), "net": zeros(), "out": zeros(),
                      "_lhs": zeros(), "_rhs": zeros()})
        return state

    def step(self, state: State, current: Tensor) -> Tensor:
        s = state["base_model"].step(state, current)
        t = state["t"].add_(1)
        n, t_last, net, out = state["n_spikes"], state["t_last"], state["net"], state["out"]
        lhs, rhs = state["_lhs"], state["_rhs"]
        fired = s > 0
        n.add_(fired)                                                   # eq. 10: N += 1 ...
        t_last.masked_fill_(fired, float(t))                            # ... t' = t (phi = t'/N)
        torch.mul(n, torch.sub(t, t_last, out=lhs), out=lhs)             # N (t - t')
        torch.add(t_last, n, alpha=float(state["beta"]), out=rhs)       # t' + N beta
        correction = (lhs > rhs) & (net >= 1)                           # SIN detected, twin synapse
        torch.sub(s, correction.to(s.dtype), out=out)
        net.add_(out)
        return out
