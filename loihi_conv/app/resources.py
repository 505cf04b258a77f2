"""What a NetX network holds, what it would occupy on Loihi 2, and what Loihi 2 cannot take.

``inspect_file(path)`` reads a NetX file (ours, standard or extension, or lava-dl's own) through
``netx_export.load`` / ``read_info``; ``inspect_network(qnet)`` describes any ``qir.QNetwork``.
Both return an ``Inspection``: one ``LayerInfo`` per block (type, shape, neuron and its
parameters, weight/bias ranges and the bits they need, delays, fan-in, synapse count, memory,
cores), network totals and warnings.

Resource numbers are *estimates* from public Loihi 2 figures (``LIMITS``, each with its source;
``inferred`` marks numbers derived by us rather than stated by Intel). Counting conventions:
* a synapse is one (input neuron, output neuron) pair with a stored weight; conv synapses are
  counted expanded (each output neuron's own copy of the kernel taps that land on real input,
  padding excluded), which is the conservative case: whether Loihi 2 shares conv weights
  between neurons is not documented in the open Lava repositories;
* synaptic memory = synapses x (8 weight bits + 6 delay bits if the synapse has delays); axon
  and routing tables are not counted;
* a block with a neuron is one population on its own cores (Lava maps each process to whole
  cores); a neuron-less input block is sent from the host and takes no neurocore.

Layouts: every array read here is PyTorch order (``qir``); nothing is converted.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import singledispatch
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loihi_conv.base.limits import LIMITS, NETX_READOUT_VTH, REF, Limit  # noqa: F401  (Limit: public type of LIMITS)
from loihi_conv.fixed import qir
from loihi_conv.fixed.qir import mantissa_bits


# ---- per-layer description ---------------------------------------------------------------
@dataclass
class SynapseInfo:
    """One synapse (connection) into a block. ``synapses``: expanded (pre, post) pairs;
    ``weights``: stored weight values (kernel size for conv); ``fan_in``: max inputs of one
    output neuron through this connection; ``delay``: extra steps (min, max) or None."""
    kind: str
    source: str
    weight_shape: tuple[int, ...]
    weight_range: tuple[int, int]
    weight_bits: int
    weights: int
    nonzero_weights: int
    synapses: int
    fan_in: int
    geometry: str = ""
    delay: tuple[int, int] | None = None


@dataclass
class LayerInfo:
    index: int
    name: str
    kind: str  # input | conv | dense
    shape: tuple[int, ...]
    neurons: int
    neuron: str  # qir neuron class name, or "none" (host input)
    params: dict[str, Any]
    synapses: list[SynapseInfo]
    bias_range: tuple[int, int] | None
    bias_bits: int
    fan_in: int
    synapse_count: int
    memory_bytes: int
    cores: tuple[int, int]  # (best case, as Lava placed the tutorial network)
    warnings: list[str] = field(default_factory=list)

    @property
    def weight_range(self) -> tuple[int, int] | None:
        if not self.synapses:
            return None
        return (min(s.weight_range[0] for s in self.synapses), max(s.weight_range[1] for s in self.synapses))

    @property
    def weight_bits(self) -> int:
        return max((s.weight_bits for s in self.synapses), default=0)


@dataclass
class Inspection:
    """Everything ``inspect`` reports. ``info``: the file's root attributes (``read_info``), or
    None for an in-memory network; ``notes``: facts that are not hardware problems."""
    path: str | None
    info: dict | None
    meta: dict
    input_scale: float
    output_scale: float
    depth: int
    layers: list[LayerInfo]
    extension: list[str]
    warnings: list[str]
    notes: list[str]

    @property
    def neurons(self) -> int:
        """Neurons on chip (the host-driven input block excluded)."""
        return sum(lr.neurons for lr in self.layers if lr.neuron != "none")

    @property
    def synapses(self) -> int:
        return sum(lr.synapse_count for lr in self.layers)

    @property
    def memory_bytes(self) -> int:
        return sum(lr.memory_bytes for lr in self.layers)

    @property
    def cores(self) -> tuple[int, int]:
        return (sum(lr.cores[0] for lr in self.layers), sum(lr.cores[1] for lr in self.layers))

    @property
    def chips(self) -> tuple[int, int]:
        per = LIMITS["cores_per_chip"].value
        return tuple(max(1, math.ceil(c / per)) for c in self.cores)

    @property
    def recipe(self) -> dict | None:
        return (self.info or {}).get("recipe") or self.meta.get("recipe")

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return {
            "path": self.path, "info": _jsonable(self.info), "input_scale": self.input_scale,
            "output_scale": self.output_scale, "depth": self.depth,
            "layers": [asdict(lr) for lr in self.layers],
            "totals": {"neurons": self.neurons, "synapses": self.synapses,
                       "memory_bytes": self.memory_bytes, "cores": list(self.cores),
                       "chips": list(self.chips)},
            "extension": self.extension, "warnings": self.warnings, "notes": self.notes,
            "limits": {k: asdict(v) for k, v in LIMITS.items()},
        }

    def table(self) -> str:
        """The human-readable report: header, layer table, resources, warnings, limits."""
        return _render(self)

    __str__ = table


# ---- neuron parameters (one rule per neuron type) ------------------------------------------
def _span(a) -> list[int] | int:
    a = np.asarray(a, dtype=np.int64).ravel()
    lo, hi = int(a.min()), int(a.max())
    return lo if lo == hi else [lo, hi]


@singledispatch
def neuron_params(neuron) -> dict[str, Any]:
    """Parameters of a qir neuron as plain ints (ranges as [min, max])."""
    return {}


@neuron_params.register
def _(neuron: qir.Cuba) -> dict[str, Any]:
    return {"vth": int(neuron.vth), "du": int(neuron.i_decay), "dv": int(neuron.v_decay),
            "bias_exp": int(neuron.bias_exp)}


@neuron_params.register
def _(neuron: qir.Readout) -> dict[str, Any]:
    return {"vth": int(neuron.vth), "du": int(neuron.i_decay), "dv": int(neuron.v_decay),
            "bias_exp": int(neuron.bias_exp)}


@neuron_params.register
def _(neuron: qir.SoftIF) -> dict[str, Any]:
    p = {"vth": _span(neuron.vth), "bias_exp": int(neuron.bias_exp)}
    if neuron.v_init is not None:
        p["v_init"] = _span(neuron.v_init)
    if neuron.params:
        p["params"] = dict(neuron.params)
    return p


@neuron_params.register(qir.Delta)
@neuron_params.register(qir.SigmaDelta)
def _(neuron) -> dict[str, Any]:
    return {"vth": int(neuron.vth), "spike_exp": int(neuron.spike_exp), "state_exp": int(neuron.state_exp)}


def _params_text(params: dict[str, Any]) -> str:
    def fmt(v):
        return f"{v[0]}..{v[1]}" if isinstance(v, list) and len(v) == 2 else str(v)
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


# ---- synapses (one rule per synapse type) --------------------------------------------------
@singledispatch
def synapse_info(syn, src_shape: tuple[int, ...], dst_shape: tuple[int, ...]) -> SynapseInfo:
    """Counts and ranges of one qir synapse feeding a block of ``dst_shape``."""
    raise TypeError(f"no description for synapse type {type(syn).__name__}")


def _weight_stats(w: np.ndarray) -> dict[str, Any]:
    w = np.asarray(w, dtype=np.int64)
    return {"weight_shape": tuple(int(s) for s in w.shape), "weight_range": (int(w.min()), int(w.max())),
            "weight_bits": mantissa_bits(w), "weights": int(w.size), "nonzero_weights": int(np.count_nonzero(w))}




def conv_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> np.ndarray:
    """Per output position along one axis: how many kernel taps land on real input (not padding)."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    pos = np.arange(out)[:, None] * stride - padding + np.arange(kernel)[None, :] * dilation
    return ((pos >= 0) & (pos < size)).sum(axis=1)


@synapse_info.register
def _(syn: qir.ConvSyn, src_shape, dst_shape) -> SynapseInfo:
    w = np.asarray(syn.weight)
    co, ci_g, kh, kw = w.shape
    # Taps per output position are separable: (taps along y) x (taps along x).
    taps = np.outer(*(conv_taps(src_shape[1 + a], (kh, kw)[a], syn.stride[a], syn.padding[a], syn.dilation[a])
                      for a in (0, 1)))
    geometry = f"k{kh}x{kw} s{tuple(syn.stride)} p{tuple(syn.padding)}"
    if tuple(syn.dilation) != (1, 1):
        geometry += f" d{tuple(syn.dilation)}"
    if syn.groups != 1:
        geometry += f" g{syn.groups}"
    return SynapseInfo("conv", syn.source, synapses=int(taps.sum()) * ci_g * co, fan_in=int(taps.max()) * ci_g,
                       geometry=geometry, **_weight_stats(w))


@synapse_info.register
def _(syn: qir.DenseSyn, src_shape, dst_shape) -> SynapseInfo:
    w = np.asarray(syn.weight)
    delay = None if syn.delay is None else (int(np.min(syn.delay)), int(np.max(syn.delay)))
    return SynapseInfo("dense", syn.source, synapses=int(w.size), fan_in=int(w.shape[1]),
                       geometry=f"{w.shape[1]}->{w.shape[0]}", delay=delay, **_weight_stats(w))


# ---- hardware warnings: small rules registered in order -------------------------------------
Rule = Callable[[qir.Block, "LayerInfo"], list[str]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    """Register a warning rule: (block, its LayerInfo) -> warning texts."""
    RULES.append(fn)
    return fn


@singledispatch
def microcode_need(neuron) -> str | None:
    """Why this neuron model is not one of Loihi 2's built-in (Lava-on-Loihi) neuron models."""
    return None


@microcode_need.register
def _(neuron: qir.SoftIF) -> str:
    return ("SoftIF (IF with reset by subtraction, per-channel threshold) is a loihi-conv "
            "extension: it runs in Lava's CPU simulator as a custom process but needs custom "
            "neuron microcode on Loihi 2 (not provided); use --target cuba or sdnn for the board")


@rule
def _microcode(block, layer):
    need = microcode_need(block.neuron)
    return [need] if need else []


@rule
def _weight_bits(block, layer):
    lim = LIMITS["weight_bits"].value
    return [f"{s.kind} weights from {s.source!r} need {s.weight_bits} bits "
            f"({s.weight_range[0]}..{s.weight_range[1]}); Loihi 2 stores an {lim}-bit signed "
            f"mantissa times a shared power of two (requantize, e.g. even ints in [-254, 254])"
            for s in layer.synapses if s.weight_bits > lim]


@rule
def _bias(block, layer):
    lim = LIMITS["bias_max"].value
    if layer.bias_range is None or -(lim + 1) <= layer.bias_range[0] and layer.bias_range[1] <= lim:
        return []
    return [f"bias {layer.bias_range[0]}..{layer.bias_range[1]} needs {layer.bias_bits} bits; "
            f"the Loihi 2 bias mantissa is 13-bit signed ({-(lim + 1)}..{lim}); lower the bias scale "
            "or raise bias_exp"]


@singledispatch
def _vth_values(neuron) -> np.ndarray | None:
    return None


@_vth_values.register(qir.Cuba)
@_vth_values.register(qir.Readout)
@_vth_values.register(qir.SoftIF)
@_vth_values.register(qir.Delta)
@_vth_values.register(qir.SigmaDelta)
def _(neuron):
    return np.asarray(neuron.vth, dtype=np.int64).ravel()


@rule
def _vth(block, layer):
    v = _vth_values(block.neuron)
    lim = LIMITS["vth_max"].value
    if v is None or int(v.max()) <= lim or _is_netx_readout(block.neuron):
        return []
    return [f"vThMant {int(v.max())} exceeds 17 bits (max {lim}); rescale weights and threshold together"]


def _is_netx_readout(neuron) -> bool:
    """netx's own default neuron for a dense layer without one: vThMant = 1 << 18 - 1 = 131072."""
    return isinstance(neuron, qir.Readout) and int(neuron.vth) == NETX_READOUT_VTH


@rule
def _delays(block, layer):
    lim = LIMITS["delay_max"].value
    return [f"dense delays from {s.source!r} reach {s.delay[1]} steps; Loihi 2 delays are 6-bit and "
            f"netx clamps them to {lim}" for s in layer.synapses if s.delay and s.delay[1] > lim]


# ---- resources --------------------------------------------------------------------------------
def _bits_signed(lo: int, hi: int) -> int:
    """Bits of a two's-complement register holding every value in [lo, hi] (sign included)."""
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1


def _cores(neurons: int, synapses: int, has_neuron: bool) -> tuple[int, int]:
    if not has_neuron:
        return (0, 0)

    def need(n_lim: str, s_lim: str) -> int:
        return max(1, math.ceil(neurons / LIMITS[n_lim].value), math.ceil(synapses / LIMITS[s_lim].value))
    return (need("neurons_per_core_max", "synapses_per_core_max"), need("neurons_per_core", "synapses_per_core"))


def _memory(syns: list[SynapseInfo]) -> int:
    bits = sum(s.synapses * (LIMITS["weight_bits"].value + (6 if s.delay else 0)) for s in syns)
    return math.ceil(bits / 8)


def layer_info(index: int, block: qir.Block, shapes: dict[str, tuple[int, ...]]) -> LayerInfo:
    """Describe one block (``shapes``: block name -> shape of every earlier block)."""
    syns = [synapse_info(s, qir.synapse_input_shape(s, shapes[s.source]), tuple(block.shape))
            for s in block.synapses]
    kind = "input" if block.is_input else syns[0].kind
    neurons = int(np.prod(block.shape))
    bias = None if block.bias is None else (int(np.min(block.bias)), int(np.max(block.bias)))
    count = sum(s.synapses for s in syns)
    has_neuron = block.neuron is not None
    layer = LayerInfo(
        index=index, name=block.name, kind=kind, shape=tuple(int(s) for s in block.shape), neurons=neurons,
        neuron=type(block.neuron).__name__ if has_neuron else "none", params=neuron_params(block.neuron),
        synapses=syns, bias_range=bias, bias_bits=_bits_signed(*bias) if bias else 0,
        fan_in=sum(s.fan_in for s in syns), synapse_count=count, memory_bytes=_memory(syns),
        cores=_cores(neurons, count, has_neuron))
    for r in RULES:
        layer.warnings += r(block, layer)
    return layer


def _chip_warnings(ins: Inspection) -> list[str]:
    """Say plainly whether the network needs more than one chip: surely (even the best-case
    packing exceeds one chip's cores) or possibly (only the placement Lava used for the tutorial
    does), and which layers alone need more than a chip."""
    per = LIMITS["cores_per_chip"].value
    (c0, c1), (ch0, ch1) = ins.cores, ins.chips
    out = []
    if c0 > per:
        out.append(f"network: needs {c0}..{c1} neurocores, more than one Loihi 2 chip's {per} even when packed "
                   f"best: {ch0}..{ch1} chips (a multi-chip system, e.g. Kapoho Point)")
    elif c1 > per:
        out.append(f"network: {c0}..{c1} neurocores: one Loihi 2 chip ({per}) only if packed near the best case; "
                   f"placed as Lava placed lava-dl's MNIST tutorial it needs {ch1} chips")
    big = [lr.name for lr in ins.layers if lr.cores[0] > per]
    if big:
        out.append(f"{', '.join(big)}: one layer alone needs more neurocores than a chip has ({per}); "
                   "its population must be split across chips")
    return out


# ---- entry points -----------------------------------------------------------------------------
def inspect_network(qnet: qir.QNetwork, info: dict | None = None, path: str | None = None) -> Inspection:
    """Describe a fixed-point network (``info``: the file's ``read_info`` if it came from one)."""
    from netx_export.validate import extension_reasons

    shapes: dict[str, tuple[int, ...]] = {}
    layers = []
    for i, block in enumerate(qnet.blocks):
        layers.append(layer_info(i, block, shapes))
        shapes[block.name] = tuple(block.shape)
    by_text: dict[str, list[str]] = {}  # one line per problem, naming every block that has it
    for lr in layers:
        for w in lr.warnings:
            by_text.setdefault(w, []).append(lr.name)
    warnings = [f"{', '.join(blocks)}: {w}" for w, blocks in by_text.items()]
    ins = Inspection(path, info, dict(qnet.meta or {}), float(qnet.input_scale), float(qnet.output_scale),
                     qnet.depth, layers, extension_reasons(qnet), warnings, [])
    ins.warnings += _chip_warnings(ins)
    ins.notes += _notes(qnet, ins)
    return ins


def inspect_file(path: str | os.PathLike) -> Inspection:
    """Read a NetX file (NetXFormatError if malformed) and describe it."""
    import netx_export
    from loihi_conv.base.errors import LoihiConvError

    if not Path(path).is_file():
        raise LoihiConvError(f"NetX file {path} does not exist",
                             "check the path, or create one with 'loihi-conv convert ... --out FILE.net'")
    qnet = netx_export.load(path)
    return inspect_network(qnet, netx_export.read_info(path), str(path))


def _notes(qnet: qir.QNetwork, ins: Inspection) -> list[str]:
    notes = []
    if ins.extension:
        notes.append("loihi-conv NetX extension: lava-dl's netx cannot build this file; "
                     "netx_export.build / LavaRunner can (" + "; ".join(ins.extension) + ")")
    readouts = [b.name for b in qnet.blocks if _is_netx_readout(b.neuron)]
    if readouts:
        notes.append(f"readout {', '.join(readouts)}: vThMant {NETX_READOUT_VTH} is netx's own default for a "
                     "dense layer without neuron (one over 17 bits on paper); it never spikes")
    graded = [b.name for b in qnet.blocks if isinstance(b.neuron, (qir.Delta, qir.SigmaDelta))]
    if graded:
        notes.append(f"graded spikes ({', '.join(graded)}): payloads must fit "
                     f"{LIMITS['message_bits'].value} bits; check them on data with "
                     "loihi_conv.api.report(qnet, calib)")
    if qnet.input.neuron is None:
        notes.append("the input block has no neuron: input ints are sent from the host as graded "
                     "messages (an embedded-IO adapter on Loihi 2)")
    transform = ins.meta.get("netx_input_transform")
    if transform:
        notes.append(f"input layer weight/bias {transform} are read by netx into Input.transform and "
                     "never applied")
    notes.append("state ranges (24-bit u/v wrap or saturation) depend on the data: see "
                 "'loihi-conv convert' (quantization report) or loihi_conv.api.report")
    return notes


# ---- rendering --------------------------------------------------------------------------------
def _fmt_range(r) -> str:
    return "" if r is None else (str(r[0]) if r[0] == r[1] else f"{r[0]}..{r[1]}")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f}"


def _header(ins: Inspection) -> list[str]:
    info = ins.info or {}
    rows = []
    if ins.path:
        fmt = info.get("format", 0)
        kind = "standard NetX" if not fmt else f"loihi-conv NetX extension v{fmt}"
        writer = f"written by loihi-conv {info['version']}" if info.get("version") else "not written by loihi-conv"
        rows.append(f"{ins.path}: {kind}, {writer}")
    m = ins.meta
    what = ", ".join(f"{k} {m[k]}" for k in ("model", "dataset", "target", "timesteps", "steps_run") if k in m)
    rows.append(f"{len(ins.layers)} blocks, depth {ins.depth} synapse hops; input_scale {ins.input_scale:g}, "
                f"output_scale {ins.output_scale:g}" + (f"; {what}" if what else ""))
    tv = info.get("tool_versions")
    if tv:
        rows.append("tool versions: " + ", ".join(f"{k} {v}" for k, v in tv.items()))
    rows.append("recipe: " + (", ".join(f"{k}={v}" for k, v in ins.recipe.items()) if ins.recipe else "none stored"))
    return rows


def _render(ins: Inspection) -> str:
    head = ["#", "block", "type", "shape", "neuron", "parameters", "weights", "w bits", "bias", "b bits",
            "delay", "fan-in", "synapses", "mem KiB", "cores"]
    rows = []
    for lr in ins.layers:
        delays = [s.delay for s in lr.synapses if s.delay]
        delay = "" if lr.kind == "input" else "1" + (f"+{min(d[0] for d in delays)}..{max(d[1] for d in delays)}"
                                                      if delays else "")
        rows.append([str(lr.index), lr.name, lr.kind + (f" x{len(lr.synapses)}" if len(lr.synapses) > 1 else ""),
                     "x".join(map(str, lr.shape)), lr.neuron, _params_text(lr.params),
                     _fmt_range(lr.weight_range), str(lr.weight_bits or ""), _fmt_range(lr.bias_range),
                     str(lr.bias_bits or ""), delay, str(lr.fan_in or ""), str(lr.synapse_count or ""),
                     _kib(lr.memory_bytes) if lr.memory_bytes else "", _fmt_range(lr.cores) if lr.cores[1] else "host"])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = _header(ins) + ["", line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    c0, c1 = ins.cores
    ch0, ch1 = ins.chips
    out += ["", "Estimated Loihi 2 resources (see the limits below; conv synapses counted expanded):",
            f"  neurons {ins.neurons:,} on chip   synapses {ins.synapses:,}   synaptic memory "
            f"{ins.memory_bytes / 1024:,.1f} KiB (8-bit weights)",
            f"  neurocores {c0}..{c1} (best case .. as Lava placed lava-dl's MNIST tutorial), "
            f"chips {ch0}" + (f"..{ch1}" if ch1 != ch0 else "")]
    out += ["", f"Warnings ({len(ins.warnings)}):"] + ([f"  ! {w}" for w in ins.warnings] or ["  none"])
    out += ["", "Notes:"] + [f"  - {n}" for n in ins.notes]
    out += ["", f"Loihi 2 limits used ({REF}; * = inferred by us, not stated by Intel):"]
    out += [f"  {k:22s} {v.value:>12,}{'*' if v.inferred else ' '} {v.what} [{v.source}]" for k, v in LIMITS.items()]
    return "\n".join(out)


def _jsonable(x):
    """A JSON round trip: tuples become lists, numpy scalars plain numbers."""
    return json.loads(json.dumps(x, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


# ---- recipe provenance --------------------------------------------------------------------------
def recipe_of(path: str | os.PathLike):
    """The ``Recipe`` stored in a NetX file written by loihi-conv (LoihiConvError if none)."""
    import netx_export
    from loihi_conv.base.errors import LoihiConvError
    from loihi_conv.convert import Recipe

    stored = netx_export.read_info(path).get("recipe")
    if not stored:
        raise LoihiConvError(f"{path} stores no conversion recipe (not written by loihi-conv, or "
                             "converted from an IR graph without one)",
                             "only files from 'loihi-conv convert' carry their recipe")
    return Recipe.from_dict(stored)


def reproduce_command(path: str | os.PathLike, recipe_path: str | os.PathLike, out: str = "copy.net") -> str:
    """The ``loihi-conv convert`` command that rebuilds ``path`` from its stored recipe. Every
    value comes from the file or the user, so each is shell-quoted: pasting it runs nothing else."""
    import shlex

    import netx_export

    meta = netx_export.read_info(path).get("meta") or {}
    model = str(meta.get("model", "MODEL"))
    args = ["--model", model]
    if ":" in model or model.endswith(".py"):
        args += ["--weights", "WEIGHTS.pt", "--dataset", str(meta.get("dataset", "DATASET"))]
    args += ["--target", str(meta.get("target", "TARGET")), "--timesteps", str(meta.get("timesteps", "T")),
             "--recipe", str(recipe_path), "--out", str(out)]
    return "loihi-conv convert " + " ".join(shlex.quote(a) for a in args)


def save_recipe(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the recipe stored in NetX file ``path`` as TOML to ``out`` (atomically)."""
    import tomli_w

    from loihi_conv.base.files import atomic_write_text

    return atomic_write_text(Path(out), tomli_w.dumps(recipe_of(path).to_dict()))


__all__ = ["Inspection", "LayerInfo", "SynapseInfo", "LIMITS", "Limit", "inspect_file", "inspect_network",
           "layer_info", "neuron_params", "synapse_info", "microcode_need", "RULES", "rule",
           "recipe_of", "reproduce_command", "save_recipe"]
