"""Target ``sdnn``: NetX sigma-delta network (Lava Delta input, SigmaDelta ReLU hidden layers,
Sigma output), spike_exp = state_exp = 6.

Scale bookkeeping (reference doc §3.5, E = S = 6). Give block l a value scale ``u_l`` (ints
per ANN unit, before the 2^12): its state ``sigma``/``act`` holds ``y u_l 2^12`` and its graded
spikes carry the change ``dy u_l 2^6`` (``act >> 6``). The next block sums ``W_int`` times the
accumulated spikes, so its ``sigma = sum W_int y u_l 2^6`` must equal ``z u_{l+1} 2^12``:

    W_int = round(64 W u_{l+1} / u_l),   bias_mant = round(b u_{l+1})   (bias_var = bias << 12),
    vThMant = round(sdnn_vth * mean(theta) * u_{l+1}),

i.e. kappa = 1/(64 u_l), sigma_o = u_{l+1} 2^12 in ``common``'s notation. The input is a Delta
neuron fed ``x_int = round(x input_scale)`` (so ``u_0 = input_scale``; it sends ``dx_int 2^6``).
The output is a Sigma: ``sigma / (u_out 2^12)`` is the output pre-activation in ANN units; Sigma
takes no bias, so the output bias stays in ``meta['output_bias']`` (ANN units, add it on the host).

Limits per block: |W_int| <= weight_max, 16-bit signed payloads (``max |dy| u 64``) and 24-bit
states (``max(|z|, y) u 2^12``) on the calibration trajectory, keeping ``sdnn_margin`` free, and
the bias mantissa. The trajectory is the float pipeline (``fold.pipeline``) over depth + 2 steps:
an SDNN settles on the ANN after ``depth`` steps, passing through partial (transient) values.
SigmaDelta is a plain ReLU: the threshold clip ``min(relu(z), theta)`` of the SNN IR is *not*
applied on this target, and v_init and the neuron model are ignored.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from loihi_conv.base.limits import INT16_MAX, SDNN_EXP, STATE_MAX, VTH_MAX
from loihi_conv.fixed import qir

from .blocks import FBlock, apply_syn, pipeline
from .common import (
    DT,
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
    reference,
    register_target,
    relative_error,
    to_qsyn,
    with_weight,
)
from .rounding import round_weights
from .spiking import INPUT_SCALE_STEPS

Tensor = torch.Tensor
UNIT = 2 ** (SDNN_EXP + SDNN_EXP)  # sigma/act units per u: 2^12


def _trajectory_stats(ctx: Context) -> dict[str, dict[str, float]]:
    """Max |value|, |change| and |pre-activation without bias| of every block over the pipeline."""
    steps = ctx.depth + 2
    traj = pipeline(ctx.blocks, ctx.x, steps, clip=False)
    zero = {b.name: torch.zeros((ctx.x.shape[0],) + tuple(b.shape), dtype=DT) for b in ctx.blocks}
    stats = {}
    for b in ctx.blocks[1:]:
        y = d = z = 0.0
        prev = zero
        for t in range(steps):
            cur = traj[t]
            zl = sum(apply_syn(s, prev[s.source]) for s in b.synapses)
            z = max(z, float(zl.abs().max()))
            y = max(y, float(cur[b.name].abs().max()))
            d = max(d, float((cur[b.name] - prev[b.name]).abs().max()))
            prev = cur
        if b.role == "hidden" and ctx.synthetic:  # no data: assume activations up to theta
            th = float(b.threshold.max())
            y, d = max(y, th), max(d, th)
        stats[b.name] = {"value": y, "change": d, "sigma": z}
    stats["__final__"] = traj[-1]
    return stats


def _candidate(block: FBlock, data: list[SynData], st: dict, opts, u: float) -> Candidate:
    """Block quantized at value scale ``u`` (sigma = u 2^12), with its limit problems."""
    co = block.channels
    sigma = torch.full((co,), u * UNIT, dtype=DT)
    weights = [int_weight(d.wk, sigma, opts) for d in data]
    hidden = block.role == "hidden"
    bias = torch.round(block.bias * u) if (hidden and block.bias is not None) else None
    vth = round(opts.sdnn_vth * float(block.threshold.mean()) * u) if hidden else 0
    neuron = qir.SigmaDelta(vth=int(vth), spike_exp=SDNN_EXP, state_exp=SDNN_EXP) if hidden else qir.Sigma()
    cand = Candidate(u, sigma, weights, bias, neuron, norm_int=sigma, norm=torch.ones(co, dtype=DT),
                     bias_a=None if bias is None else bias * UNIT, act="relu" if hidden else "linear")
    n = block.name
    probs = []
    over = clipped_channels([d.wk for d in data], sigma, opts)
    if over:
        probs.append(Problem(f"block '{n}': weights of {over} output channel(s) exceed +-{opts.weight_max} "
                             "at this scale and would be clipped", "lower this layer's scale u"))
    for d, w in zip(data, weights):
        probs += dense_problems(d.syn, n, w)
    if bias is not None and float(bias.abs().max()) > opts.bias_max:
        probs.append(Problem(f"block '{n}': |bias| reaches {int(bias.abs().max())} > bias_max={opts.bias_max}",
                             "lower this layer's scale u"))
    if vth > VTH_MAX:
        probs.append(Problem(f"block '{n}': vThMant {vth} > {VTH_MAX}", "lower sdnn_vth"))
    state = UNIT * u * max(st["sigma"], st["value"])
    payload = 64 * u * st["change"] if hidden else 0.0
    if state > STATE_MAX:
        probs.append(Problem(f"block '{n}': calibration states reach {int(state)} > {STATE_MAX} (24-bit)",
                             "lower this layer's scale u"))
    if payload > INT16_MAX:
        probs.append(Problem(f"block '{n}': graded spikes reach {int(payload)} > {INT16_MAX} (16-bit payload)",
                             "lower this layer's scale u"))
    cand.problems = probs
    cand.info.update(state_est=state, payload_est=payload)
    return cand


def _syn_data(b: FBlock, u: dict, f: dict, shapes: dict, in_name: str) -> list[SynData]:
    """Synapses of ``b`` with kappa = 1/(64 u_src) and the sources' accumulated messages
    ``m = f u_src 64`` (the input's: ``round(x u_0) 64``)."""
    data = []
    for i, s in enumerate(b.synapses):
        us = u[s.source]
        kappa = torch.full((shapes[s.source][0],), 1.0 / (64 * us), dtype=DT)
        m = torch.round(f[s.source] * us) * 64 if s.source == in_name else f[s.source] * us * 64
        hkey = (b.name, i, us if s.source == in_name else None)  # hidden messages: f times a factor
        data.append(SynData(s, kappa_weight(s, kappa, shapes[s.source]), f[s.source], m, 0.0, 0.0, hkey))
    return data


class _Schedule:
    """The value scales u of all blocks, chosen jointly: block l's weights depend on the ratio
    ``u_l / u_src`` (``W_int = 64 W u_l / u_src``) and its bias on ``u_l`` alone, so the best u of
    one layer depends on its neighbours. Coordinate descent over per-block grids minimizes the
    summed ``relative_error`` of all blocks, starting from the largest feasible scales, once per
    input-scale octave; of those schedules, the one whose settled network (integer weights as the
    file gets them, rounded input and biases) gives the output closest to the float network's.
    The per-block errors alone miss how the input's rounding propagates: on fmnist_cnn they chose
    an input scale of 22 (4.5 bits for 8-bit images), 92.40 % on 2000 test images; the end-to-end
    choice, 63: 93.50 % (ANN 93.75)."""

    def __init__(self, ctx: Context, stats: dict, final: dict):
        self.ctx, self.opts, self.stats = ctx, ctx.opts, stats
        self.blocks = ctx.blocks
        self.in_name = ctx.blocks[0].name
        self.shapes = {b.name: tuple(b.shape) for b in ctx.blocks}
        self.f = {self.in_name: ctx.x, **{b.name: final[b.name] for b in ctx.blocks[1:]}}
        self.users = {b.name: [c for c in ctx.blocks[1:] if any(s.source == b.name for s in c.synapses)]
                      for b in ctx.blocks}
        self.cache: dict = {}
        self.refs: dict = {}
        self.ann_out: Tensor | None = None

    def grid(self, b: FBlock) -> list[float]:
        if b.name in self.opts.scales:
            return [float(self.opts.scales[b.name])]
        if b is self.blocks[0]:
            if self.opts.input_scale is not None:
                return [float(self.opts.input_scale)]
            xabs = max(abs(self.ctx.x_lo), abs(self.ctx.x_hi), 1e-12)
            top = min(2 ** self.opts.input_bits - 1, INT16_MAX // 64) / xabs
            return sorted({float(max(1, math.floor(top * 2.0 ** (-k / 2)))) for k in range(INPUT_SCALE_STEPS)},
                          reverse=True)
        top = _self_limit(b, self.stats[b.name], self.opts)
        return geometric_grid(top, GRID_PER_OCTAVE, GRID_OCTAVES)

    def candidate(self, b: FBlock, u: dict) -> tuple[Candidate, list[SynData]]:
        data = _syn_data(b, u, self.f, self.shapes, self.in_name)
        return _candidate(b, data, self.stats[b.name], self.opts, u[b.name]), data

    def cost(self, b: FBlock, u: dict) -> float:
        key = (b.name, u[b.name]) + tuple(u[s.source] for s in b.synapses)
        if key not in self.cache:
            cand, data = self.candidate(b, u)
            if b.name not in self.refs:
                self.refs[b.name] = reference(b, data, cand)
            self.cache[key] = math.inf if cand.problems else relative_error(b, data, cand, self.refs[b.name])
        return self.cache[key]

    def local(self, b: FBlock, u: dict) -> float:
        """The terms of the total error that depend on u[b]: b itself and its consumers."""
        own = 0.0 if b is self.blocks[0] else self.cost(b, u)
        return own + sum(self.cost(c, u) for c in self.users[b.name])

    def solve(self) -> dict[str, float]:
        """Per-block descent from each input-scale octave, the one whose network's output is
        closest to the float network's (``output_error``, with the final weight rounding)."""
        grids = {b.name: self.grid(b) for b in self.blocks}
        starts = [self.descend({**grids, self.in_name: [v]}) for v in grids[self.in_name][::INPUT_STRIDE]]
        return min(starts, key=self.output_error)

    def descend(self, grids: dict[str, list[float]]) -> dict[str, float]:
        """Coordinate descent on the summed per-block errors (each block on float inputs)."""
        u = {}
        for b in self.blocks:  # greedy start: the largest feasible u of each block in turn
            u[b.name] = grids[b.name][0]
            if b is not self.blocks[0]:
                ok = [v for v in grids[b.name] if self.cost(b, {**u, b.name: v}) < math.inf]
                u[b.name] = ok[0] if ok else grids[b.name][0]
        for _ in range(SWEEPS):
            changed = False
            for b in self.blocks:
                best = min(grids[b.name], key=lambda v: (self.local(b, {**u, b.name: v}), -v))
                if best != u[b.name] and self.local(b, {**u, b.name: best}) < self.local(b, u) - 1e-12:
                    u[b.name], changed = best, True
            if not changed:
                break
        return u

    # ---- end to end: the settled network on quantized values, against the float one ----
    def feasible(self, b: FBlock, u: dict) -> bool:
        return b is self.blocks[0] or self.cost(b, u) < math.inf

    def layer(self, b: FBlock, u: dict) -> tuple[list, Tensor]:
        """Block ``b``'s synapses with its integer weights in ANN units (``W_int u_src / (64 u)``)
        and the bias it really adds, full shape (hidden: ``round(b u) / u``; output: exact, on
        the host)."""
        key = ("layer", b.name, u[b.name]) + tuple(u[s.source] for s in b.synapses)
        if key not in self.cache:
            cand, data = self.candidate(b, u)
            weights = round_weights(data, cand.sigma, self.opts, self.cache)
            syns = [with_weight(d.syn, (w * u[d.syn.source] / (64 * u[b.name])).float())
                    for d, w in zip(data, weights)]
            bias = b if cand.bias is None else replace(b, bias=cand.bias / u[b.name])
            self.cache[key] = (syns, bias.bias_full().float())
        return self.cache[key]

    def values(self, u: dict | None) -> dict[str, Tensor]:
        """The settled values (one pass: the SDNN settles on the ANN after ``depth`` steps) of
        every block on the first ``E2E_SAMPLES`` calibration samples; ``None``: the float ANN."""
        x = self.ctx.x[:E2E_SAMPLES].float()
        vals = {self.in_name: x if u is None else torch.round(x * u[self.in_name]) / u[self.in_name]}
        for b in self.blocks[1:]:
            if u is None:
                syns, bias = [with_weight(s, s.weight.float()) for s in b.synapses], b.bias_full().float()
            else:
                syns, bias = self.layer(b, u)
            z = sum(apply_syn(s, vals[s.source]) for s in syns) + bias.unsqueeze(0)
            vals[b.name] = z.clamp(min=0) if b.role == "hidden" else z
        return vals

    def output_error(self, u: dict) -> float:
        """Relative L2 error of the network's output (pre-activation, ANN units) with every
        block quantized at ``u``; inf when a block breaks a limit."""
        if not all(self.feasible(b, u) for b in self.blocks):
            return math.inf
        key = ("e2e",) + tuple(u[b.name] for b in self.blocks)
        if key not in self.cache:
            if self.ann_out is None:
                self.ann_out = self.values(None)[self.blocks[-1].name]
            ref = self.ann_out
            out = self.values(u)[self.blocks[-1].name]
            self.cache[key] = float((out - ref).norm() / ref.norm().clamp(min=1e-12))
        return self.cache[key]


GRID_PER_OCTAVE, GRID_OCTAVES, SWEEPS = 3, 7, 4
E2E_SAMPLES = 256  # calibration samples the end-to-end error runs on
INPUT_STRIDE = 2  # descents start from every other input scale (octaves)


def _self_limit(block: FBlock, st: dict, opts) -> float:
    """Largest u meeting the block's own limits (bias, payload, state); weights depend on the
    sources' u and are checked per candidate."""
    free = 1 - opts.sdnn_margin
    lims = [math.inf]
    if block.bias is not None and block.role == "hidden" and float(block.bias.abs().max()) > 0:
        lims.append(opts.bias_max / float(block.bias.abs().max()))
    peak = max(st["sigma"], st["value"])
    if peak > 0:
        lims.append(free * STATE_MAX / (UNIT * peak))
    if block.role == "hidden" and st["change"] > 0:
        lims.append(free * INT16_MAX / (64 * st["change"]))
    top = min(lims)
    return top if math.isfinite(top) else 1.0


# SigmaDelta is a plain ReLU: neuron model, v_init and the spiking methods do not apply.
@register_target("sdnn", recipe_fixed={"max_pool": "relu-tree"}, recipe_knobs=("weight_rounding",),
                 starts=({"weight_rounding": "gptq"},))
def quantize_sdnn(ctx: Context) -> qir.QNetwork:
    """SNN IR (read as its ANN) -> Delta input, SigmaDelta hidden blocks, Sigma output."""
    opts = ctx.opts
    stats = _trajectory_stats(ctx)
    final = stats.pop("__final__")
    sched = _Schedule(ctx, stats, final)
    u = sched.solve()
    in_block = ctx.blocks[0]
    s_in = u[in_block.name]
    qblocks = [qir.Block(in_block.name, tuple(in_block.shape), neuron=qir.Delta(vth=0, spike_exp=SDNN_EXP,
                                                                                state_exp=SDNN_EXP))]
    layers, problems = {}, []
    for b in ctx.blocks[1:]:
        cand, data = sched.candidate(b, u)
        cand.error = sched.cost(b, u)
        cand.weights = round_weights(data, cand.sigma, opts, sched.cache)
        problems += cand.problems
        st = stats[b.name]
        qblocks.append(qir.Block(b.name, tuple(b.shape), [to_qsyn(d.syn, w) for d, w in zip(data, cand.weights)],
                                 None if cand.bias is None else _np(cand.bias), cand.neuron))
        layers[b.name] = layer_meta(b, data, cand, ctx)
        layers[b.name].update(observed_value=st["value"], observed_change=st["change"], observed_sigma=st["sigma"])
        if b.role == "hidden":
            layers[b.name]["flags"].append("no-theta-clip")
    enforce(problems, opts.force)
    out = ctx.blocks[-1]
    meta = {"target": "sdnn", "timesteps": ctx.timesteps, "steps_run": ctx.steps_run,
            "input_range": [ctx.x_lo, ctx.x_hi],
            "input_range_int": [round(ctx.x_lo * s_in), round(ctx.x_hi * s_in)],
            "calibrated": not ctx.synthetic, "readout_state": "sigma", "layers": layers,
            "output_bias": None if out.bias is None else out.bias_full().flatten(),
            "notes": ctx.notes + [
                "SigmaDelta is a plain ReLU: the SNN IR's clip at theta is not applied (the SDNN "
                "approximates the unclipped ANN)",
                "Sigma takes no bias: add meta['output_bias'] (ANN units) to sigma / output_scale",
                f"the output settles after depth={ctx.depth} steps"]}
    return qir.QNetwork(qblocks, input_scale=s_in, output_scale=u[out.name] * UNIT, meta=jsonable(meta))
