"""Per-layer quantization report: scales, weight precision, biases, thresholds, and the ranges
of every integer state -- worst case (proved from the ints, here) and observed (emulated on
calibration data, ``emulate.quant_report``) -- against Loihi's 24-bit states and 16-bit graded
payloads.

The worst-case pass propagates integer intervals block by block, dispatching on the neuron type
(``_worst``): each neuron turns its input range into state ranges and into the range of the
messages it sends, per step and accumulated over the run (SDNN layers integrate accumulated
messages, spiking layers per-step ones). It reads only the ``QNetwork`` (plus ``meta`` for
float-side errors), so it also describes networks read back from NetX files.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import singledispatch

import numpy as np

from loihi_conv.base.limits import BIAS_MAX, INT16_MAX, STATE_MAX
from loihi_conv.fixed import qir
from loihi_conv.fixed.qir import mantissa_bits
from loihi_conv.fixed.softif_modes import is_buffered

Range = tuple[int, int]


@dataclass
class StateRange:
    """Range of one integer quantity against its limit. ``mode``: 'wrap' (two's complement,
    silently wrong), 'saturate' (clipped), 'payload' (16-bit graded message)."""
    name: str
    lo: int
    hi: int
    limit: int
    mode: str

    @property
    def exceeds(self) -> bool:
        return max(-self.lo, self.hi) > self.limit

    @property
    def fraction(self) -> float:
        """max |value| / limit."""
        return max(-self.lo, self.hi) / self.limit

    def sides(self, bound: int) -> list[str]:
        """'-' / '+' for each side beyond ``bound``."""
        return [sign for sign, v in (("-", -self.lo), ("+", self.hi)) if v > bound]

    def __str__(self) -> str:
        return f"{self.name} {self.lo / self.limit:+.2f}..{self.hi / self.limit:+.2f}"


# Flag prefixes. Worst case beyond the limit: a wrapping state would be silently wrong, a
# saturating one clipped (on the '-' side of a membrane this only stops a neuron with a strongly
# negative input from recovering, which rarely matters), a graded spike would overflow 16 bits.
RISK = {"wrap": "wrap-risk", "saturate": "clip-risk", "payload": "payload-risk"}
# Observed on calibration data at (saturate) or beyond (wrap, payload) the limit.
HIT = {"wrap": "overflow", "saturate": "saturated", "payload": "overflow"}


@dataclass
class LayerReport:
    """One block. Scales are state units per ANN unit (sigma); errors are relative;
    ``weight_bits`` counts the signed mantissa (the shared power of two removed)."""
    name: str
    neuron: str
    shape: tuple[int, ...]
    sources: list[str]
    path_hops: list[int]
    scale: list[float] | None
    weight_bits: int
    max_abs_weight: int
    weight_rel_error: float | None
    bias_range: Range | None
    threshold: Range | None
    threshold_rel_error: float | None
    worst: list[StateRange]
    observed: list[StateRange] = field(default_factory=list)
    spike_rate: float | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class QuantReport:
    target: str
    timesteps: int | None
    steps: int
    input_scale: float
    output_scale: float
    layers: list[LayerReport]
    notes: list[str] = field(default_factory=list)

    @property
    def flags(self) -> list[tuple[str, str]]:
        """(block, flag) for every flag raised."""
        return [(lr.name, f) for lr in self.layers for f in lr.flags]

    def __getitem__(self, name: str) -> LayerReport:
        return next(lr for lr in self.layers if lr.name == name)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """Markdown table, one row per block."""
        rows = [f"target {self.target}, T={self.timesteps}, {self.steps} steps, input_scale "
                f"{self.input_scale:g}, output_scale {self.output_scale:g}", "",
                "| block | neuron | sigma | bits | max abs W | W err | bias | vth | worst / limit "
                "| observed / limit | flags |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for lr in self.layers:
            rows.append(" | ".join([f"| {lr.name}", lr.neuron, _span(lr.scale, "{:.4g}"), str(lr.weight_bits),
                                    str(lr.max_abs_weight), _fmt(lr.weight_rel_error, "{:.2%}"),
                                    _span(lr.bias_range), _span(lr.threshold), ", ".join(map(str, lr.worst)),
                                    ", ".join(map(str, lr.observed)), " ".join(lr.flags)]) + " |")
        rows += [""] + [f"* {n}" for n in self.notes]
        return "\n".join(rows)

    __str__ = table


def _fmt(v, fmt: str = "{}") -> str:
    return "" if v is None else fmt.format(v)


def _span(r, fmt: str = "{}") -> str:
    """'a' or 'a..b' for a (lo, hi) pair."""
    if r is None:
        return ""
    lo, hi = (fmt.format(v) for v in r)
    return lo if lo == hi else f"{lo}..{hi}"


# ---- worst-case interval propagation ------------------------------------------------------------
@dataclass
class Msg:
    """Range of a block's out messages per step and accumulated over the run (ints)."""
    step: Range
    acc: Range


def _w_range(syn, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(syn.weight, dtype=np.float64)
    w2 = w.reshape(w.shape[0], -1)
    a, b = w2 * lo, w2 * hi
    return np.minimum(a, b).sum(1), np.maximum(a, b).sum(1)


def _bias_range(block: qir.Block) -> tuple[np.ndarray, np.ndarray]:
    c = block.shape[0]
    if block.bias is None:
        return np.zeros(c), np.zeros(c)
    b = np.asarray(block.bias, dtype=np.float64).reshape(c, -1)
    return b.min(1), b.max(1)


@singledispatch
def _worst(neuron, block: qir.Block, a_step, a_acc, steps: int, in_rng: Range) -> tuple[list[StateRange], Msg]:
    raise TypeError(f"no worst-case model for {type(neuron).__name__}")


@_worst.register(type(None))
def _(neuron, block, a_step, a_acc, steps, in_rng):
    return [], Msg(in_rng, (in_rng[0] * steps, in_rng[1] * steps))


@_worst.register
def _(neuron: qir.Cuba, block, a_step, a_acc, steps, in_rng):
    """u = a << 6 (wraps), v integrates up to vth<<6 plus one step, drifts down when a+b < 0."""
    (alo, ahi), (blo, bhi) = a_step, _bias_range(block)
    vth = float(neuron.vth)
    u = StateRange("u", int(64 * alo.min()), int(64 * ahi.max()), STATE_MAX, "wrap")
    v = StateRange("v", int(64 * steps * min(float((alo + blo).min()), 0)),
                   int(64 * (vth + max(float((ahi + bhi).max()), 0))), STATE_MAX, "saturate")
    return [u, v], Msg((0, 1), (0, steps))


@_worst.register
def _(neuron: qir.SoftIF, block, a_step, a_acc, steps, in_rng):
    """v < vth<<6 after a spike unless one step's input exceeds what one message can carry
    (max_units * vth; then it grows by the excess). Graded modes send up to U = max_units units
    per step, a buffered neuron also -U; SpiCalib takes one more unit back (docs/targets.md §3.1)."""
    (alo, ahi), (blo, bhi) = a_step, _bias_range(block)
    units = int(getattr(neuron, "max_units", 1))
    vth = np.asarray(neuron.vth, dtype=np.float64)
    v0 = np.zeros_like(vth) if neuron.v_init is None else np.asarray(neuron.v_init, dtype=np.float64)
    inc = ahi + bhi
    hi = 64 * (np.maximum(units * vth, v0) + np.maximum(inc, 0) + steps * np.maximum(inc - units * vth, 0))
    lo = 64 * (np.minimum(v0, 0) + steps * np.minimum(alo + blo, 0))
    low = (-units if is_buffered(getattr(neuron, "mode", "")) else 0) \
        - int(getattr(neuron, "spicalib_beta", None) is not None)
    return ([StateRange("v", int(lo.min()), int(hi.max()), STATE_MAX, "saturate")],
            Msg((low, units), (low * steps, units * steps)))


@_worst.register
def _(neuron: qir.Readout, block, a_step, a_acc, steps, in_rng):
    """u accumulates a << 6 every step (wraps); v = u + bias<<6 (saturates)."""
    (alo, ahi), (blo, bhi) = a_step, _bias_range(block)
    u = StateRange("u", int(64 * steps * alo.min()), int(64 * steps * ahi.max()), STATE_MAX, "wrap")
    v = StateRange("v", int(64 * (steps * alo + blo).min()), int(64 * (steps * ahi + bhi).max()), STATE_MAX,
                   "saturate")
    return [u, v], Msg((0, 0), (0, 0))


def _sdn_exp(neuron) -> int:
    return int(neuron.spike_exp) + int(neuron.state_exp)


@_worst.register
def _(neuron: qir.Delta, block, a_step, a_acc, steps, in_rng):
    """act = x << (E+S); sends the change >> S."""
    e, s = _sdn_exp(neuron), int(neuron.state_exp)
    lo, hi = in_rng
    act = StateRange("act", lo << e, hi << e, STATE_MAX, "wrap")
    span = (hi - lo) << (e - s)
    pay = StateRange("payload", -span, span, INT16_MAX, "payload")
    return [act, pay], Msg((-span, span), (lo << (e - s), hi << (e - s)))


@_worst.register
def _(neuron: qir.SigmaDelta, block, a_step, a_acc, steps, in_rng):
    """sigma = accumulated input; act = relu(sigma + bias << (E+S)); sends changes >> S."""
    e, s = _sdn_exp(neuron), int(neuron.state_exp)
    (alo, ahi), (_, bhi) = a_acc, _bias_range(block)
    sig = StateRange("sigma", int(alo.min()), int(ahi.max()), STATE_MAX, "wrap")
    act_hi = int(max(float((ahi + bhi * 2 ** e).max()), 0))
    act = StateRange("act", 0, act_hi, STATE_MAX, "wrap")
    p = act_hi >> s
    pay = StateRange("payload", -p, p, INT16_MAX, "payload")
    return [sig, act, pay], Msg((-p, p), (0, p))


@_worst.register
def _(neuron: qir.Sigma, block, a_step, a_acc, steps, in_rng):
    alo, ahi = a_acc
    return [StateRange("sigma", int(alo.min()), int(ahi.max()), STATE_MAX, "wrap")], Msg((0, 0), (0, 0))


def worst_case(qnet: qir.QNetwork, steps: int, in_rng: Range) -> dict[str, list[StateRange]]:
    """Worst-case state ranges of every block over ``steps`` steps for inputs in ``in_rng``."""
    msgs: dict[str, Msg] = {}
    out = {}
    for b in qnet.blocks:
        c = b.shape[0]
        slo, shi, clo, chi = (np.zeros(c) for _ in range(4))
        for syn in b.synapses:
            m = msgs[syn.source]
            lo, hi = _w_range(syn, *m.step)
            slo, shi = slo + lo, shi + hi
            lo, hi = _w_range(syn, *m.acc)
            clo, chi = clo + lo, chi + hi
        out[b.name], msgs[b.name] = _worst(b.neuron, b, (slo, shi), (clo, chi), steps, in_rng)
    return out


@singledispatch
def graded(neuron) -> bool:
    """Whether the block sends 16-bit graded spikes (binary spikes and Sigma's 32-bit output
    are not payload-limited)."""
    return False


@graded.register(qir.Delta)
@graded.register(qir.SigmaDelta)
def _(neuron) -> bool:
    return True


# ---- the report ---------------------------------------------------------------------------------
def _weights(block: qir.Block) -> np.ndarray:
    if not block.synapses:
        return np.zeros(1, dtype=np.int64)
    return np.concatenate([np.asarray(s.weight, dtype=np.int64).ravel() for s in block.synapses])




@singledispatch
def _threshold(neuron) -> Range | None:
    return None


@_threshold.register
def _(neuron: qir.Cuba) -> Range:
    return int(neuron.vth), int(neuron.vth)


@_threshold.register
def _(neuron: qir.SoftIF) -> Range:
    v = np.asarray(neuron.vth)
    return int(v.min()), int(v.max())


@_threshold.register(qir.Delta)
@_threshold.register(qir.SigmaDelta)
def _(neuron) -> Range:
    return int(neuron.vth), int(neuron.vth)


def default_steps(qnet: qir.QNetwork) -> int:
    """The steps a report covers by default: the run the network was quantized for."""
    return int((qnet.meta or {}).get("steps_run") or (64 + qnet.depth))


def build_report(qnet: qir.QNetwork, steps: int, obs: dict[str, list[StateRange]] | None = None,
                 rates: dict[str, float] | None = None) -> QuantReport:
    """The ``QuantReport`` of ``qnet`` over ``steps`` steps: worst-case ranges proved here, plus
    the ranges and spike rates observed by an emulation (``emulate.quant_report.report``)."""
    obs, rates = obs or {}, rates or {}
    meta = qnet.meta or {}
    in_rng = tuple(int(v) for v in meta.get("input_range_int", (0, 255)))
    worst = worst_case(qnet, steps, in_rng)
    layers = []
    for b in qnet.blocks[1:]:
        lm = (meta.get("layers") or {}).get(b.name, {})
        w = _weights(b)
        flags = list(lm.get("flags", []))
        for s in worst[b.name]:
            flags += [f"{RISK[s.mode]}:{s.name}{side}" for side in s.sides(s.limit)]
        for s in obs.get(b.name, []):
            flags += [f"{HIT[s.mode]}:{s.name}{side}" for side in s.sides(s.limit - 1)]
        if b.bias is not None and np.abs(np.asarray(b.bias)).max() > BIAS_MAX:
            flags.append("bias-hw")
        bias = None if b.bias is None else (int(np.min(b.bias)), int(np.max(b.bias)))
        layers.append(LayerReport(
            b.name, type(b.neuron).__name__, tuple(b.shape), [s.source for s in b.synapses],
            lm.get("path_hops", []), lm.get("sigma"), mantissa_bits(w), int(np.abs(w).max()), lm.get("weight_rel_error"),
            bias, _threshold(b.neuron), lm.get("threshold_rel_error"), worst[b.name], obs.get(b.name, []),
            rates.get(b.name), flags))
    return QuantReport(meta.get("target", "?"), meta.get("timesteps"), steps, float(qnet.input_scale),
                       float(qnet.output_scale), layers, list(meta.get("notes", [])))
