"""The shared driver of the spiking targets (``if-soft``, ``cuba``): graded input block, one
spiking block per IR Neuron, a ``Readout`` output block.

Integer mapping (docs/targets.md, "Spiking targets"). The float neuron integrates
``v += sum W (s theta_in) + b`` and fires at ``theta_out``; the fixed-point neuron integrates
``(a << 6) + (bias << 6)`` with ``a = sum W_int s`` and fires at ``vth << 6``. Multiplying the
float equation by ``64 sigma_o`` gives the integer one with

    W_int[o, i] = round(W[o, i] theta_in[i] sigma_o),  bias[o] = round(b[o] sigma_o),
    vth[o] = theta_out[o] sigma_o,

and the first synapse sees ``x_int = round(x input_scale)``, i.e. ``theta_in = 1/input_scale``.
The target decides how sigma_o is tied across channels (``HiddenRule``); this module searches
it per layer under the hard limits, and quantizes the input scale and the readout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.limits import ACT_SHIFT, STATE_MAX, VTH_MAX
from loihi_conv.fixed import qir
from loihi_conv.snn.neurons import NEURON_MODELS, max_units, spicalib

from .blocks import DT, FBlock, apply_syn, block_input, channel_view
from .common import (
    Candidate,
    Context,
    Problem,
    SynData,
    _np,
    clipped_channels,
    dense_problems,
    enforce,
    geometric_grid,
    int_weight,
    jsonable,
    kappa_weight,
    layer_meta,
    per_channel_max,
    search,
    step_range,
    to_qsyn,
    with_weight,
)
from .rounding import round_weights

Tensor = torch.Tensor
STEP_LIMIT = STATE_MAX >> ACT_SHIFT  # |a| and vth + a + bias per step must stay below this
INPUT_SCALE_STEPS = 13  # input scale candidates: top * 2^(-k/2), k < 13 (six octaves)


@dataclass
class Source:
    """A population as seen by the synapses it feeds: ``kappa`` (C,) ANN units per message unit,
    float values ``f`` and integer-domain messages ``m`` on the samples, per-step range [lo, hi]."""
    kappa: Tensor
    f: Tensor
    m: Tensor
    lo: float
    hi: float


class HiddenRule(Protocol):
    """How a spiking target ties per-channel scales and builds its neuron."""
    name: str
    models: dict[str, str]  # IR neuron model -> 'exact' or a note on the approximation

    def scales(self, block: FBlock, data: list[SynData], limit: Tensor, opts) -> tuple[list, list]:
        """Candidate scales (best first) and fallbacks, given per-channel sigma limits (Co,)."""

    def candidate(self, block: FBlock, data: list[SynData], scale: Any, opts) -> Candidate:
        """The block quantized at ``scale`` with its limit problems."""


# ---- limits ---------------------------------------------------------------------------------
def sigma_limits(block: FBlock, data: list[SynData], opts, theta: Tensor | None, units: int = 1) -> Tensor:
    """Per output channel, the largest sigma_o meeting every hard limit in float (before rounding):
    |W kappa sigma| <= weight_max, |b sigma| <= bias_max, theta sigma <= 131071 and, for one step
    of worst-case input, 64 (U theta + A+ + b+) sigma <= 2^23-1 and 64 max(A+, -A-) sigma <= 2^23-1.
    ``units`` U: the largest payload per step (threshold units): a graded neuron holds up to U
    thresholds before it sends them. A+/A- use the sources' message ranges (graded: up to U_src)."""
    co = block.channels
    inf = torch.full((co,), math.inf, dtype=DT)
    wabs = torch.stack([d.wk.abs().reshape(co, -1).amax(1) for d in data]).amax(0)
    lims = [_div(opts.weight_max, wabs)]
    a_lo, a_hi = _a_range([d.wk for d in data], data)
    b_hi = torch.zeros(co, dtype=DT)
    if block.bias is not None:
        babs = per_channel_max(block.bias.abs(), block.shape)
        lims.append(_div(opts.bias_max, babs))
        b_hi = per_channel_max(block.bias, block.shape).clamp(min=0)
    lims.append(_div(STEP_LIMIT, torch.maximum(a_hi, -a_lo)))
    if theta is not None:
        lims.append(_div(VTH_MAX, theta))
        lims.append(_div(STEP_LIMIT, units * theta + a_hi.clamp(min=0) + b_hi))
    out = inf
    for lim in lims:
        out = torch.minimum(out, lim)
    return out


def silent_channels(block: FBlock, data: list[SynData]) -> Tensor:
    """(Co,) bool: channels whose pre-activation never exceeds 0 on the samples (never fire)."""
    z = sum(apply_syn(d.syn, d.f) for d in data) + block.bias_full().unsqueeze(0)
    return z.transpose(0, 1).reshape(block.channels, -1).amax(1) <= 0


def _div(num: float, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.full_like(den, math.inf))


def _a_range(weights: list[Tensor], data: list[SynData]) -> tuple[Tensor, Tensor]:
    lo = hi = 0
    for w, d in zip(weights, data):
        l, h = step_range(w, d.lo, d.hi)
        lo, hi = lo + l, hi + h
    return lo, hi


def hidden_candidate(block: FBlock, data: list[SynData], opts, scale: Any, sigma: Tensor,
                     vth: Tensor, neuron: Any, units: int = 1) -> Candidate:
    """Integer weights/bias at per-channel ``sigma`` (Co,), threshold ints ``vth`` (Co,), checked
    against the hard limits (weights, NetX dense rule, bias, vth, one worst-case step).
    ``units``: the largest payload per step in thresholds (graded spikes): the rate metric clips
    at ``units`` thresholds and the state must hold ``units * vth`` before sending them."""
    weights = [int_weight(d.wk, sigma, opts) for d in data]
    bias = None if block.bias is None else torch.round(block.bias * _bias_sigma(block, sigma))
    cand = Candidate(scale, sigma, weights, bias, neuron, norm_int=vth * units, norm=block.threshold * units,
                     bias_a=bias, act="rate")
    cand.problems = _weight_bias_problems(block, data, weights, bias, opts)
    rows = clipped_channels([d.wk for d in data], sigma, opts)
    n = block.name
    if rows:
        cand.problems.append(Problem(f"block '{n}': weights of {rows} output channel(s) exceed "
                                     f"+-{opts.weight_max} at this scale and would be clipped",
                                     "lower this layer's scale"))
    if float(vth.max()) > VTH_MAX:
        cand.problems.append(Problem(f"block '{n}': vThMant {int(vth.max())} > {VTH_MAX}",
                                     "lower this layer's scale"))
    a_lo, a_hi = _a_range(weights, data)
    b_hi = per_channel_max(bias, block.shape).clamp(min=0) if bias is not None else 0
    peak = int(((units * vth + a_hi + b_hi) * 64).max())
    swing = int(64 * max(float(a_hi.max()), -float(a_lo.min())))
    if peak > STATE_MAX or swing > STATE_MAX:
        cand.problems.append(Problem(
            f"block '{n}': one step of worst-case input reaches {max(peak, swing)} in the 24-bit "
            f"state (limit {STATE_MAX}): a<<6 would wrap (u) or the membrane saturate",
            "lower this layer's scale or the input scale"))
    cand.info.update(a_range=(float(a_lo.min()), float(a_hi.max())))
    return cand


def _bias_sigma(block: FBlock, sigma: Tensor) -> Tensor:
    """sigma (C,) shaped to multiply the block's (C,) or full-shape bias."""
    return sigma if block.bias.dim() == 1 else channel_view(sigma, block.shape)


def _weight_bias_problems(block: FBlock, data, weights, bias, opts) -> list[Problem]:
    n = block.name
    out = []
    for d, w in zip(data, weights):
        out += dense_problems(d.syn, n, w)
    if bias is not None and float(bias.abs().max()) > opts.bias_max:
        out.append(Problem(f"block '{n}': |bias| reaches {int(bias.abs().max())} > bias_max={opts.bias_max} "
                           "(Loihi's bias mantissa is 13-bit signed, Lava's LIF casts it to int16)",
                           "lower this layer's scale"))
    return out


# ---- readout --------------------------------------------------------------------------------
def readout_candidate(block: FBlock, data: list[SynData], ctx: Context, sigma_s: float) -> Candidate:
    """The Readout block at scale ``sigma``: ``u = sum_t a_t << 6`` must not wrap. With calibration
    data the estimated ``64 T |sum W_int rate|`` (and ``v = u + bias<<6``) keeps ``readout_margin``
    of the range free; without it the worst case (every source spiking every step) must fit."""
    co = block.channels
    sigma = torch.full((co,), float(sigma_s), dtype=DT)
    weights = [int_weight(d.wk, sigma, ctx.opts) for d in data]
    steps = ctx.steps_run
    bias = None if block.bias is None else torch.round(block.bias * steps * _bias_sigma(block, sigma))
    cand = Candidate(sigma_s, sigma, weights, bias, qir.Readout(), norm_int=sigma,
                     norm=torch.ones(co, dtype=DT))
    cand.problems = _weight_bias_problems(block, data, weights, bias, ctx.opts)
    rows = clipped_channels([d.wk for d in data], sigma, ctx.opts)
    if rows:
        cand.problems.append(Problem(f"readout '{block.name}': weights of {rows} output(s) exceed "
                                     f"+-{ctx.opts.weight_max} at this scale and would be clipped",
                                     "lower the output scale"))
    a_lo, a_hi = _a_range(weights, data)
    bmax = float(bias.abs().max()) if bias is not None else 0.0
    u_worst = 64 * steps * max(float(a_hi.max()), -float(a_lo.min()))
    q = sum(apply_syn(with_weight(d.syn, w), d.m) for d, w in zip(data, weights))
    u_est = 64 * ctx.timesteps * float(q.abs().max())
    v_est = u_est if bias is None else 64 * float((ctx.timesteps * q + bias.reshape((1,) + bias.shape)).abs().max())
    cand.info.update(u_worst=u_worst, v_worst=u_worst + 64 * bmax, u_est=u_est, v_est=v_est)
    if ctx.synthetic:
        if u_worst + 64 * bmax > STATE_MAX:
            cand.problems.append(Problem(
                f"readout '{block.name}': worst-case accumulation over {steps} steps reaches "
                f"{int(u_worst + 64 * bmax)} > {STATE_MAX}; the 24-bit u would wrap",
                "pass calibration data (calib=...) so the readout scale can use typical rates, or "
                "lower timesteps"))
    else:
        lim = (1 - ctx.opts.readout_margin) * STATE_MAX
        if max(u_est, v_est) > lim:
            cand.problems.append(Problem(
                f"readout '{block.name}': the accumulated output on calibration data reaches "
                f"{int(max(u_est, v_est))} over T={ctx.timesteps}, above {int(lim)} "
                f"((1 - readout_margin) of the 24-bit range); u would wrap",
                "lower the output scale or timesteps"))
    if not any(bool(w.any()) for w in weights):  # say why, before the generic "all zero" problem
        cand.problems.insert(0, _zero_readout_problem(block, data, ctx, sigma_s, bias))
    return cand


def _zero_readout_problem(block: FBlock, data: list[SynData], ctx: Context, sigma_s: float,
                          bias: Tensor | None) -> Problem:
    """Every readout weight rounds to zero at ``sigma_s``: name the limit that capped the scale
    (``readout_limit``: the bias summed over the steps run, or the accumulation over T)."""
    n, steps, opts = block.name, ctx.steps_run, ctx.opts
    top = max(float(d.wk.abs().max()) for d in data) * sigma_s  # largest weight in integer units
    if n in opts.scales:
        cause = f"at the requested output scale {sigma_s:.3g}"
        fix = "raise the scale for this block"
    elif bias is not None and float(bias.abs().max()) >= 0.99 * opts.bias_max:
        cause = (f"its bias (|b| up to {float(block.bias.abs().max()):.3g}, summed over {steps} steps) only "
                 f"fits bias_max={opts.bias_max} at output scale {sigma_s:.3g}, where")
        fix = "retrain with a much smaller output bias (or none), or lower timesteps"
    else:
        cause = (f"its accumulation over T={ctx.timesteps} only fits the 24-bit state at output scale "
                 f"{sigma_s:.3g}, where")
        fix = "lower timesteps"
    return Problem(f"readout '{n}': {cause} the largest weight is {top:.2g} and every weight rounds to zero",
                   fix)


def readout_limit(block: FBlock, data: list[SynData], ctx: Context) -> float:
    """Largest readout sigma meeting the weight, bias and accumulation limits (float)."""
    co = block.channels
    lims = [float(sigma_limits(block, data, ctx.opts, None).min())]  # weights, bias, one step
    steps, T = ctx.steps_run, ctx.timesteps
    b = block.bias_full().reshape(co, -1) if block.bias is not None else torch.zeros(co, 1, dtype=DT)
    if block.bias is not None:
        lims.append(ctx.opts.bias_max / (steps * float(block.bias.abs().max())))
    if ctx.synthetic:
        a_lo, a_hi = _a_range([d.wk for d in data], data)
        worst = steps * (float(torch.maximum(a_hi, -a_lo).max()) + float(b.abs().max()))
        lims.append(_safe(STATE_MAX / 64, worst))
    else:
        z = sum(apply_syn(with_weight(d.syn, d.wk), d.m) for d in data)  # ANN units per step
        peak = max(T * float(z.abs().max()),
                   float((T * z + steps * block.bias_full().unsqueeze(0)).abs().max()))
        lims.append(_safe((1 - ctx.opts.readout_margin) * STATE_MAX / 64, peak))
    return min(lims)


def _safe(num: float, den: float) -> float:
    return num / den if den > 0 else math.inf


# ---- the driver -----------------------------------------------------------------------------
def _lowest_payload(node, u: int) -> int:
    return -u if NEURON_MODELS[node.model].signed else 0


# Models whose lowest payload differs: SpiCalib's twin synapse sends one unit less than its
# base model (eq. 11): -1 for unsigned bases, -(U+1) for a buffered one.
LOWEST_PAYLOAD = {"spicalib": lambda node, u: _lowest_payload(spicalib.base_node(node), u) - 1}


def message_range(block: FBlock) -> tuple[int, int]:
    """Per-step payload range of a hidden population in threshold units: [0, U] with
    U = ``neurons.max_units`` (1 for unit spikes, Γ for burst, S_max for multi-bit), [-U, U] for
    models with negative spikes, one lower for SpiCalib (``LOWEST_PAYLOAD``)."""
    node = block.neuron
    u = max_units(node)
    return (LOWEST_PAYLOAD.get(node.model, _lowest_payload)(node, u), u)


def rate_forward(blocks: list[FBlock], x: Tensor) -> dict[str, Tensor]:
    """``fold.forward(clip=True)`` with each hidden block clipped at its rate ceiling U theta
    (the largest activation its spikes carry: theta for unit spikes, Γ theta for burst, S_max
    theta = lambda for multi-bit). float64, (N, *shape) per block."""
    vals = {blocks[0].name: x.to(DT)}
    for b in blocks[1:]:
        z = block_input(b, vals)
        if b.role == "hidden":
            top = channel_view(b.threshold * message_range(b)[1], b.shape).unsqueeze(0)
            z = torch.minimum(z.clamp(min=0), top)
        vals[b.name] = z
    return vals


def sources(ctx: Context) -> dict[str, Source]:
    """Hidden populations as sources: kappa = theta, messages = ANN rates act/theta in [0, U]
    (threshold units per step; per-step range ``message_range``)."""
    vals = rate_forward(ctx.blocks, ctx.x)
    out = {}
    for b in ctx.blocks[1:-1]:
        th = b.threshold
        lo, hi = message_range(b)
        out[b.name] = Source(th, vals[b.name], vals[b.name] / channel_view(th, b.shape).unsqueeze(0),
                             float(lo), float(hi))
    return out


def input_source(ctx: Context, scale: float) -> Source:
    b = ctx.blocks[0]
    kappa = torch.full((b.channels,), 1.0 / scale, dtype=DT)
    return Source(kappa, ctx.x, torch.round(ctx.x * scale), float(round(ctx.x_lo * scale)),
                  float(round(ctx.x_hi * scale)))


def syn_data(block: FBlock, srcs: dict[str, Source], shapes: dict[str, tuple]) -> list[SynData]:
    out = []
    for s in block.synapses:
        src = srcs[s.source]
        out.append(SynData(s, kappa_weight(s, src.kappa, shapes[s.source]), src.f, src.m, src.lo, src.hi))
    return out


def search_block(block: FBlock, data: list[SynData], ctx: Context, rule: HiddenRule) -> tuple[Candidate, bool]:
    """Best candidate for one hidden or output block (a user scale override is the only candidate)."""
    opts = ctx.opts
    if block.role == "output" and block.neuron is None:  # the Readout accumulator (a spiking
        # output -- Recipe.output 'spikes' -- has a neuron and is mapped like a hidden block)
        make = lambda s: readout_candidate(block, data, ctx, s)  # noqa: E731
        top = readout_limit(block, data, ctx)
        scales, fallback = geometric_grid(top, opts.grid), geometric_grid(top / 2, 1, 8)[1:]
    else:
        make = lambda s: rule.candidate(block, data, s, opts)  # noqa: E731
        limit = sigma_limits(block, data, opts, block.threshold, message_range(block)[1])
        scales, fallback = rule.scales(block, data, limit, opts)
    if block.name in opts.scales:
        scales, fallback = [opts.scales[block.name]], []
    if not scales or not math.isfinite(float(scales[0])) or float(scales[0]) <= 0:
        raise LoihiConvError(f"block '{block.name}' has no usable scale (all weights zero?)",
                             "check the layer's weights and thresholds")
    return search(block, data, scales, make, fallback)


def choose_input_scale(ctx: Context, rule: HiddenRule, srcs: dict[str, Source], shapes) -> float:
    """The input scale minimizing the summed error of the input's consumer blocks, among
    integers up to (2^input_bits - 1) / max|x| (input quantization vs first-layer weights)."""
    opts = ctx.opts
    if opts.input_scale is not None:
        return float(opts.input_scale)
    xabs = max(abs(ctx.x_lo), abs(ctx.x_hi), 1e-12)
    top = (2 ** opts.input_bits - 1) / xabs
    cands = sorted({max(1, math.floor(top * 2.0 ** (-k / 2))) for k in range(INPUT_SCALE_STEPS)}, reverse=True)
    name = ctx.blocks[0].name
    consumers = [b for b in ctx.blocks[1:] if any(s.source == name for s in b.synapses)]
    coarse = replace(ctx, opts=replace(opts, grid=max(2, opts.grid // 4)))  # cheaper per-layer search
    best, best_err = cands[0], math.inf
    for s in cands:
        srcs[name] = input_source(ctx, s)
        err, ok = 0.0, True
        for b in consumers:
            cand, valid = search_block(b, syn_data(b, srcs, shapes), coarse, rule)
            ok, err = ok and valid, err + cand.error
        if ok and err < best_err - 1e-15:
            best, best_err = s, err
    return float(best)


def quantize_spiking(ctx: Context, rule: HiddenRule) -> qir.QNetwork:
    """Quantize the folded blocks of ``ctx`` for a spiking target described by ``rule``."""
    _check_models(ctx, rule)
    shapes = {b.name: tuple(b.shape) for b in ctx.blocks}
    srcs = sources(ctx)
    in_block = ctx.blocks[0]
    scale_in = choose_input_scale(ctx, rule, srcs, shapes)
    srcs[in_block.name] = input_source(ctx, scale_in)
    qblocks = [qir.Block(in_block.name, tuple(in_block.shape))]
    layers, problems = {}, []
    out_sigma = 1.0
    for b in ctx.blocks[1:]:
        data = syn_data(b, srcs, shapes)
        cand, ok = search_block(b, data, ctx, rule)
        if not ok:
            problems += cand.problems
        cand.weights = round_weights(data, cand.sigma, ctx.opts)  # same grid and limits as the search's
        qblocks.append(qir.Block(b.name, tuple(b.shape), [to_qsyn(d.syn, w) for d, w in zip(data, cand.weights)],
                                 None if cand.bias is None else _np(cand.bias), cand.neuron))
        note = rule.models[b.neuron.model] if b.neuron is not None else "exact"
        layers[b.name] = layer_meta(b, data, cand, ctx, approx=note != "exact")
        if b.role == "output":
            out_sigma = float(cand.sigma.max())  # the readout's scale (cuba spiking output: V/theta)
    enforce(problems, ctx.opts.force)
    meta = {"target": rule.name, "timesteps": ctx.timesteps, "steps_run": ctx.steps_run,
            "input_range": [ctx.x_lo, ctx.x_hi],
            "input_range_int": [round(ctx.x_lo * scale_in), round(ctx.x_hi * scale_in)],
            "calibrated": not ctx.synthetic, "readout_state": "v",
            "layers": layers, "notes": ctx.notes + [n for b in ctx.blocks[1:] if b.neuron is not None
                                                    for n in _model_notes(b, rule)]}
    return qir.QNetwork(qblocks, input_scale=scale_in, output_scale=64.0 * out_sigma, meta=jsonable(meta))


# Float-SNN-only neuron params (loihi_conv.convert.methods) that a target with exact neurons must not
# silently drop (unless its rule lists them in ``exact_params``: if-soft holds clamp_steps);
# cuba drops every v(0) change by design and flags it ("params-dropped").
FLOAT_ONLY_PARAMS = {
    "v0": ("a per-neuron initial potential (ACP with acp_granularity='neuron') has no per-neuron "
           "v_init in SoftIF", "convert with acp_granularity='channel' (exported as v_init)"),
    "clamp_steps": ("voltage clamping (clamp_delay) holds layers for their first steps; this target's "
                    "neurons have no per-layer start step",
                    "convert with clamp_delay=0 for export, or use target 'if-soft' (SoftIF.clamp_steps)"),
}


def _check_models(ctx: Context, rule: HiddenRule) -> None:
    for b in ctx.blocks[1:-1]:
        if b.neuron.model not in rule.models:
            raise LoihiConvError(f"block '{b.name}': neuron model {b.neuron.model!r} has no mapping on "
                                 f"target {rule.name!r}",
                                 f"use a model among {sorted(rule.models)} or another target")
        if rule.models[b.neuron.model] != "exact":
            continue  # approximated targets (cuba) drop and flag what they cannot hold
        held = getattr(rule, "exact_params", frozenset())  # params the target's neuron expresses
        for key in sorted(set(b.neuron.params or {}) & set(FLOAT_ONLY_PARAMS) - held):
            why, fix = FLOAT_ONLY_PARAMS[key]
            raise LoihiConvError(f"block '{b.name}': {why}, so target {rule.name!r} cannot run it exactly", fix)


def _model_notes(b: FBlock, rule: HiddenRule) -> list[str]:
    note = rule.models[b.neuron.model]
    return [] if note == "exact" else [f"block '{b.name}': {note}"]
