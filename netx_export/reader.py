"""Read NetX HDF5 files -- ours (standard and extension) and lava-dl's own -- into a QNetwork.

Defensive: every problem (missing keys, wrong dtypes or shapes, gaps in layer indices, absurd
sizes, unknown types, checksum mismatch, garbage or truncated files) becomes a NetXFormatError
naming the layer and the fix, before Lava or the emulator sees anything.

Mapping (netx semantics, netx/hdf5.py): 'input' (+ optional neuron) -> input block; 'flatten'
is folded into the following dense synapse; 'conv'/'dense' -> ConvSyn/DenseSyn blocks (with a
``qir.SpikePool`` from an extension ``spikePool`` group); a dense
layer without neuron -> Readout (netx's default integrator); CUBA/LOIHI -> Cuba; SDNN -> Delta
(input layer), Sigma ('sigma_output'), SigmaDelta (others). Arrays come out in PyTorch order.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from loihi_conv.base.budget import check_fits
from loihi_conv.base.errors import NetXFormatError
from loihi_conv.base.layout import whc_to_chw
from loihi_conv.fixed import qir
from netx_export import schema, validate

_FIX = "re-export the network with loihi-conv (netx_export.save) or repair the file"


def _err(problem: str, fix: str = _FIX) -> NetXFormatError:
    return NetXFormatError(problem, fix)


def load(path: str | os.PathLike) -> qir.QNetwork:
    """Read a NetX file into a QNetwork (PyTorch layouts). Raises NetXFormatError if malformed."""
    with _open(path) as f:
        try:
            qnet = _parse(f, Path(path))
        except NetXFormatError:
            raise
        except Exception as e:  # h5py/numpy errors on a malformed file never escape raw
            raise _err(f"{path}: malformed NetX file ({type(e).__name__}: {e})") from e
    validate.check_structure(qnet, NetXFormatError)
    validate.check_ranges(qnet, NetXFormatError, warn=False)
    return qnet


def read_info(path: str | os.PathLike) -> dict:
    """Root attributes: format (0 = standard NetX), versions, checksum, scales, recipe."""
    with _open(path) as f:
        try:
            return _info(f)
        except NetXFormatError:
            raise
        except Exception as e:
            raise _err(f"{path}: unreadable root attributes ({type(e).__name__}: {e})") from e


def _open(path) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise NetXFormatError(f"{p}: no such file", "check the path")
    try:
        schema.check_seal(p)
    except ValueError as e:
        raise _err(f"{p}: {e}") from e
    try:
        f = h5py.File(p, "r")
    except Exception as e:
        raise _err(f"{p} is not a readable HDF5 file (garbage or truncated?)") from e
    try:
        _audit(f, p)
    except BaseException:
        f.close()
        raise
    return f


def _info(f: h5py.File) -> dict:
    a = f.attrs
    fmt = int(a.get(schema.FORMAT_ATTR, 0))
    if fmt < 0 or fmt > schema.FORMAT_VERSION:
        raise _err(f"extension format {fmt} is not supported (this loihi-conv reads up to "
                   f"{schema.FORMAT_VERSION})", "upgrade loihi-conv or re-export the network")
    text = {k: _attr_str(a[k]) for k in ("recipe", "meta", "tool_versions",
                                         schema.VERSION_ATTR, schema.CHECKSUM_ATTR) if k in a}
    return {
        "format": fmt,
        "version": text.get(schema.VERSION_ATTR),
        "checksum": text.get(schema.CHECKSUM_ATTR),
        "input_scale": _scale(a, "input_scale"),
        "output_scale": _scale(a, "output_scale"),
        "meta": _meta(text),
        "recipe": json.loads(text["recipe"]) if "recipe" in text else None,
        "tool_versions": json.loads(text["tool_versions"]) if "tool_versions" in text else None,
    }


def _scale(attrs, key: str) -> float:
    """input_scale / output_scale: a positive finite number (default 1, as netx assumes)."""
    raw = attrs.get(key, 1.0)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise _err(f"root attribute '{key}' = {raw!r} is not a positive number")
    return value


def _meta(text: dict[str, str]) -> dict | None:
    """The 'meta' root attribute: a JSON object (it becomes QNetwork.meta), null or absent."""
    if "meta" not in text:
        return None
    value = json.loads(text["meta"])
    if value is not None and not isinstance(value, dict):
        raise _err(f"root attribute 'meta' holds a JSON {type(value).__name__}, not an object")
    return value


def _attr_str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ---- file-level checks ----------------------------------------------------------------------
def _layer_groups(f: h5py.File) -> list[h5py.Group]:
    if "layer" not in f or not isinstance(f["layer"], h5py.Group):
        raise _err("no '/layer' group: not a NetX network file")
    names = list(f["layer"].keys())
    if not names:
        raise _err("'/layer' is empty")
    if len(names) > schema.MAX_LAYERS:
        raise _err(f"{len(names)} layers is more than the supported {schema.MAX_LAYERS}")
    bad = [n for n in names if not n.isdigit() or (n != "0" and n.startswith("0"))]
    if bad:
        raise _err(f"layer group names must be decimal indices, found {bad[:3]}")
    idx = sorted(int(n) for n in names)
    if idx != list(range(len(idx))):
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise _err(f"layer indices must be contiguous 0..{len(idx) - 1}; missing {missing[:5]}",
                   "netx loads layers 0..n-1 in order and fails on a gap; renumber the layers")
    groups = [f["layer"][str(i)] for i in idx]
    for i, g in enumerate(groups):
        if not isinstance(g, h5py.Group):
            raise _err(f"layer {i} is not a group")
    return groups


def _audit(f: h5py.File, path: Path) -> None:
    """Walk the object tree from its metadata alone, before any dataset is read: refuse links
    (soft or to another file), datasets stored in other files (external storage, virtual
    datasets), trees deeper or larger than a network, and declared sizes (a decompression bomb
    declares its inflated size) beyond the memory budget. Never opens or names another file."""
    count, values = 0, 0.0
    stack: list[tuple[h5py.Group, str, int]] = [(f, "", 0)]
    try:
        while stack:
            group, where, depth = stack.pop()
            for name in group:
                count += 1
                at = f"{where}/{name}"
                if count > schema.MAX_OBJECTS:
                    raise _err(f"{path}: more than {schema.MAX_OBJECTS} HDF5 objects: not a "
                               "network file")
                if depth + 1 > schema.MAX_DEPTH:
                    raise _err(f"{path}: {at[:80]}...: groups nested deeper than "
                               f"{schema.MAX_DEPTH} levels: not a network file")
                link = group.get(name, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    raise _err(f"{path}: {at} is an HDF5 {type(link).__name__}; links (to this "
                               "or another file) are refused, a NetX file holds its data itself")
                obj = group[name]
                if isinstance(obj, h5py.Group):
                    stack.append((obj, at, depth + 1))
                elif isinstance(obj, h5py.Dataset):
                    values += _audit_dataset(obj, at, path)
    except NetXFormatError:
        raise
    except Exception as e:  # h5py on damaged metadata
        raise _err(f"{path}: unreadable HDF5 object tree ({type(e).__name__})") from e
    check_fits(8 * values, f"{path}: the {values:.0f} values its datasets declare",
               "this is not a network the emulator or Lava can hold; check the file",
               NetXFormatError)


def _audit_dataset(ds: h5py.Dataset, at: str, path: Path) -> int:
    """The element count of one dataset, after refusing data stored outside the file."""
    if ds.is_virtual:
        raise _err(f"{path}: dataset {at} is a virtual dataset (its data lives in other files); "
                   "refused without reading it")
    if ds.external:
        raise _err(f"{path}: dataset {at} uses HDF5 external storage (its bytes live in another "
                   "file); refused without reading it")
    if ds.size > schema.MAX_ELEMENTS:
        raise _err(f"{path}: dataset {at} declares {ds.size} elements (limit "
                   f"{schema.MAX_ELEMENTS})", "this is not a network Loihi can hold")
    if ds.chunks is not None:
        chunk = int(np.prod(ds.chunks, dtype=np.float64)) * ds.dtype.itemsize
        if chunk > schema.MAX_CHUNK_BYTES:
            raise _err(f"{path}: dataset {at} declares {chunk} bytes per HDF5 chunk (limit "
                       f"{schema.MAX_CHUNK_BYTES})", "rewrite the file without huge chunks")
    return int(ds.size)


# ---- dataset helpers --------------------------------------------------------------------------
def _ints(g: h5py.Group, key: str, where: str) -> np.ndarray:
    """An integer-valued numeric dataset as int64 (floats must be exact integers)."""
    if key not in g:
        raise _err(f"{where}: missing '{key}'")
    ds = g[key]
    if not isinstance(ds, h5py.Dataset):
        raise _err(f"{where}: '{key}' is a group, expected a dataset")
    if ds.dtype.kind not in "iufb":
        raise _err(f"{where}: '{key}' has dtype {ds.dtype}, expected numbers")
    a = np.asarray(ds[()])
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise _err(f"{where}: '{key}' holds unsigned values beyond the int64 range (e.g. "
                   f"{int(a.max())}); netx and Lava would wrap them", "write signed integers")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(np.abs(a) > 2.0**62):
            raise _err(f"{where}: '{key}' holds non-finite or huge values")
        if np.any(a != np.round(a)):
            raise _err(f"{where}: '{key}' holds non-integer values (netx truncates them toward "
                       "zero)", "write exact integers")
    return a.astype(np.int64)


def _scalar(g: h5py.Group, key: str, where: str) -> int:
    a = _ints(g, key, where)
    if a.size != 1:
        raise _err(f"{where}: '{key}' must be a scalar, got shape {a.shape}")
    return int(a.reshape(-1)[0])


def _pair(g: h5py.Group, key: str, where: str, default: int) -> tuple[int, int]:
    """stride/padding/dilation: scalar or [y, x] (PyTorch H,W order)."""
    if key not in g:
        return (default, default)
    a = _ints(g, key, where).reshape(-1)
    if a.size == 1:
        return (int(a[0]), int(a[0]))
    if a.size != 2:
        raise _err(f"{where}: '{key}' must be a scalar or [y, x], got {a.size} values")
    return (int(a[0]), int(a[1]))


def _type(g: h5py.Group, where: str, key: str = "type") -> str:
    """A string dataset (``type``, or another key such as SOFTIF's ``spikeMode``)."""
    if key not in g or not isinstance(g[key], h5py.Dataset):
        raise _err(f"{where}: missing '{key}'")
    try:
        value = schema.decode_str(g[key][()])
    except (ValueError, UnicodeDecodeError) as e:
        raise _err(f"{where}: unreadable '{key}' ({e})") from e
    if len(value) > 32 or not value.isprintable():  # a name, never text to echo back
        raise _err(f"{where}: '{key}' is not a short type name ({len(value)} characters)")
    return value


# ---- parsing --------------------------------------------------------------------------------
@dataclass
class _Ctx:
    fmt: int
    blocks: list[qir.Block] = field(default_factory=list)
    by_layer: dict[int, qir.Block] = field(default_factory=dict)  # layer index -> block
    flatten_pending: bool = False
    meta: dict = field(default_factory=dict)


def _parse(f: h5py.File, path: Path) -> qir.QNetwork:
    info = _info(f)
    groups = _layer_groups(f)
    ours = [k for k in schema.OUR_MARKS if k in f.attrs]
    if ours and info["checksum"] is None:
        raise _err(f"{path}: claims to be written by loihi-conv (attribute {ours[0]!r}) but has "
                   f"no '{schema.CHECKSUM_ATTR}' attribute: stripped or altered after it was written",
                   "re-export the network; do not edit exported files by hand")
    if info["checksum"] is not None and info["checksum"] != schema.file_checksum(f):
        raise _err(f"{path}: checksum mismatch: the file changed after it was written",
                   "re-export the network; do not edit exported files by hand")
    ctx = _Ctx(fmt=info["format"])
    for i, g in enumerate(groups):
        where = f"layer {i}"
        kind = _type(g, where)
        if kind not in _LAYER_READERS:
            raise _err(f"{where}: unsupported layer type {kind!r} (supported: "
                       f"{', '.join(schema.LAYER_TYPES)})", "netx cannot build pool/average/"
                       "concat/convT/unpool layers either; fold them into conv layers")
        if (kind == "input") != (i == 0):
            raise _err(f"{where}: " + ("the first layer must be 'input'" if i == 0
                                       else "'input' is only allowed as layer 0"))
        if ctx.flatten_pending and kind != "dense":
            raise _err(f"{where}: a 'flatten' layer must be followed by a 'dense' layer")
        _LAYER_READERS[kind](g, i, ctx)
    if ctx.flatten_pending:
        raise _err("the last layer is a 'flatten' layer", "end the network with a dense layer")
    meta = info["meta"] if info["meta"] is not None else ctx.meta
    return qir.QNetwork(blocks=ctx.blocks, input_scale=info["input_scale"],
                        output_scale=info["output_scale"], meta=meta)


def _name(g: h5py.Group, default: str) -> str:
    return _attr_str(g.attrs[schema.NAME_ATTR]) if schema.NAME_ATTR in g.attrs else default


def _shape(g: h5py.Group, where: str) -> tuple[int, ...]:
    s = _ints(g, "shape", where).reshape(-1)
    if s.size == 0 or np.any(s < 1) or np.prod(s, dtype=np.float64) > schema.MAX_ELEMENTS:
        raise _err(f"{where}: bad shape {s.tolist()}")
    return tuple(int(v) for v in s)


def _read_input(g: h5py.Group, i: int, ctx: _Ctx) -> None:
    where = "layer 0 (input)"
    shape = _shape(g, where)
    if len(shape) not in (1, 3):
        raise _err(f"{where}: shape {shape} is neither (N,) nor (C,H,W)")
    block = qir.Block(name=_name(g, "input"), shape=shape)
    block.neuron = _read_neuron(g, block, True, ctx, where)
    if ctx.fmt and "bias" in g:
        block.bias = _bias(g, block, where)
    elif "weight" in g or "bias" in g:
        # netx reads them into Input.transform and never applies them (reference doc 1.4)
        ctx.meta["netx_input_transform"] = {
            k: _scalar(g, k, where) for k in ("weight", "bias") if k in g}
    _add(ctx, i, block)


def _read_flatten(g: h5py.Group, i: int, ctx: _Ctx) -> None:
    ctx.flatten_pending = True


def _read_layer(g: h5py.Group, i: int, ctx: _Ctx, kind: str) -> None:
    where = f"layer {i} ({kind})"
    syn0 = _read_synapse(kind, g, where, _source(g, i, ctx, where), ctx)
    shape = _shape(g, where)
    block = qir.Block(name=_name(g, f"{kind}{i}"),
                      shape=(int(np.prod(shape)),) if kind == "dense" else shape,
                      synapses=[syn0])
    block.synapses += _extra_synapses(g, i, ctx, where)
    if "bias" in g:
        block.bias = _bias(g, block, where)
    block.neuron = _read_neuron(g, block, False, ctx, where,
                                default=qir.Readout if kind == "dense" else None)
    if kind == "dense" and len(_src(ctx, syn0).shape) == 3 \
            and not ctx.flatten_pending and not ctx.fmt:
        raise _err(f"{where}: dense layer after a (C,H,W) layer without a 'flatten' layer",
                   "netx needs a 'flatten' layer there")
    ctx.flatten_pending = False
    _add(ctx, i, block)


def _src(ctx: _Ctx, syn: qir.Synapse) -> qir.Block:
    return next(b for b in ctx.blocks if b.name == syn.source)


def _add(ctx: _Ctx, i: int, block: qir.Block) -> None:
    ctx.blocks.append(block)
    ctx.by_layer[i] = block


def _source(g: h5py.Group, i: int, ctx: _Ctx, where: str) -> qir.Block:
    """The block feeding this synapse: ``source`` (extension) or the previous block."""
    if not ctx.fmt or "source" not in g:
        return ctx.blocks[-1]
    k = _scalar(g, "source", where)
    if k not in ctx.by_layer or k >= i:
        raise _err(f"{where}: 'source' = {k} is not an earlier non-flatten layer")
    return ctx.by_layer[k]


def _extra_synapses(g: h5py.Group, i: int, ctx: _Ctx, where: str) -> list[qir.Synapse]:
    if "synapses" not in g:
        return []
    if not ctx.fmt:
        raise _err(f"{where}: 'synapses' sub-group in a file without the "
                   f"'{schema.FORMAT_ATTR}' attribute", "netx would ignore these synapses")
    sg = g["synapses"]
    keys = sorted(sg.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if keys != [str(k) for k in range(1, len(keys) + 1)]:
        raise _err(f"{where}: synapse groups must be named 1..n, found {keys[:5]}")
    out = []
    for k in keys:
        sub, w = sg[k], f"{where} synapse {k}"
        if "source" not in sub:
            raise _err(f"{w}: missing 'source'")
        kind = _type(sub, w)
        if kind not in _SYNAPSE_READERS:
            raise _err(f"{w}: unsupported synapse type {kind!r}")
        out.append(_read_synapse(kind, sub, w, _source(sub, i, ctx, w), ctx))
    return out


def _read_synapse(kind: str, g: h5py.Group, where: str, src: qir.Block,
                  ctx: _Ctx) -> qir.Synapse:
    """A synapse of type ``kind`` from its group, with its spiking max-pool stage if any."""
    syn = _SYNAPSE_READERS[kind](g, where, src, ctx)
    syn.pool = _read_pool(g, where, ctx)
    return syn


def _read_pool(g: h5py.Group, where: str, ctx: _Ctx) -> qir.SpikePool | None:
    """The optional ``spikePool`` group (extension): scheme, kernel, stride [y, x]; padding
    [y, x] and ceilMode (0/1) default to 0. Values are checked by ``validate``."""
    if schema.POOL_GROUP not in g:
        return None
    w = f"{where} {schema.POOL_GROUP}"
    if not ctx.fmt:
        raise _err(f"{w}: a spiking max-pool group in a file without the "
                   f"'{schema.FORMAT_ATTR}' attribute", "netx would ignore the stage")
    p = g[schema.POOL_GROUP]
    if not isinstance(p, h5py.Group):
        raise _err(f"{w}: is a dataset, expected a group")
    unknown = sorted(set(p.keys()) - set(schema.POOL_KEYS))
    if unknown:
        raise _err(f"{w}: unknown key(s) {unknown} (known: {', '.join(schema.POOL_KEYS)})")
    for key in ("kernel", "stride"):
        if key not in p:
            raise _err(f"{w}: missing '{key}'")
    ceil = _scalar(p, "ceilMode", w) if "ceilMode" in p else 0
    if ceil not in (0, 1):
        raise _err(f"{w}: 'ceilMode' = {ceil}, expected 0 or 1")
    return qir.SpikePool(_type(p, w, key="scheme"), _pair(p, "kernel", w, 0),
                         _pair(p, "stride", w, 0), _pair(p, "padding", w, 0), bool(ceil))


def _read_conv(g: h5py.Group, where: str, src: qir.Block, ctx: _Ctx) -> qir.ConvSyn:
    w = _ints(g, "weight", where)
    if w.ndim == 5 and w.shape[4] == 1:  # slayer writes (Co, Ci, kH, kW, 1)
        w = w.reshape(w.shape[:4])
    if w.ndim != 4:
        raise _err(f"{where}: conv weight has shape {w.shape}, expected (Co, Ci/g, kH, kW)")
    if "groups" in g:
        groups = _scalar(g, "groups", where)
    else:
        groups = 1
    return qir.ConvSyn(source=src.name, weight=w, stride=_pair(g, "stride", where, 1),
                       padding=_pair(g, "padding", where, 0),
                       dilation=_pair(g, "dilation", where, 1), groups=groups)


def _read_dense(g: h5py.Group, where: str, src: qir.Block, ctx: _Ctx) -> qir.DenseSyn:
    w = _ints(g, "weight", where)
    n_out = int(np.prod(_shape(g, where))) if "shape" in g else None
    if w.ndim == 1 and n_out and w.size % n_out == 0:  # netx: reshape(shape[0], -1)
        w = w.reshape(n_out, -1)
    if w.ndim != 2:
        raise _err(f"{where}: dense weight has shape {w.shape}, expected (Nout, Nin)")
    delay = _delay(g, w.shape, where) if "delay" in g else None
    return qir.DenseSyn(source=src.name, weight=w, delay=delay)


def _delay(g: h5py.Group, wshape: tuple[int, int], where: str) -> np.ndarray:
    """netx rules (hdf5.py:425-448): scalar; (Nout,) axonal; (Nin,) per input; (Nout, Nin)."""
    d = _ints(g, "delay", where)
    n_out, n_in = wshape
    if d.ndim == 0:
        return np.full(n_out, int(d), dtype=np.int64)
    if d.ndim == 1 and d.size == n_out:
        return d
    if d.ndim == 1 and d.size == n_in:
        return np.repeat(d.reshape(1, -1), n_out, axis=0)
    if d.shape == wshape:
        return d
    raise _err(f"{where}: delay shape {d.shape} fits neither weight {wshape} nor its rows/columns")


def _bias(g: h5py.Group, block: qir.Block, where: str) -> np.ndarray:
    """Per channel (C,), a size-1 value broadcast to (C,), or per neuron (stored W,H,C)."""
    b = _ints(g, "bias", where)
    c = int(block.shape[0])
    if b.size == 1 and c != 1:
        return np.full(c, int(b.reshape(-1)[0]), dtype=np.int64)
    if b.ndim <= 1 and b.size == c:
        return b.reshape(c)
    if b.ndim == 3 and tuple(b.shape) == tuple(block.shape[::-1]):
        return whc_to_chw(b)
    raise _err(f"{where}: bias shape {b.shape} fits neither ({c},) nor (W,H,C) = "
               f"{tuple(block.shape[::-1])}")


# ---- neurons --------------------------------------------------------------------------------
def _read_neuron(g: h5py.Group, block: qir.Block, is_input: bool, ctx: _Ctx, where: str,
                 default=None):
    """``default``: what a missing 'neuron' group means (netx: Readout for dense layers)."""
    if "neuron" not in g:
        if is_input:
            return None
        if default is not None:
            return default()  # netx's default dense neuron: a non-leaky integrator
        raise _err(f"{where}: missing 'neuron' group (netx requires one for conv layers)")
    n = g["neuron"]
    w = f"{where} neuron"
    kind = _type(n, w)
    if kind in schema.EXT_NEURON_TYPES and not ctx.fmt:
        raise _err(f"{w}: neuron type {kind!r} needs the '{schema.FORMAT_ATTR}' attribute")
    reader = _NEURON_READERS.get(kind)
    if reader is None:
        raise _err(f"{w}: unsupported neuron type {kind!r} (supported: CUBA, LOIHI, SDNN"
                   f"{', ' + ', '.join(schema.EXT_NEURON_TYPES) if ctx.fmt else ''})",
                   "netx supports CUBA/LOIHI and SDNN neurons")
    return reader(n, block, is_input, ctx, w)


def _exp(n: h5py.Group, key: str, w: str, ctx: _Ctx) -> int:
    return _scalar(n, key, w) if ctx.fmt and key in n else 6


def _read_cuba(n, block, is_input, ctx, w):
    vth = _ints(n, "vThMant", w)
    if vth.size != 1:
        raise _err(f"{w}: per-channel vThMant {vth.shape} is a simulator-only hack for CUBA",
                   "fold per-channel thresholds into the weights, or use a SoftIF neuron")
    args = (int(vth.reshape(-1)[0]), _scalar(n, "iDecay", w), _scalar(n, "vDecay", w),
            _exp(n, "biasExp", w, ctx))
    role = _attr_str(n.attrs[schema.ROLE_ATTR]) if schema.ROLE_ATTR in n.attrs else ""
    return qir.Readout(*args) if role == "readout" else qir.Cuba(*args)


def _read_sdnn(n, block, is_input, ctx, w):
    if not is_input and "sigma_output" in n:
        return qir.Sigma()
    cls = qir.Delta if is_input else qir.SigmaDelta
    return cls(_scalar(n, "vThMant", w), _exp(n, "spikeExp", w, ctx), _exp(n, "stateExp", w, ctx))


def _read_explicit(cls):
    """Extension types DELTA/SIGMADELTA: the class is named, not implied by the position."""
    def read(n, block, is_input, ctx, w):
        return cls(_scalar(n, "vThMant", w), _exp(n, "spikeExp", w, ctx),
                   _exp(n, "stateExp", w, ctx))
    return read


def _read_softif(n, block, is_input, ctx, w):
    params = json.loads(_attr_str(n.attrs["params"])) if "params" in n.attrs else {}
    graded = "spikeMode" in n  # absent: binary spikes (files from before graded SoftIF)
    if graded != ("maxUnits" in n):
        raise _err(f"{w}: SOFTIF needs both 'spikeMode' and 'maxUnits', or neither")
    return qir.SoftIF(vth=_ints(n, "vThMant", w).reshape(-1),
                      v_init=_ints(n, "vInit", w).reshape(-1) if "vInit" in n else None,
                      bias_exp=_scalar(n, "biasExp", w) if "biasExp" in n else 6,
                      params=params,
                      mode=_type(n, w, key="spikeMode") if graded else schema.SOFTIF_DEFAULT_MODE,
                      max_units=_scalar(n, "maxUnits", w) if graded else 1,
                      clamp_steps=_scalar(n, schema.CLAMP_STEPS_KEY, w)
                      if schema.CLAMP_STEPS_KEY in n else 0,
                      spicalib_beta=_scalar(n, schema.SPICALIB_BETA_KEY, w)
                      if schema.SPICALIB_BETA_KEY in n else None)


_NEURON_READERS = {
    "CUBA": _read_cuba, "LOIHI": _read_cuba, "SDNN": _read_sdnn, "SOFTIF": _read_softif,
    "DELTA": _read_explicit(qir.Delta), "SIGMADELTA": _read_explicit(qir.SigmaDelta),
    "SIGMA": lambda n, block, is_input, ctx, w: qir.Sigma(),
}
_SYNAPSE_READERS = {"conv": _read_conv, "dense": _read_dense}
_LAYER_READERS = {
    "input": _read_input, "flatten": _read_flatten,
    "conv": lambda g, i, ctx: _read_layer(g, i, ctx, "conv"),
    "dense": lambda g, i, ctx: _read_layer(g, i, ctx, "dense"),
}
