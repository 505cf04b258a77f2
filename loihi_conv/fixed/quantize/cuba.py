"""Target ``cuba``: standard NetX CUBA neurons (Lava LIF with i_decay=4096, v_decay=0).

With ``du = 4096`` the current is just this step's input, ``u = a << 6``, and with ``dv = 0``
the voltage integrates without leak: ``v += (a << 6) + (bias << 6)``, spike when
``v > vth << 6``, reset to zero (reference doc §3.4). The threshold is one integer vThMant V
per layer, so the per-channel thresholds fold into the weight rows and bias (reference doc
§1.8): ``sigma_o = V / theta_out[o]``, ``W_int[o, i] = round(W[o, i] theta_in[i] V / theta_out[o])``,
``bias[o] = round(b[o] V / theta_out[o])``. The implied per-channel threshold is exact only up to
the rounding of row o; ``threshold_rel_error`` reports it (least-squares fit of each row).

Reset to zero is the ``if-zero`` model; an ``if-soft`` SNN is *approximated* on this target (the
charge above threshold is lost at every spike, biasing rates low, Rueckauer et al. 2016 eq. 5).
Lava fires on ``v > vth << 6`` where the float model fires on ``v >= theta``; since v only
takes multiples of 64 here (``a << 6``, ``bias << 6``, no decay), vThMant = V - 1 makes the two
tests identical: the effective threshold in a-units is V.
"""
from __future__ import annotations

import math

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.limits import ACT_SHIFT, DECAY_ONE
from loihi_conv.fixed import qir
from loihi_conv.snn.neurons.cuba_lif import COMPARES, RESETS, choice, decay

from .blocks import FBlock
from .common import DT, Context, Problem, geometric_grid, register_target
from .spiking import hidden_candidate, quantize_spiking, silent_channels

OUTLIERS = 0.1  # fraction of a layer's channels that may get a raised threshold
PIN_SAFETY = 0.97  # pinned channels sit this far below their float limit (rounding slack)
SOFT_NOTE = ("if-soft neurons approximated by reset-to-zero on target 'cuba' (NetX CUBA has no "
             "reset by subtraction): rates are biased low")


class CubaRule:
    """One integer vThMant V per layer; sigma_o = V / theta_o folded into the rows (module doc)."""
    name = "cuba"
    models = {"if-zero": "exact", "if-soft": SOFT_NOTE, "cuba-lif": "exact"}

    def __init__(self):
        self.limits: dict[str, torch.Tensor] = {}  # per block (Co,) sigma_o limits, set by scales()
        self.allowance: dict[str, int] = {}  # per block: channels that may get a raised threshold

    def scales(self, block: FBlock, data, limit: torch.Tensor, opts) -> tuple[list, list]:
        # V <= limit_o * theta_o for every channel o. One integer threshold spans ~8 bits of
        # per-channel weight/threshold ratio: outlier channels (OUTLIERS of them, plus those
        # silent on the data and any whose limit is below 1) may instead be scaled at their own
        # limit, which raises their threshold; the error metric decides.
        v_row = limit * block.threshold
        silent = silent_channels(block, data)
        k = math.floor(OUTLIERS * block.channels) + int(silent.sum())
        k = min(block.channels - 1, max(k, int((v_row < 1).sum())))
        v_row = v_row.sort().values
        self.limits[block.name], self.allowance[block.name] = limit, k
        strict = _ints_desc(geometric_grid(float(v_row[0]), opts.grid))
        grid = _ints_desc(geometric_grid(float(v_row[k]), opts.grid, 2)) if k else strict
        fallback = [v for v in strict + _ints_desc(geometric_grid(float(v_row[0]) / 2, 1, 8)) if v not in grid]
        return grid or [1], fallback

    def candidate(self, block: FBlock, data, scale, opts):
        v = int(scale)
        theta = block.threshold
        want = v / theta
        sigma, pinned = want, torch.zeros(block.channels, dtype=torch.bool)
        if block.name in self.limits:  # pinned channels: sigma_o = limit_o, threshold V/sigma_o > theta_o
            cap = PIN_SAFETY * self.limits[block.name]
            sigma, pinned = torch.minimum(want, cap), want > cap
        raised = int(pinned.sum())
        vth = torch.full((block.channels,), float(v), dtype=DT)
        # v only takes multiples of 64 here (a<<6, bias<<6, no decay), so Lava's 'v > (V-1)<<6' is
        # exactly the float model's 'v >= theta' with theta = V<<6.
        neuron = qir.Cuba(vth=v - 1, i_decay=DECAY_ONE, v_decay=0, bias_exp=ACT_SHIFT)
        if block.neuron.model == "cuba-lif":  # decays and '>' of an imported NIR neuron (cuba_lif_neuron)
            neuron = cuba_lif_neuron(block, v)
        cand = hidden_candidate(block, data, opts, v, sigma, vth, neuron)
        if neuron.i_decay < DECAY_ONE and cand.bias is not None and bool((cand.bias != 0).any()):
            _filtered_bias(block, cand, neuron.i_decay / DECAY_ONE)
        cand.info["threshold_rel_error"] = _threshold_error(data, cand.weights, want, ~pinned)
        cand.info["thresholds_raised"] = raised
        cand.info["channel_sigma"] = sigma.tolist()  # V/theta_o, or the limit of a raised channel
        if raised > self.allowance.get(block.name, 0):
            cand.problems.append(Problem(f"block '{block.name}': {raised} channel(s) would need a raised "
                                         "threshold at this vThMant", "lower this layer's scale"))
        notes = []
        v0 = block.neuron.v_init
        if v0 is not None and bool((v0 != 0).any()):
            notes.append("v_init dropped (qir.Cuba starts at v=0)")
        if block.neuron.params and block.neuron.model != "cuba-lif":
            notes.append(f"neuron params {sorted(block.neuron.params)} dropped")
        cand.info["dropped"] = notes
        return cand


def cuba_lif_neuron(block: FBlock, v: int) -> qir.Cuba:
    """The CUBA neuron of a ``cuba-lif`` block at vThMant scale V: decays rounded to 1/4096;
    '>' is Lava's own test (vth = V); '>=' is exact as V - 1 only without decays (v then moves
    in multiples of 64), else approximated by '>'. Reset by subtraction has no CUBA form."""
    node = block.neuron
    if choice(node, "reset", RESETS) == "subtract":
        raise LoihiConvError(f"block '{block.name}': reset by subtraction has no NetX CUBA form (Lava's LIF "
                             "resets to zero)", "quantize for target 'if-soft' (IF neurons without leak), "
                             "or import the NIR graph with reset='zero'")
    du, dv = round(decay(node, "du", 1.0) * DECAY_ONE), round(decay(node, "dv", 0.0) * DECAY_ONE)
    exact_ge = choice(node, "compare", COMPARES) == "ge" and du == DECAY_ONE and dv == 0
    return qir.Cuba(vth=v - 1 if exact_ge else v, i_decay=du, v_decay=dv, bias_exp=ACT_SHIFT)


def _filtered_bias(block: FBlock, cand, du: float) -> None:
    """A bias of a current-based neuron (du < 1) enters u in the float model (NIR: it is part of the
    synaptic input) but v on Lava (LIF has no current bias); only its steady state b / du is
    carried, so it is flagged (quantize refuses unless force=True)."""
    cand.bias = torch.round(cand.bias / du)
    cand.bias_a = cand.bias
    cand.problems.append(Problem(f"block '{block.name}': a bias into a current-based neuron (du = {du:.4g}) is "
                                 "filtered by the synaptic current in the float model but added to v on Lava; "
                                 "only its steady state (bias / du) is carried",
                                 "remove the bias of the synapse feeding a CubaLIF layer, or accept the "
                                 "transient difference"))


def _ints_desc(values) -> list[int]:
    out = []
    for x in values:
        if math.isfinite(x) and math.floor(x) >= 1 and math.floor(x) not in out:
            out.append(math.floor(x))
    return out


def _threshold_error(data, weights, sigma: torch.Tensor, keep: torch.Tensor) -> float:
    """max_o |sigma_o / sigma_eff_o - 1| over the channels ``keep`` (the raised ones are flagged
    instead), sigma_eff_o the least-squares scale of row o's ints onto W kappa: the relative
    error of the per-channel threshold the integer row implies."""
    num = den = 0
    for d, w in zip(data, weights):
        co = w.shape[0]
        num = num + (w.reshape(co, -1) * d.wk.reshape(co, -1)).sum(1)
        den = den + (d.wk.reshape(co, -1) ** 2).sum(1)
    ok = (den > 0) & (num > 0) & keep
    if not bool(ok.any()):
        return 0.0
    return float((sigma[ok] / (num[ok] / den[ok]) - 1).abs().max())


# CUBA starts at v = 0 (v_init, ACP's v(0) dropped) and has no step counter (no clamping). Its
# neuron resets to zero, so the float model it runs exactly is if-zero, with MMSE thresholds for
# the reset-to-zero rate curve, LCP biases and weights (ACP weights calibration on the
# reset-to-zero count curve, without ACP's v(0)) calibrated on that model.
@register_target("cuba", spiking=True, neuron_models=("if-zero", "if-soft"),
                 recipe_knobs=("clip_round", "lcp", "acp_weights", "max_pool"),
                 starts=({"neuron_model": "if-zero", "normalizer": "mmse", "mmse_rounding": "zero",
                          "clip_round": True, "lcp": True, "acp_weights": True},
                         {"neuron_model": "if-zero", "normalizer": "mmse", "mmse_rounding": "zero",
                          "clip_round": True, "lcp": True}))
def quantize_cuba(ctx: Context) -> qir.QNetwork:
    """SNN IR -> CUBA blocks + Readout (docs/targets.md, "cuba")."""
    return quantize_spiking(ctx, CubaRule())
