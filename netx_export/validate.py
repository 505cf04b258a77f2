"""Checks on a QNetwork before it is written, built or handed to the emulator.

Three levels, each a set of small rules dispatched on the neuron/synapse type:
* ``check_structure``: graph and shapes (sources exist and come earlier, shapes agree with the
  weights -- behind a spiking max-pool stage, with the pooled shape --, pool geometry, integer
  arrays). Violations are malformed networks.
* ``check_ranges``: values the Lava fixed-point models cannot hold (24-bit states, 17-bit
  vThMant, int16 LIF bias_mant, 12-bit decays, 6-bit delays); hardware-only limits warn.
* ``check_dense_exact``: dense weights that Lava would clip/truncate -- with the netx rule for
  standard files (netx rescales weights itself) or the mantissa rule for our own builder.

``extension_reasons`` lists what a network needs beyond standard NetX (empty = standard).
All arrays here are PyTorch layout (see qir.py).
"""
from __future__ import annotations

import warnings
from functools import singledispatch
from typing import Callable

import numpy as np

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.limits import ACT_SHIFT, BIAS_MAX, INT16_MAX
from loihi_conv.fixed import qir
from netx_export import schema
from netx_export.weights import lava_dense_encoding, netx_effective_dense

Fail = Callable[[str, str], Exception]  # (problem, fix) -> exception to raise


class HardwareLimitWarning(UserWarning):
    """A value that the CPU simulator runs exactly but Loihi 2 cannot hold."""


def _fail_with(error_cls: type[LoihiConvError]) -> Fail:
    return lambda problem, fix: error_cls(problem, fix)


def _ints(x, what: str, fail: Fail) -> np.ndarray:
    """``x`` as int64, refusing non-integer values (netx would truncate them silently)."""
    a = np.asarray(x)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
        raise fail(f"{what} must hold integers, got dtype {a.dtype}",
                   "quantize the network (loihi_conv.fixed.quantize) before exporting")
    return a.astype(np.int64)


def channels(shape: tuple[int, ...]) -> int:
    """Number of channels C of a (C,H,W) or (N,) block (N for vectors)."""
    return int(shape[0])


# ---- structure ---------------------------------------------------------------------------
def conv_output_hw(in_hw, kernel, stride, padding, dilation) -> tuple[int, int]:
    """PyTorch/Lava conv output size: floor((X + 2p - d(k-1) - 1)/s) + 1 per axis."""
    return tuple((x + 2 * p - d * (k - 1) - 1) // s + 1
                 for x, k, s, p, d in zip(in_hw, kernel, stride, padding, dilation))


@singledispatch
def _check_synapse(syn, block: qir.Block, src: qir.Block, fail: Fail) -> None:
    raise fail(f"block {block.name!r}: unsupported synapse type {type(syn).__name__}",
               "use qir.ConvSyn or qir.DenseSyn")


@_check_synapse.register
def _(syn: qir.ConvSyn, block, src, fail) -> None:
    w = _ints(syn.weight, f"conv weight of block {block.name!r}", fail)
    if w.ndim != 4 or len(src.shape) != 3 or len(block.shape) != 3:
        raise fail(f"block {block.name!r}: conv needs a (Co,Ci/g,kH,kW) weight between (C,H,W) "
                   f"blocks, got weight {w.shape}, {src.name!r} {src.shape} -> {block.shape}",
                   "conv synapses connect (C,H,W) blocks")
    g = int(syn.groups)
    pairs = (syn.stride, syn.padding, syn.dilation)
    if g < 1 or any(len(tuple(p)) != 2 for p in pairs):
        raise fail(f"block {block.name!r}: bad conv geometry stride={syn.stride} "
                   f"padding={syn.padding} dilation={syn.dilation} groups={syn.groups}",
                   "stride/padding/dilation are (y, x) pairs, groups >= 1")
    if (any(int(v) < 1 for v in (*syn.stride, *syn.dilation))
            or any(int(v) < 0 for v in syn.padding)):
        raise fail(f"block {block.name!r}: stride/dilation must be >= 1 and padding >= 0, got "
                   f"{syn.stride}/{syn.dilation}/{syn.padding}", "fix the conv geometry")
    padded = [int(x) + 2 * int(p) for x, p in zip(src.shape[1:], syn.padding)]
    if (max(int(v) for v in (*syn.stride, *syn.padding, *syn.dilation)) > schema.MAX_CONV_GEOMETRY
            or int(src.shape[0]) * padded[0] * padded[1] > schema.MAX_ELEMENTS):
        # Not a real network, and such numbers crash torch's conv (SIGFPE) or exhaust memory.
        raise fail(f"block {block.name!r}: conv stride={syn.stride} padding={syn.padding} "
                   f"dilation={syn.dilation} is out of proportion to the {tuple(src.shape)} input "
                   f"of {src.name!r}", f"keep stride/padding/dilation <= {schema.MAX_CONV_GEOMETRY} "
                   "and the padded input within the element limit; fix the conv geometry")
    co, ci_g, kh, kw = w.shape
    if co != block.shape[0] or ci_g * g != src.shape[0] or co % g:
        raise fail(f"block {block.name!r}: conv weight {w.shape} with groups={g} does not map "
                   f"{src.shape[0]} channels of {src.name!r} to {block.shape[0]}",
                   "weight is (Co, Ci/groups, kH, kW)")
    hw = conv_output_hw(src.shape[1:], (kh, kw), syn.stride, syn.padding, syn.dilation)
    if tuple(hw) != tuple(block.shape[1:]):
        raise fail(f"block {block.name!r}: conv of {src.name!r} {src.shape} gives (H,W)={hw}, "
                   f"block shape says {block.shape[1:]}", "recompute the block shape")


@_check_synapse.register
def _(syn: qir.DenseSyn, block, src, fail) -> None:
    w = _ints(syn.weight, f"dense weight of block {block.name!r}", fail)
    n_in = int(np.prod(src.shape))
    if w.ndim != 2 or len(block.shape) != 1 or w.shape != (block.shape[0], n_in):
        raise fail(f"block {block.name!r}: dense weight {w.shape} does not map {src.name!r} "
                   f"{src.shape} (flattened {n_in}) to {block.shape}",
                   "dense weight is (Nout, Nin) and a dense block is (N,)")
    if syn.delay is not None:
        d = _ints(syn.delay, f"dense delay of block {block.name!r}", fail)
        if d.shape not in (w.shape, (w.shape[0],)):
            raise fail(f"block {block.name!r}: delay shape {d.shape} is neither {w.shape} "
                       f"nor {(w.shape[0],)}", "give delays per synapse or per output neuron")


def _check_pool(syn, block: qir.Block, src: qir.Block, fail: Fail) -> qir.Block:
    """A spiking max-pool stage on the synapse's input (``qir.SpikePool``, extension): a known
    scheme and PyTorch max_pool2d geometry that fits the (C,H,W) source. Returns the block the
    synapse's weights see: ``src`` itself, or a stand-in of the pooled (C, H', W') shape."""
    pool = getattr(syn, "pool", None)
    if pool is None:
        return src
    where = f"block {block.name!r}: the spiking max-pool stage on the synapse from {src.name!r}"
    if not isinstance(pool, qir.SpikePool):
        raise fail(f"{where} is a {type(pool).__name__}, not a qir.SpikePool",
                   "set Synapse.pool to a qir.SpikePool or None")
    if not isinstance(pool.scheme, str) or pool.scheme not in qir.POOL_SCHEMES:
        raise fail(f"{where} has the unknown scheme {pool.scheme!r}",
                   f"use one of {', '.join(qir.POOL_SCHEMES)}")
    geometry = (pool.kernel, pool.stride, pool.padding)
    if not all(_int_pair(g) for g in geometry) or not isinstance(pool.ceil_mode, bool):
        raise fail(f"{where} has kernel={pool.kernel!r} stride={pool.stride!r} "
                   f"padding={pool.padding!r} ceil_mode={pool.ceil_mode!r}",
                   "give kernel/stride/padding as (y, x) tuples of ints and ceil_mode as "
                   "True/False")
    if len(src.shape) != 3:
        raise fail(f"{where}: the source {src.name!r} has shape {tuple(src.shape)}, not (C,H,W)",
                   "pool (C,H,W) maps only; pool before the flatten")
    (kh, kw), (sh, sw), (ph, pw) = ((int(a), int(b)) for a, b in geometry)
    h, w = (int(n) for n in src.shape[1:])
    if (min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or 2 * ph > kh or 2 * pw > kw
            or kh > h + 2 * ph or kw > w + 2 * pw or max(sh, sw) > schema.MAX_CONV_GEOMETRY):
        raise fail(f"{where}: kernel={pool.kernel} stride={pool.stride} padding={pool.padding} "
                   f"does not fit the {tuple(src.shape)} source",
                   "use PyTorch's max_pool2d rules: kernel and stride >= 1, padding <= kernel/2, "
                   "kernel <= input + 2 * padding")
    return qir.Block(f"{src.name} (pooled)", pool.out_shape(src.shape))


def _int_pair(p) -> bool:
    """A (y, x) tuple of two ints (a tuple, so that the file reads back as the same network)."""
    return isinstance(p, tuple) and len(p) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in p)


def _check_bias(block: qir.Block, fail: Fail) -> None:
    if block.bias is None:
        return
    b = _ints(block.bias, f"bias of block {block.name!r}", fail)
    if b.shape not in ((channels(block.shape),), tuple(block.shape)):
        raise fail(f"block {block.name!r}: bias shape {b.shape} is neither per channel "
                   f"({channels(block.shape)},) nor per neuron {tuple(block.shape)}",
                   "bias is (C,) or the block's full shape")


def check_structure(qnet: qir.QNetwork, error_cls: type[LoihiConvError] = LoihiConvError) -> None:
    """Graph and shape consistency; raises ``error_cls`` naming the block and the fix."""
    fail = _fail_with(error_cls)
    if len(qnet.blocks) < 2:
        raise fail(f"network has {len(qnet.blocks)} block(s); need an input and at least one "
                   "synapse block", "quantize a network with at least one layer")
    seen: dict[str, qir.Block] = {}
    for i, block in enumerate(qnet.blocks):
        if not isinstance(block.name, str) or not block.name or block.name in seen:
            raise fail(f"block {i}: name {block.name!r} is empty or repeated",
                       "give every block a unique name")
        shape = tuple(block.shape)
        if len(shape) not in (1, 3) or any(int(s) < 1 for s in shape):
            raise fail(f"block {block.name!r}: shape {shape} is not (N,) or (C,H,W)",
                       "blocks are vectors or (C,H,W) maps")
        if (i == 0) != block.is_input:
            raise fail(f"block {block.name!r}: " + ("the first block must be the input (no "
                       "synapses)" if i == 0 else "only the first block may have no synapses"),
                       "order blocks input-first, in execution order")
        if block.neuron is None and i > 0:
            raise fail(f"block {block.name!r} has no neuron", "only the input may be neuron-less")
        for syn in block.synapses:
            src = seen.get(syn.source)
            if src is None:
                raise fail(f"block {block.name!r}: synapse source {syn.source!r} is not an "
                           "earlier block", "list blocks in execution order")
            _check_synapse(syn, block, _check_pool(syn, block, src, fail), fail)
        _check_bias(block, fail)
        _check_neuron_shape(block.neuron, block, fail)
        seen[block.name] = block


@singledispatch
def _check_neuron_shape(neuron, block, fail) -> None:
    if neuron is not None:
        raise fail(f"block {block.name!r}: unsupported neuron {type(neuron).__name__}",
                   "use one of loihi_conv.fixed.qir.NEURONS")


for _cls in (qir.Cuba, qir.Readout, qir.Delta, qir.SigmaDelta):
    _check_neuron_shape.register(_cls)(lambda neuron, block, fail: None)


@_check_neuron_shape.register
def _(neuron: qir.Sigma, block, fail) -> None:
    if block.bias is not None:
        raise fail(f"block {block.name!r}: a Sigma neuron takes no bias (Lava Sigma has none)",
                   "fold the bias into the previous layer or drop it")


@_check_neuron_shape.register
def _(neuron: qir.SoftIF, block, fail) -> None:
    mode = neuron.mode
    if not isinstance(mode, str) or mode not in schema.SOFTIF_MODES:
        raise fail(f"block {block.name!r}: SoftIF mode {mode!r} is unknown",
                   f"use one of {', '.join(schema.SOFTIF_MODES)}")
    c = channels(block.shape)
    for what, arr in (("vth", neuron.vth), ("v_init", neuron.v_init)):
        if arr is not None and _ints(arr, f"SoftIF {what} of {block.name!r}", fail).shape != (c,):
            raise fail(f"block {block.name!r}: SoftIF {what} has shape {np.shape(arr)}, "
                       f"expected per channel ({c},)", "give one value per channel")


# ---- value ranges -------------------------------------------------------------------------
def _range(value, lo: int, hi: int, what: str, fix: str, fail: Fail) -> None:
    a = np.asarray(value, dtype=np.int64)
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a.min() if a.min() < lo else a.max()
        raise fail(f"{what} = {int(bad)} is outside [{lo}, {hi}]", fix)


def _hw_warn(value, limit: int, what: str, warn: bool) -> None:
    a = np.asarray(value, dtype=np.int64)
    if warn and a.size and np.abs(a).max() > limit:
        warnings.warn(f"{what}: |value| up to {int(np.abs(a).max())} exceeds the Loihi 2 limit "
                      f"{limit}; the CPU simulator is exact, hardware is not",
                      HardwareLimitWarning, stacklevel=3)


@singledispatch
def _check_neuron_ranges(neuron, block, fail, warn) -> None:
    """No neuron (input) or a neuron without range limits."""


@_check_neuron_ranges.register
def _(neuron: qir.Cuba, block, fail, warn) -> None:
    _lif_ranges(neuron, block, fail, warn, vth_max=schema.VTH_MAX)


@_check_neuron_ranges.register
def _(neuron: qir.Readout, block, fail, warn) -> None:
    # netx's own default readout uses vThMant 131072 (one over the 17-bit range): allowed here.
    _lif_ranges(neuron, block, fail, warn, vth_max=schema.NETX_READOUT_VTH)


def _lif_ranges(neuron, block, fail, warn, vth_max: int) -> None:
    """Lava LIF (lif/models.py): vth 17-bit, decays 0..4096, bias_mant cast to int16 (wraps)."""
    n = block.name
    _range(neuron.vth, 0, vth_max, f"block {n!r}: vThMant", "rescale the layer's weights and "
           "threshold together (quantize with a smaller weight scale)", fail)
    for what in ("i_decay", "v_decay"):
        _range(getattr(neuron, what), 0, schema.DECAY_ONE, f"block {n!r}: {what}",
               "decays are 12-bit fractions of 4096", fail)
    _range(neuron.bias_exp, 0, 7, f"block {n!r}: bias_exp", "bias_exp is 3-bit (netx uses 6)",
           fail)
    if block.bias is not None:
        _range(block.bias, -INT16_MAX - 1, INT16_MAX, f"block {n!r}: bias", "Lava's LIF casts "
               "bias_mant to int16 and wraps; lower the bias scale (or bias_exp)", fail)
        _hw_warn(block.bias, BIAS_MAX, f"block {n!r}: bias mantissa (13-bit signed)", warn)


@_check_neuron_ranges.register
def _(neuron: qir.SoftIF, block, fail, warn) -> None:
    """SoftIF state is 24-bit: vth<<6, v_init<<6 and bias<<bias_exp must fit."""
    n = block.name
    _range(neuron.vth, 1, schema.VTH_MAX, f"block {n!r}: SoftIF vth", "thresholds are 17-bit "
           "unsigned and at least 1; rescale weights and thresholds together", fail)
    if neuron.v_init is not None:
        _range(neuron.v_init, -(schema.STATE_MAX >> ACT_SHIFT), schema.STATE_MAX >> ACT_SHIFT,
               f"block {n!r}: SoftIF v_init", "v_init<<6 must fit the 24-bit state", fail)
    _range(neuron.bias_exp, 0, 16, f"block {n!r}: SoftIF bias_exp", "use 0..16", fail)
    _softif_units(neuron, n, fail)
    _softif_counters(neuron, n, fail)
    if block.bias is not None:
        lim = schema.STATE_MAX >> int(neuron.bias_exp)
        _range(block.bias, -lim, lim, f"block {n!r}: SoftIF bias",
               "bias<<bias_exp must fit the 24-bit state; lower the bias scale", fail)
        _hw_warn(block.bias, BIAS_MAX, f"block {n!r}: bias mantissa (13-bit signed)", warn)


def _softif_units(neuron: qir.SoftIF, n: str, fail: Fail) -> None:
    """The payload bound: 1 for binary 'if-soft'; 1..MAX_UNITS for graded modes, a power of two
    where the float model's spikes are shifts (multi-bit, buffered; HPC eq. 15)."""
    mode, units = neuron.mode, neuron.max_units
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)):
        raise fail(f"block {n!r}: SoftIF max_units {units!r} is not an int",
                   "give the largest payload per step as an int")
    hi = 1 if mode == schema.SOFTIF_DEFAULT_MODE else schema.GRADED_UNITS_MAX
    _range(units, 1, hi, f"block {n!r}: SoftIF max_units ({mode})",
           "binary 'if-soft' sends 1 unit; graded modes at most "
           f"{schema.GRADED_UNITS_MAX} (a signed 8-bit payload)", fail)
    if schema.SOFTIF_MODES[mode].power_of_two and units & (units - 1):
        raise fail(f"block {n!r}: SoftIF max_units {int(units)} of mode {mode!r} is not a "
                   "power of two", "multi-bit payloads are shifts: use S_max = 1, 2, 4, ...")


def _softif_counters(neuron: qir.SoftIF, n: str, fail: Fail) -> None:
    """Step-counted extras: ``clamp_steps`` an int in [0, COUNTER_MAX]; ``spicalib_beta`` None
    (off) or an int in [0, COUNTER_MAX] (the fixed-point ISI monitor compares step counts)."""
    _counter(neuron.clamp_steps, f"block {n!r}: SoftIF clamp_steps",
             "give the clamped steps per sample as an int (0: no clamping)", fail)
    if neuron.spicalib_beta is not None:
        _counter(neuron.spicalib_beta, f"block {n!r}: SoftIF spicalib_beta",
                 "give SpiCalib's allowance in steps as an int (None: off)", fail)


def _counter(value, what: str, fix: str, fail: Fail) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise fail(f"{what} {value!r} is not an int", fix)
    _range(value, 0, schema.COUNTER_MAX, what, f"{fix}, at most {schema.COUNTER_MAX} (16 bits)",
           fail)


def _sdnn_ranges(neuron, block, fail, warn) -> None:
    """Lava Delta/SigmaDelta: vth and bias are scaled by 2^(spike_exp+state_exp) into int32."""
    n = block.name
    _range(neuron.vth, 0, schema.VTH_MAX, f"block {n!r}: vThMant", "rescale the layer", fail)
    for what in ("spike_exp", "state_exp"):
        _range(getattr(neuron, what), 0, 7, f"block {n!r}: {what}", "exponents are 3-bit",
               fail)
    if block.bias is not None:
        lim = (2**31 - 1) >> (int(neuron.spike_exp) + int(neuron.state_exp))
        _range(block.bias, -lim, lim, f"block {n!r}: bias", "bias << (spike_exp+state_exp) "
               "must fit int32; lower the bias scale", fail)
        _hw_warn(block.bias, INT16_MAX, f"block {n!r}: SigmaDelta bias (16-bit)", warn)


_check_neuron_ranges.register(qir.SigmaDelta)(_sdnn_ranges)


@_check_neuron_ranges.register
def _(neuron: qir.Delta, block, fail, warn) -> None:
    if block.bias is not None:
        raise fail(f"block {block.name!r}: a Delta neuron takes no bias (Lava Delta has none)",
                   "drop the input bias")
    _sdnn_ranges(neuron, block, fail, warn)


@singledispatch
def _check_synapse_ranges(syn, block, fail, warn) -> None:
    raise fail(f"block {block.name!r}: unsupported synapse type {type(syn).__name__}",
               "use qir.ConvSyn or qir.DenseSyn")


@_check_synapse_ranges.register
def _(syn: qir.ConvSyn, block, fail, warn) -> None:
    """Lava's conv accumulates exactly and wraps at 24 bits; hardware weights are 8-bit."""
    _range(syn.weight, -schema.STATE_MAX, schema.STATE_MAX, f"block {block.name!r}: conv weight",
           "a single spike would wrap the 24-bit accumulator; requantize to 8-bit", fail)
    w = np.asarray(syn.weight, dtype=np.int64)
    if warn and w.size and (w.min() < -256 or w.max() > 255):
        warnings.warn(f"block {block.name!r}: conv weights span [{w.min()}, {w.max()}], beyond "
                      "Loihi 2's 8-bit weights; the CPU simulator is exact, hardware is not",
                      HardwareLimitWarning, stacklevel=3)


@_check_synapse_ranges.register
def _(syn: qir.DenseSyn, block, fail, warn) -> None:
    if syn.delay is not None:
        _range(syn.delay, 0, schema.DELAY_MAX, f"block {block.name!r}: dense delay",
               "Loihi 2 delays are 6-bit and netx clamps to 62; shorten the delays", fail)


def check_ranges(qnet: qir.QNetwork, error_cls: type[LoihiConvError] = LoihiConvError,
                 warn: bool = True) -> None:
    """Values the Lava fixed-point models hold exactly; hardware-only limits warn."""
    fail = _fail_with(error_cls)
    for block in qnet.blocks:
        _check_neuron_ranges(block.neuron, block, fail, warn)
        for syn in block.synapses:
            _check_synapse_ranges(syn, block, fail, warn)


# ---- dense exactness ----------------------------------------------------------------------
def check_dense_exact(qnet: qir.QNetwork, standard: bool,
                      error_cls: type[LoihiConvError] = LoihiConvError, warn: bool = True) -> None:
    """Refuse dense weights that Lava would not apply exactly (netx rule if ``standard``)."""
    fail = _fail_with(error_cls)
    for block in qnet.blocks:
        for k, syn in enumerate(block.synapses):
            _synapse_exact(syn, f"block {block.name!r} synapse {k}", standard, fail, warn)


@singledispatch
def _synapse_exact(syn, where: str, standard: bool, fail: Fail, warn: bool) -> None:
    """Conv weights reach Lava unchanged (no rescaling), so there is nothing to check."""


@_synapse_exact.register
def _(syn: qir.DenseSyn, where, standard, fail, warn) -> None:
    _dense_exact(np.asarray(syn.weight, np.int64), where, standard, fail, warn)


def _dense_exact(w: np.ndarray, where: str, standard: bool, fail: Fail, warn: bool) -> None:
    span = f"(weights span [{int(w.min())}, {int(w.max())}])"
    if standard:
        eff, note = netx_effective_dense(w)
        if eff is None or not np.array_equal(eff, w):
            bad = "" if eff is None else f"; e.g. weight {int(w[eff != w][0])} becomes " \
                                         f"{int(eff[eff != w][0])}"
            raise fail(f"{where}: netx would mangle these dense weights {span}: {note}{bad}",
                       "use mixed-sign ints in [-256, 254] or non-negative ints in [0, 255], "
                       "not all zero and not all <= 0 with a power-of-two minimum; or write "
                       "with extension=True, whose builder passes the sign mode to Lava itself")
    enc = lava_dense_encoding(w)
    if enc is None:
        raise fail(f"{where}: dense weights {span} need more than an 8-bit mantissa with a "
                   "shared power-of-two exponent; Lava would clip them",
                   "requantize dense weights to 8 bits (e.g. even ints in [-256, 254])")
    if warn and not enc.hardware_ok:
        warnings.warn(f"{where}: mixed-sign dense weights {span} use odd values outside "
                      "[-128, 127]; exact in the CPU simulator (9-bit weights) but Loihi 2 drops "
                      "their LSB", HardwareLimitWarning, stacklevel=3)


# ---- standard or extension ------------------------------------------------------------------
@singledispatch
def _neuron_reason(neuron, block: qir.Block, is_input: bool) -> str | None:
    """Why this neuron needs the extension (None if standard NetX expresses it)."""
    return None


@_neuron_reason.register
def _(neuron: qir.Cuba, block, is_input):
    return None if neuron.bias_exp == 6 else f"{block.name!r}: CUBA bias_exp {neuron.bias_exp} != 6"


@_neuron_reason.register
def _(neuron: qir.Readout, block, is_input):
    if is_input:
        return f"{block.name!r}: Readout as the input neuron"
    return None if neuron.bias_exp == 6 else f"{block.name!r}: Readout bias_exp != 6"


@_neuron_reason.register
def _(neuron: qir.SoftIF, block, is_input):
    return f"{block.name!r}: SoftIF neuron (custom Lava process)"


@_neuron_reason.register
def _(neuron: qir.Delta, block, is_input):
    if not is_input:
        return f"{block.name!r}: Delta neuron outside the input layer"
    return _sdnn_exp_reason(neuron, block)


@_neuron_reason.register
def _(neuron: qir.SigmaDelta, block, is_input):
    if is_input:
        return f"{block.name!r}: SigmaDelta as the input neuron"
    return _sdnn_exp_reason(neuron, block)


@_neuron_reason.register
def _(neuron: qir.Sigma, block, is_input):
    return f"{block.name!r}: Sigma as the input neuron" if is_input else None


def _sdnn_exp_reason(neuron, block) -> str | None:
    if (neuron.spike_exp, neuron.state_exp) != (6, 6):
        return (f"{block.name!r}: spike_exp/state_exp {neuron.spike_exp}/{neuron.state_exp} "
                "(netx uses 6/6)")
    return None


def extension_reasons(qnet: qir.QNetwork) -> list[str]:
    """What standard NetX (sequential, one synapse per layer, netx's neuron set, no spiking
    max-pool stage) cannot say."""
    reasons = []
    for i, block in enumerate(qnet.blocks):
        if i == 0 and block.bias is not None:
            reasons.append(f"{block.name!r}: input-layer bias (netx reads 'bias' of an input "
                           "layer as an unused transform)")
        if len(block.synapses) > 1:
            reasons.append(f"{block.name!r}: {len(block.synapses)} synapses (fan-in)")
        if block.synapses and block.synapses[0].source != qnet.blocks[i - 1].name:
            reasons.append(f"{block.name!r}: fed by {block.synapses[0].source!r}, not by the "
                           "previous block")
        reasons += [f"{block.name!r}: a spiking max-pool stage ({s.pool.scheme!r}) on the synapse "
                    f"from {s.source!r} (a loihi-conv Lava process; standard netx has none, so "
                    "convert with max_pool='avg' for a standard file)"
                    for s in block.synapses if getattr(s, "pool", None) is not None]
        reason = _neuron_reason(block.neuron, block, i == 0)
        if reason:
            reasons.append(reason)
    return reasons
