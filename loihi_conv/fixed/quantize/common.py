"""Shared pieces of every quantization target: options, limits, integer weights, range bounds,
the per-layer scale search and the refusal policy.

Notation (docs/targets.md): a folded synapse maps source values (ANN units) to the target's
pre-activation with float weights W. One unit of the source's integer message is worth
``kappa`` ANN units per input channel (theta for spikes, 1/input_scale for the graded input,
1/(64 u) for SDNN graded spikes). The target's integer state counts ``sigma_o`` units per ANN
unit of pre-activation (per output channel). Then ``W_int[o, i] = round(W[o, i] kappa[i]
sigma_o)``, on the even grid of ``weight_step`` (2: Loihi's 8-bit mixed-sign weights, even
values in [-254, 254]).

Layouts: float64 torch tensors in PyTorch order (weights (Co, Ci/g, kH, kW) or (Nout, Nin);
per-channel vectors (C,)); qir arrays are int64 numpy in the same order.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from functools import singledispatch
from typing import Any, Callable

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError, reject_unknown
from loihi_conv.base.limits import BIAS_MAX, DENSE_MIXED_RANGE, DENSE_POSITIVE_MAX, INT16_MAX, WEIGHT_MAX
from loihi_conv.fixed import qir

from .blocks import DT, FBlock, FConv, FDense, apply_syn, channel_view

Tensor = torch.Tensor



TARGETS: dict[str, Callable[["Context"], qir.QNetwork]] = {}


def register_target(name: str, spiking: bool = False, neuron_models: tuple[str, ...] = (),
                    recipe_knobs: tuple[str, ...] = (), recipe_fixed: dict | None = None,
                    starts: tuple[dict, ...] = ()):
    """Decorator: make ``fn(ctx) -> QNetwork`` the quantization target ``name``.

    ``spiking``: its blocks send spikes in threshold units and it ends in a Readout, so it
    runs the spiking readouts and a qir.SpikePool stage can pool its messages (sdnn's messages
    are changes of an activation: a max of them means nothing). For the recipe search: the
    float ``neuron_models`` it can run, the conversion-method ``recipe_knobs`` whose effect it
    keeps (a method whose result the target drops is not worth a trial), the recipe values it
    needs (``recipe_fixed``) and recipes known to suit it, tried early (``starts``)."""
    def deco(fn):
        fn.spiking = spiking
        fn.neuron_models = tuple(neuron_models)
        fn.recipe_knobs = tuple(recipe_knobs)
        fn.recipe_fixed = dict(recipe_fixed or {})
        fn.starts = tuple(starts)
        TARGETS[name] = fn
        return fn
    return deco


def spiking_targets() -> list[str]:
    """The registered targets that send spikes (``register_target(spiking=True)``), by name."""
    return sorted(name for name, fn in TARGETS.items() if fn.spiking)


class QuantizeWarning(UserWarning):
    """Exported despite a refused limit because ``force=True``."""


@dataclass
class Options:
    """Quantizer options (``quantize(..., **opts)``); see docs/targets.md.

    force           export even when a limit is violated (warns instead of raising).
    weight_max      largest |W_int| (254: Loihi 8-bit mixed-sign weights).
    weight_step     weight grid: 2 = even ints (the hardware mixed-sign mantissa x2, as slayer
                    exports), 1 = every int (exact in the CPU simulator, not on chip).
    bias_max        largest |bias_mant| (4095: Loihi's 13-bit signed bias mantissa).
    input_bits      graded input ints satisfy |x_int| <= 2^input_bits - 1.
    input_scale     fix x_int = round(x * input_scale) instead of searching it.
    input_range     (lo, hi) of the analog input; default: the calibration data's, else (0, 1).
    scales          {block name: scale} overrides of the searched per-layer scale: sigma
                    (if-soft hidden, all readouts), vThMant V (cuba hidden), u (sdnn).
    readout_margin  fraction of the 24-bit readout range kept free on calibration data.
    sdnn_margin     same for SDNN payloads (16-bit) and states (24-bit).
    sdnn_vth        SDNN delta threshold as a fraction of the layer's mean theta (0: send every
                    change).
    weight_rounding how weights at the chosen scale become integers (``rounding.WEIGHT_ROUNDINGS``):
                    "nearest" or "gptq" (data-aware, on the calibration messages). Default: the
                    SNN's recipe (``Recipe.weight_rounding``), else "nearest".
    grid            candidate scales per octave in the scale search.
    calib_samples   calibration samples used at most (seeded random subset).
    seed            seed for that subset and for synthetic data.
    """
    force: bool = False
    weight_max: int = WEIGHT_MAX
    weight_step: int = 2
    bias_max: int = BIAS_MAX
    input_bits: int = 8
    input_scale: float | None = None
    input_range: tuple[float, float] | None = None
    scales: dict[str, float] = field(default_factory=dict)
    readout_margin: float = 0.5
    sdnn_margin: float = 0.5
    sdnn_vth: float = 0.0
    weight_rounding: str = "nearest"
    grid: int = 16
    calib_samples: int = 256
    seed: int = 0

    @classmethod
    def build(cls, opts: dict[str, Any]) -> "Options":
        reject_unknown(opts, {f.name for f in fields(cls)}, "quantize")
        o = cls(**opts)
        checks = [
            (o.weight_step in (1, 2), "weight_step must be 1 or 2"),
            (isinstance(o.weight_max, int) and 1 <= o.weight_max <= 2 ** 15, "weight_max must be an int in [1, 32768]"),
            (isinstance(o.bias_max, int) and 0 <= o.bias_max <= INT16_MAX, "bias_max must be an int in [0, 32767]"),
            (isinstance(o.input_bits, int) and 1 <= o.input_bits <= 16, "input_bits must be an int in [1, 16]"),
            (0 <= o.readout_margin < 1 and 0 <= o.sdnn_margin < 1, "margins must be in [0, 1)"),
            (o.sdnn_vth >= 0, "sdnn_vth must be >= 0"),
            (isinstance(o.grid, int) and o.grid >= 1, "grid must be a positive int"),
            (isinstance(o.calib_samples, int) and o.calib_samples >= 1, "calib_samples must be a positive int"),
            (o.input_scale is None or o.input_scale > 0, "input_scale must be > 0"),
            (o.input_range is None or (len(o.input_range) == 2 and o.input_range[0] < o.input_range[1]),
             "input_range must be (lo, hi) with lo < hi"),
        ]
        for ok, msg in checks:
            if not ok:
                raise LoihiConvError(f"quantize: {msg}", "fix the option (docs/targets.md lists them)")
        o.scales = dict(o.scales or {})
        return o


@dataclass
class Context:
    """Everything a target needs besides the folded blocks."""
    blocks: list[FBlock]
    timesteps: int
    hops: dict[str, int]
    opts: Options
    x: Tensor  # (N, *input shape) float64: calibration samples, or synthetic ones
    synthetic: bool  # x was drawn uniformly from the input range (no calibration data)
    x_lo: float
    x_hi: float
    notes: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return self.hops[self.blocks[-1].name]

    @property
    def steps_run(self) -> int:
        """Steps a run for readout window T takes: T + depth (docs/architecture.md)."""
        return self.timesteps + self.depth


# ---- problems and refusal --------------------------------------------------------------------
@dataclass
class Problem:
    problem: str
    fix: str


def enforce(problems: list[Problem], force: bool) -> None:
    """Raise a LoihiConvError naming the problems (the first three) unless ``force``; with
    ``force``, warn about each instead."""
    if not problems:
        return
    if not force:
        shown = problems[:3]
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise LoihiConvError("; ".join(p.problem for p in shown) + more,
                             "; ".join(dict.fromkeys(p.fix for p in shown)) + "; or pass force=True to export anyway")
    for p in problems:
        warnings.warn(f"force=True: {p.problem}", QuantizeWarning, stacklevel=3)


# ---- integer weights -------------------------------------------------------------------------
@singledispatch
def kappa_weight(syn, kappa: Tensor, src_shape: tuple[int, ...]) -> Tensor:
    """``W * kappa[input channel]`` in the weight's own layout (``kappa``: (C_src,))."""
    raise TypeError(type(syn).__name__)


@kappa_weight.register
def _(syn: FConv, kappa: Tensor, src_shape) -> Tensor:
    co, cig = syn.weight.shape[:2]
    cin = torch.arange(co)[:, None] // (co // syn.groups) * cig + torch.arange(cig)[None, :]
    return syn.weight * kappa.to(DT)[cin][:, :, None, None]


@kappa_weight.register
def _(syn: FDense, kappa: Tensor, src_shape) -> Tensor:
    per = syn.weight.shape[1] // kappa.numel()  # positions per channel (pooled ones behind a pool)
    return syn.weight * kappa.to(DT).repeat_interleave(per)[None, :]


def out_view(vec: Tensor, w: Tensor) -> Tensor:
    """A per-output-channel (Co,) vector broadcast against weight ``w``."""
    return vec.reshape((-1,) + (1,) * (w.dim() - 1))


def round_to(x: Tensor, step: int) -> Tensor:
    return torch.round(x / step) * step


def int_weight(wk: Tensor, sigma: Tensor, opts: Options) -> Tensor:
    """``W_int = step * round(W kappa sigma_o / step)`` clipped to +-weight_max (float64 holding
    ints; clipping only happens for refused or forced scales, see ``clipped_channels``)."""
    lim = opts.weight_max - opts.weight_max % opts.weight_step
    return round_to(wk * out_view(sigma, wk), opts.weight_step).clamp(-lim, lim)


def clipped_channels(wks: list[Tensor], sigma: Tensor, opts: Options) -> int:
    """Output channels with a weight that ``int_weight`` clips at scale ``sigma`` (Co,); the
    searched scales never clip, so this is a refusal reason for scale overrides."""
    lim = opts.weight_max - opts.weight_max % opts.weight_step
    mask = torch.zeros(sigma.shape[0], dtype=torch.bool)
    for wk in wks:
        big = round_to(wk * out_view(sigma, wk), opts.weight_step).abs() > lim
        mask |= big.reshape(big.shape[0], -1).any(1)
    return int(mask.sum())


def with_weight(syn, weight: Tensor):
    """A copy of a folded synapse with other weights (e.g. the ints, to run them in float64)."""
    kw = {f.name: getattr(syn, f.name) for f in fields(syn)}
    kw["weight"] = weight
    return type(syn)(**kw)


@singledispatch
def to_qsyn(syn, weight: Tensor):
    """The qir synapse for a folded synapse with int weights (int64 numpy, PyTorch layout)."""
    raise TypeError(type(syn).__name__)


@to_qsyn.register
def _(syn: FConv, weight: Tensor) -> qir.ConvSyn:
    return qir.ConvSyn(syn.source, weight=_np(weight), stride=tuple(syn.stride),
                       padding=tuple(syn.padding), dilation=tuple(syn.dilation), groups=int(syn.groups),
                       pool=syn.pool)


@to_qsyn.register
def _(syn: FDense, weight: Tensor) -> qir.DenseSyn:
    return qir.DenseSyn(syn.source, weight=_np(weight), pool=syn.pool)


def _np(t: Tensor) -> np.ndarray:
    return np.asarray(torch.round(t).to(torch.int64).numpy(), dtype=np.int64)


def per_channel_max(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(C,) max over positions of a (C,) or full-shape per-neuron array."""
    return x.reshape(shape[0], -1).amax(1)


def step_range(w: Tensor, lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """Per output channel (Co,), the range of ``sum_i w[o, i] m_i`` for messages m in [lo, hi]."""
    w2 = w.reshape(w.shape[0], -1)
    a, b = w2 * lo, w2 * hi
    return torch.minimum(a, b).sum(1), torch.maximum(a, b).sum(1)


@singledispatch
def dense_problems(syn, name: str, w: Tensor) -> list[Problem]:
    """NetX loads a dense matrix exactly only when mixed-sign in [-256, 254] or non-negative in
    [0, 255], and not all zero (reference doc §1.7); conv weights reach Lava unchanged."""
    return []


@dense_problems.register
def _(syn: FDense, name: str, w: Tensor) -> list[Problem]:
    lo, hi = float(w.min()), float(w.max())
    (mixed_lo, mixed_hi), pos_hi = DENSE_MIXED_RANGE, DENSE_POSITIVE_MAX
    if (lo < 0 < hi and lo >= mixed_lo and hi <= mixed_hi) or (0 <= lo and 0 < hi <= pos_hi):
        return []
    why = "is all zero" if lo == hi == 0 else "has no positive weight" if hi <= 0 else \
        f"spans [{lo:g}, {hi:g}]"
    return [Problem(f"block '{name}': the dense synapse from '{syn.source}' {why}; NetX cannot load "
                    f"it exactly (needs mixed sign in [{mixed_lo}, {mixed_hi}] or non-negative in [0, {pos_hi}], not all zero)",
                    "check that layer's weights (an all-inhibitory or all-zero layer never fires)")]


# ---- the per-layer scale search --------------------------------------------------------------
@dataclass
class SynData:
    """One synapse with what the search needs: ``wk`` = W kappa (weight layout), the source's
    float values ``f`` (ANN units) and integer-domain messages ``m`` on the same samples, and
    the per-step message range [lo, hi]."""
    syn: Any
    wk: Tensor
    f: Tensor
    m: Tensor
    lo: float
    hi: float
    hkey: Any = None  # messages equal to others up to a factor share this key (a reusable Hessian)


@dataclass
class Candidate:
    """One scale choice for a block, evaluated."""
    scale: Any  # what the target searches (sigma, V or u)
    sigma: Tensor  # (Co,) int units per ANN unit of pre-activation
    weights: list[Tensor]
    bias: Tensor | None  # ints, (C,) or full shape
    neuron: Any
    norm_int: Tensor  # (Co,) int normalizer (vth, or sigma for readouts)
    norm: Tensor  # (Co,) float normalizer (theta, or 1)
    bias_a: Tensor | None = None  # bias in a-units per step for the error metric
    act: str = "linear"  # ACTIVATIONS key applied to both sides of the error metric
    error: float = math.inf
    problems: list[Problem] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


METRIC_SAMPLES = 32  # samples the error metric looks at (scale search cost)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "rate": lambda z: z.clamp(0, 1),  # spiking: normalized rate, ReLU clipped at the threshold
    "relu": lambda z: z.clamp(min=0),  # SDNN hidden layers
    "linear": lambda z: z,  # readouts
}


def reference(block: FBlock, data: list[SynData], cand: Candidate) -> tuple[Tensor, Tensor]:
    """The float side of the metric: ``act((sum W f + b) / norm)`` on the metric's samples, with
    and without the bias (float32: the metric needs no exactness)."""
    z = sum(apply_syn(_f32(d.syn), d.f[:METRIC_SAMPLES].float()) for d in data)
    view = channel_view(cand.norm.float(), block.shape).unsqueeze(0)
    zb = z + block.bias_full().float().unsqueeze(0) if block.bias is not None else z
    act = ACTIVATIONS[cand.act]
    return act(z / view), act(zb / view)


def relative_error(block: FBlock, data: list[SynData], cand: Candidate, ref=None) -> float:
    """Quantization error of a layer on the samples: per channel
    ``|act(q/norm_int) - act(z/norm)|^2 / |act(z/norm)|^2``, averaged over the channels that are
    active on the samples, with ``q = sum W_int m + bias_a`` (integer domain) and ``z = sum W f + b``.
    For spiking layers the normalizers are vth and theta and ``act`` clips to [0, 1], so this is
    the error of the spike rates; channels that never fire on the data do not count."""
    z_nb, z_b = ref if ref is not None else reference(block, data, cand)
    shape = block.shape
    q = sum(apply_syn(with_weight(_f32(d.syn), w.float()), d.m[:METRIC_SAMPLES].float())
            for d, w in zip(data, cand.weights))
    zn = z_nb
    if cand.bias_a is not None:
        q = q + _full(cand.bias_a, shape).float().unsqueeze(0)
        zn = z_b
    qn = ACTIVATIONS[cand.act](q / channel_view(cand.norm_int.float(), shape).unsqueeze(0))
    # Per channel, then averaged: every channel counts the same whatever its threshold.
    c = shape[0]
    num = ((qn - zn) ** 2).transpose(0, 1).reshape(c, -1).mean(1)
    den = (zn ** 2).transpose(0, 1).reshape(c, -1).mean(1)
    live = den > 0
    if not bool(live.any()):
        return float(num.mean())
    return float((num[live] / den[live]).mean())


def _f32(syn):
    return with_weight(syn, syn.weight.float())


def _full(b: Tensor, shape: tuple[int, ...]) -> Tensor:
    if tuple(b.shape) == tuple(shape):
        return b
    return channel_view(b, shape).expand(shape)


def weight_error(data: list[SynData], cand: Candidate) -> float:
    """Relative weight quantization error ``|W_int/(kappa sigma) - W| / |W|`` over the block."""
    num = den = 0.0
    for d, w in zip(data, cand.weights):
        deq = w / out_view(cand.sigma, w)
        num += float(((deq - d.wk) ** 2).sum())
        den += float((d.wk ** 2).sum())
    return math.sqrt(num / den) if den > 0 else 0.0


def geometric_grid(top: float, per_octave: int, octaves: int = 1) -> list[float]:
    """``top * 2^(-k/per_octave)`` for k = 0 .. per_octave*octaves."""
    return [top * 2.0 ** (-k / per_octave) for k in range(per_octave * octaves + 1)]


def search(block: FBlock, data: list[SynData], scales: list, make: Callable[[Any], Candidate],
           fallback_scales: list | None = None) -> tuple[Candidate, bool]:
    """Evaluate ``make(scale)`` for every candidate scale; return the valid one with the least
    ``relative_error`` (ties: the larger scale), and whether one was valid. Without a valid
    candidate among ``scales``, ``fallback_scales`` are tried; the first candidate is returned
    with its problems otherwise (for the refusal message, or ``force``)."""
    best, first, ref = None, None, None
    for group in (scales, fallback_scales or []):
        for s in group:
            cand = make(s)
            first = first or cand
            ref = ref or reference(block, data, cand)
            if cand.problems:
                continue
            cand.error = relative_error(block, data, cand, ref)
            if best is None or cand.error < best.error - 1e-15:
                best = cand
        if best is not None:
            return best, True
    first.error = relative_error(block, data, first, ref)
    return first, False


def layer_meta(b: FBlock, data: list[SynData], cand: Candidate, ctx: Context, approx: bool = False) -> dict:
    """Per-layer provenance stored in ``QNetwork.meta['layers']`` (made JSON-friendly later)."""
    hops = [ctx.hops[d.syn.source] + 1 for d in data]
    m = {"role": b.role, "neuron": type(cand.neuron).__name__, "sources": [d.syn.source for d in data],
         "path_hops": hops, "scale": float(cand.scale), "sigma": [float(cand.sigma.min()), float(cand.sigma.max())],
         "weight_rel_error": weight_error(data, cand), "search_error": cand.error, "flags": [], **cand.info}
    flags = m["flags"]
    if len(set(hops)) > 1:  # e.g. a residual block: main branch 2 hops, identity shortcut 1
        flags.append("delay-mismatch")
        m["note_delay"] = (f"synapse paths reach this block {hops} hops from the input: the shorter "
                           "path's current (e.g. an identity shortcut's) arrives earlier, as in the "
                           "float SNN with delay=1")
    if approx:
        flags.append("model-approx")
    if cand.info.get("thresholds_clamped") or cand.info.get("thresholds_raised"):
        flags.append("threshold-raised")
    if cand.info.get("dropped"):
        flags.append("params-dropped")
    return m


@singledispatch
def jsonable(x: Any) -> Any:
    """Meta values as plain Python (meta is written into exported files)."""
    return x


@jsonable.register
def _(x: Tensor) -> Any:
    return x.detach().cpu().tolist()


@jsonable.register
def _(x: np.ndarray) -> Any:
    return x.tolist()


@jsonable.register(np.generic)
def _(x) -> Any:
    return x.item()


@jsonable.register
def _(x: dict) -> Any:
    return {str(k): jsonable(v) for k, v in x.items()}


@jsonable.register(list)
@jsonable.register(tuple)
def _(x) -> Any:
    return [jsonable(v) for v in x]
