"""Write a QNetwork as a NetX HDF5 file (standard, or the loihi-conv extension when needed).

Standard files load in lava-dl 0.6.0's unmodified ``netx.hdf5.Network``; the writer refuses
anything netx would silently mangle (reference doc sections 1.7 and 6). Extension files add
what netx cannot express (docs/netx-extension.md) and are built by ``netx_export.build``.

The write is atomic (``loihi_conv.base.files.atomic_path``): a temp file in the target directory
is written, read back with the reader and compared with the input network, fsynced, and only
then renamed over ``path``.
"""
from __future__ import annotations

import io
import os
from functools import singledispatch
from pathlib import Path

import h5py
import numpy as np

import loihi_conv
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.files import atomic_path
from loihi_conv.base.layout import chw_to_whc
from loihi_conv.fixed import qir
from netx_export import schema, validate
from netx_export.compare import diff_networks

_READOUT_DEFAULT = (schema.NETX_READOUT_VTH, 0, schema.DECAY_ONE, schema.ACT_SHIFT)


def save(qnet: qir.QNetwork, path: str | os.PathLike, *, extension: bool | None = None) -> Path:
    """Write ``qnet`` to ``path`` and return the path.

    ``extension``: None writes standard NetX unless the network needs the extension; False
    refuses networks that need it; True always writes the extension format.
    Raises LoihiConvError (nothing is written) for invalid networks or values netx would mangle.
    """
    path = Path(path)
    validate.check_structure(qnet)
    reasons = validate.extension_reasons(qnet)
    if extension is False and reasons:
        raise LoihiConvError(
            "standard NetX cannot express this network: " + "; ".join(reasons),
            "call save(..., extension=None or True) and build it with netx_export.build")
    use_ext = bool(reasons) if extension is None else bool(extension)
    validate.check_ranges(qnet)
    validate.check_dense_exact(qnet, standard=not use_ext)
    if not path.parent.is_dir():
        raise LoihiConvError(f"cannot write {path}: directory {path.parent} does not exist",
                             "create the directory first")
    with atomic_path(path) as tmp:  # refuses devices/FIFOs/dirs; disk full -> one clean error
        _write_file(qnet, str(tmp), use_ext)
        _read_back(qnet, str(tmp))
    _fsync_dir(path.parent)
    return path


def _write_file(qnet: qir.QNetwork, tmp: str, use_ext: bool) -> None:
    """Build the file in memory, then write its bytes with one plain write: libhdf5 writing
    onto a full disk can crash the interpreter when it closes the file (seen on a 200 kB
    tmpfs), a plain write raises a clean OSError."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", userblock_size=schema.USERBLOCK) as f:
        layers = f.create_group("layer")
        index: dict[str, int] = {}
        for i, block in enumerate(qnet.blocks):
            _write_block(layers, block, i == 0, index, qnet, use_ext)
        _write_root_attrs(f, qnet, use_ext)
        f.attrs[schema.CHECKSUM_ATTR] = schema.file_checksum(f)
    with open(tmp, "wb") as fh:
        fh.write(buf.getbuffer())
    schema.seal_file(tmp)


def _write_root_attrs(f: h5py.File, qnet: qir.QNetwork, use_ext: bool) -> None:
    if use_ext:
        f.attrs[schema.FORMAT_ATTR] = schema.FORMAT_VERSION
    f.attrs[schema.VERSION_ATTR] = loihi_conv.__version__
    f.attrs["recipe"] = schema.to_json(qnet.meta.get("recipe"))
    f.attrs["meta"] = schema.to_json(qnet.meta)
    f.attrs["input_scale"] = float(qnet.input_scale)
    f.attrs["output_scale"] = float(qnet.output_scale)
    f.attrs["tool_versions"] = schema.to_json(schema.tool_versions())


def _write_block(layers: h5py.Group, block: qir.Block, is_input: bool, index: dict[str, int],
                 qnet: qir.QNetwork, use_ext: bool) -> None:
    """One block -> (an optional flatten layer and) one layer group."""
    if not is_input and _needs_flatten(block.synapses[0], qnet):
        layers.create_group(str(len(layers)))["type"] = schema.type_array("flatten")
    g = layers.create_group(str(len(layers)))
    g.attrs[schema.NAME_ATTR] = block.name
    index[block.name] = int(g.name.rsplit("/", 1)[1])
    if is_input:
        g["type"] = schema.type_array("input")
    else:
        _write_synapse(block.synapses[0], g)
        _write_pool(block.synapses[0].pool, g)
        if use_ext:
            g["source"] = schema.int_array(index[block.synapses[0].source])
        for k, syn in enumerate(block.synapses[1:], start=1):
            sg = g.create_group(f"synapses/{k}")
            _write_synapse(syn, sg)
            _write_pool(syn.pool, sg)
            sg["source"] = schema.int_array(index[syn.source])
    g["shape"] = schema.int_array(block.shape)
    if block.bias is not None:
        g["bias"] = schema.copy_key_array(_bias_for_file(block))
    _write_neuron(block.neuron, g, block, is_input)


LAYER_TYPE = {qir.ConvSyn: "conv", qir.DenseSyn: "dense"}  # layer type of a primary synapse


def _needs_flatten(syn: qir.Synapse, qnet: qir.QNetwork) -> bool:
    """netx flattens a (C,H,W) output only through a 'flatten' layer before a dense layer."""
    return LAYER_TYPE.get(type(syn)) == "dense" and len(qnet[syn.source].shape) == 3


def _bias_for_file(block: qir.Block) -> np.ndarray:
    """Per-channel (C,) as is; per-neuron (C,H,W) in netx's Lava order (W,H,C)."""
    return chw_to_whc(np.asarray(block.bias, dtype=np.int64))


# ---- synapses -----------------------------------------------------------------------------
@singledispatch
def _write_synapse(syn, g: h5py.Group) -> None:
    raise LoihiConvError(f"cannot write synapse type {type(syn).__name__}",
                         "use qir.ConvSyn or qir.DenseSyn")


@_write_synapse.register
def _(syn: qir.ConvSyn, g: h5py.Group) -> None:
    """netx create_conv: weight (Co,Ci/g,kH,kW), stride/padding/dilation [y,x], scalar groups."""
    g["type"] = schema.type_array("conv")
    g["weight"] = schema.copy_key_array(syn.weight)
    g["stride"] = schema.int_array(syn.stride)
    g["padding"] = schema.int_array(syn.padding)
    g["dilation"] = schema.int_array(syn.dilation)
    g["groups"] = schema.int_array(syn.groups)


@_write_synapse.register
def _(syn: qir.DenseSyn, g: h5py.Group) -> None:
    """netx create_dense: weight (Nout, Nin); delay (Nout,Nin) or (Nout,) (axonal)."""
    g["type"] = schema.type_array("dense")
    g["weight"] = schema.copy_key_array(syn.weight)
    if syn.delay is not None:
        g["delay"] = schema.int_array(syn.delay)


def _write_pool(pool: qir.SpikePool | None, g: h5py.Group) -> None:
    """Extension: the spiking max-pool stage on this synapse's input, as the optional group
    ``spikePool`` of the synapse's group: ``scheme`` (string), ``kernel``/``stride``/
    ``padding`` [y, x] and ``ceilMode`` (0/1), all int64 (the writer always writes all five).
    A pool makes the file an extension file (``validate.extension_reasons``)."""
    if pool is None:
        return
    p = g.create_group(schema.POOL_GROUP)
    p["scheme"] = schema.type_array(pool.scheme)
    for key, value in (("kernel", pool.kernel), ("stride", pool.stride),
                       ("padding", pool.padding), ("ceilMode", int(bool(pool.ceil_mode)))):
        p[key] = schema.int_array(value)


# ---- neurons ------------------------------------------------------------------------------
@singledispatch
def _write_neuron(neuron, g: h5py.Group, block: qir.Block, is_input: bool) -> None:
    if neuron is not None:
        raise LoihiConvError(f"block {block.name!r}: cannot write neuron "
                             f"{type(neuron).__name__}", "use one of loihi_conv.fixed.qir.NEURONS")


def _cuba_group(g: h5py.Group, vth: int, i_decay: int, v_decay: int, bias_exp: int) -> h5py.Group:
    """netx CUBA: vth=vThMant, du=iDecay-1, dv=vDecay, bias_exp fixed at 6. No 'messageBits'
    (netx reads it as a sub-group and breaks; reference doc 1.2)."""
    n = g.create_group("neuron")
    n["type"] = schema.type_array("CUBA")
    for key, value in (("iDecay", i_decay), ("vDecay", v_decay), ("vThMant", vth),
                       ("refDelay", 1)):
        n[key] = schema.int_array(value)
    if bias_exp != 6:
        n["biasExp"] = schema.int_array(bias_exp)  # extension only (validate.extension_reasons)
    return n


@_write_neuron.register
def _(neuron: qir.Cuba, g, block, is_input) -> None:
    _cuba_group(g, neuron.vth, neuron.i_decay, neuron.v_decay, neuron.bias_exp)


@_write_neuron.register
def _(neuron: qir.Readout, g, block, is_input) -> None:
    """netx's default dense neuron (no group) when it matches; else a tagged CUBA group."""
    params = (neuron.vth, neuron.i_decay, neuron.v_decay, neuron.bias_exp)
    if params == _READOUT_DEFAULT and LAYER_TYPE.get(type(block.synapses[0])) == "dense":
        return
    _cuba_group(g, *params).attrs[schema.ROLE_ATTR] = "readout"


def _sdnn_group(g: h5py.Group, type_name: str, neuron) -> h5py.Group:
    n = g.create_group("neuron")
    n["type"] = schema.type_array(type_name)
    n["activation"] = schema.type_array("relu")  # netx ignores it: SigmaDelta is always ReLU
    if hasattr(neuron, "vth"):
        n["vThMant"] = schema.int_array(neuron.vth)
    if getattr(neuron, "spike_exp", 6) != 6 or getattr(neuron, "state_exp", 6) != 6:
        n["spikeExp"] = schema.int_array(neuron.spike_exp)
        n["stateExp"] = schema.int_array(neuron.state_exp)
    return n


@_write_neuron.register
def _(neuron: qir.Delta, g, block, is_input) -> None:
    _sdnn_group(g, "SDNN" if is_input else "DELTA", neuron)  # netx: SDNN input -> Delta


@_write_neuron.register
def _(neuron: qir.SigmaDelta, g, block, is_input) -> None:
    _sdnn_group(g, "SIGMADELTA" if is_input else "SDNN", neuron)


@_write_neuron.register
def _(neuron: qir.Sigma, g, block, is_input) -> None:
    n = _sdnn_group(g, "SIGMA" if is_input else "SDNN", neuron)
    n["sigma_output"] = True  # netx only tests its presence


@_write_neuron.register
def _(neuron: qir.SoftIF, g, block, is_input) -> None:
    """Extension: per-channel vThMant and vInit, bias exponent, the graded payload mode and its
    largest payload (only when not the binary default), clamp steps and SpiCalib's beta (only
    when used), free-form params as JSON."""
    n = g.create_group("neuron")
    n["type"] = schema.type_array("SOFTIF")
    n["vThMant"] = schema.int_array(neuron.vth)
    if neuron.v_init is not None:
        n["vInit"] = schema.int_array(neuron.v_init)
    n["biasExp"] = schema.int_array(neuron.bias_exp)
    if neuron.mode != schema.SOFTIF_DEFAULT_MODE:  # graded payloads; absent = binary 'if-soft'
        n["spikeMode"] = schema.type_array(neuron.mode)
        n["maxUnits"] = schema.int_array(neuron.max_units)
    if neuron.clamp_steps:  # absent = 0 (no clamping)
        n[schema.CLAMP_STEPS_KEY] = schema.int_array(neuron.clamp_steps)
    if neuron.spicalib_beta is not None:  # absent = no SpiCalib
        n[schema.SPICALIB_BETA_KEY] = schema.int_array(neuron.spicalib_beta)
    if neuron.params:
        n.attrs["params"] = schema.to_json(neuron.params)


# ---- read-back ----------------------------------------------------------------------------
def _read_back(qnet: qir.QNetwork, tmp: str) -> None:
    """Reload the temp file with our reader; any difference is a writer bug, never shipped."""
    from netx_export.reader import load  # the reader imports nothing from the writer

    diffs = diff_networks(qnet, load(tmp))
    if diffs:
        raise LoihiConvError("the written file does not read back as the same network: "
                             + "; ".join(diffs[:5]), "report this as a loihi-conv bug")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
