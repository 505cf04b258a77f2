"""QNetwork / .net file -> Lava processes (``LavaNet``), ready for ``netx_export.runner``.

Two engines:
* ``netx``: standard files go through lava-dl's unmodified ``netx.hdf5.Network``.
* ``loihi-conv``: our own builder (extension files, or any network on request) wires real
  Lava processes: ``lava.proc.dense.process.Dense``/``DelayDense`` and ``lava.proc.conv``
  synapses with exactly the integer weights of the QNetwork (dense: mantissa, weight_exp and
  sign mode chosen by ``weights.lava_dense_encoding``), LIF / SoftIF / Delta / SigmaDelta /
  Sigma neurons, and several synapses into one ``a_in`` for fan-in (Lava sums an InPort's
  incoming connections, magma/core/model/py/ports.py:333-351). A synapse fed by a graded
  neuron (SDNN, or SoftIF in a burst/multi-bit/buffered mode or with SpiCalib) gets
  ``num_message_bits > 0`` (``MESSAGE_BITS``), so Lava applies ``W · payload`` instead of
  casting spikes to bool. A synapse with a spiking max-pool stage (``qir.SpikePool``) receives
  its source through a ``procs.pool.SpikePoolProc`` in the same step, with the source's bits.

Layouts: QNetwork arrays are PyTorch order; every Lava process gets Lava order (W,H,C) via
``loihi_conv.base.layout``. ``LavaBlock.shape`` stays PyTorch order.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.layout import chw_to_whc, conv_weight_to_lava
from loihi_conv.fixed import qir
from netx_export import lava_env, validate
from netx_export.reader import load, read_info
from netx_export.weights import lava_conv_groups, lava_dense_encoding

ENGINES = ("netx", "loihi-conv")


@dataclass
class LavaBlock:
    """One QNetwork block as Lava processes. ``shape`` is PyTorch order."""
    name: str
    shape: tuple[int, ...]
    neuron: Any  # a Lava neuron process (shape in Lava order), or None for a neuron-less input
    model: Any  # the qir neuron (decides state names and reset values)
    synapses: list[Any] = field(default_factory=list)
    bias: np.ndarray | None = None  # the block's bias, Lava order (for inject='bias')
    pools: list[Any] = field(default_factory=list)  # per synapse: its SpikePoolProc, or None


@dataclass
class InputTarget:
    """Where input ints enter a network without an input neuron: a synapse ``s_in``.
    ``flat``: the port wants the (C,H,W) input flattened in PyTorch C order."""
    port: Any
    flat: bool


@dataclass
class LavaNet:
    """Built Lava network. ``blocks`` follow ``qnet.blocks``; ``inputs`` is empty when the
    input block has a neuron (feed ``blocks[0].neuron.a_in`` or its bias instead)."""
    qnet: qir.QNetwork
    blocks: list[LavaBlock]
    engine: str
    inputs: list[InputTarget] = field(default_factory=list)
    netx: Any = None  # the netx.hdf5.Network when engine == 'netx'
    path: Path | None = None

    def __getitem__(self, name: str) -> LavaBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def output(self) -> LavaBlock:
        return self.blocks[-1]


def build(qnet_or_path: qir.QNetwork | str | os.PathLike, *, engine: str | None = None,
          input_message_bits: int = 16) -> LavaNet:
    """Build Lava processes for a network or a NetX file.

    ``engine``: None picks 'netx' for standard networks/files and 'loihi-conv' otherwise.
    ``input_message_bits``: graded payload width for input ints sent straight to the first
    synapse(s) (input block without neuron); only "> 0" matters in the CPU simulator.
    """
    lava_env.prepare()
    if engine not in (None, *ENGINES):
        raise LoihiConvError(f"unknown engine {engine!r}", f"use one of {ENGINES}")
    if input_message_bits < 1:
        raise LoihiConvError("input_message_bits must be >= 1 (graded input ints)",
                             "pass e.g. 16 or 24")
    path = None
    if isinstance(qnet_or_path, qir.QNetwork):
        qnet = qnet_or_path
        validate.check_structure(qnet)
        validate.check_ranges(qnet, warn=False)
        standard = _is_standard(qnet)
    else:
        path = Path(qnet_or_path)
        qnet = load(path)
        standard = read_info(path)["format"] == 0
    engine = engine or ("netx" if standard else "loihi-conv")
    if engine == "netx" and not standard:
        raise LoihiConvError("this network uses the loihi-conv NetX extension; netx cannot "
                             "build it", "use engine=None or 'loihi-conv'")
    if engine == "netx":
        return _build_netx(qnet, path, input_message_bits)
    validate.check_dense_exact(qnet, standard=False, warn=False)
    return _build_own(qnet, path, input_message_bits)


def _is_standard(qnet: qir.QNetwork) -> bool:
    if validate.extension_reasons(qnet):
        return False
    try:
        validate.check_dense_exact(qnet, standard=True, warn=False)
    except LoihiConvError:
        return False
    return True


# ---- netx ---------------------------------------------------------------------------------
def _build_netx(qnet: qir.QNetwork, path: Path | None, input_message_bits: int) -> LavaNet:
    netx = lava_env.import_netx()  # imports torch via slayer: only when actually needed

    def network(p: Path):
        try:
            return netx.hdf5.Network(net_config=str(p), input_message_bits=input_message_bits)
        except Exception as e:  # netx's own failures on a file our reader accepted
            raise LoihiConvError(f"lava-dl netx could not build {p}: {type(e).__name__}: {e}",
                                 "build it with engine='loihi-conv'") from e

    if path is None:  # a QNetwork: netx reads files only
        from netx_export.writer import save

        with tempfile.TemporaryDirectory(prefix="loihi_conv_netx_") as tmp:
            net = network(save(qnet, Path(tmp) / "network.net", extension=False))
    else:
        net = network(path)
    layers = list(net.layers)
    has_input_neuron = qnet.input.neuron is not None
    blocks = []
    if not has_input_neuron:
        blocks.append(LavaBlock(qnet.input.name, tuple(qnet.input.shape), None, None))
    for block, layer in zip(qnet.blocks[0 if has_input_neuron else 1:], layers):
        syn = getattr(layer, "synapse", None)
        blocks.append(LavaBlock(block.name, tuple(block.shape), layer.neuron, block.neuron,
                                [syn] if syn is not None else [], _bias_whc(block)))
    if len(blocks) != len(qnet.blocks):
        raise LoihiConvError(f"netx built {len(layers)} layers for {len(qnet.blocks)} blocks",
                             "report this as a loihi-conv bug")
    inputs = [] if has_input_neuron else [
        InputTarget(net.inp, len(net.inp.shape) == 1 and len(qnet.input.shape) == 3)]
    return LavaNet(qnet, blocks, "netx", inputs, net, path)


# ---- our builder ----------------------------------------------------------------------------
def _whc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape[::-1])


def _bias_whc(block: qir.Block) -> np.ndarray | None:
    """Bias in Lava order: per channel (C,) broadcast along the last (C) axis; per neuron
    (C,H,W) transposed to (W,H,C)."""
    if block.bias is None:
        return None
    b = np.asarray(block.bias, dtype=np.int64)
    whc = _whc(block.shape)
    return chw_to_whc(b) if b.ndim == 3 else np.broadcast_to(b, whc).copy()


def _lif(neuron, block: qir.Block):
    """Cuba/Readout -> Lava LIF exactly as netx maps CUBA: du = iDecay-1 (Lava adds 1)."""
    from lava.proc.lif.process import LIF

    bias = _bias_whc(block)
    return LIF(shape=_whc(block.shape), vth=int(neuron.vth), du=int(neuron.i_decay) - 1,
               dv=int(neuron.v_decay), bias_exp=int(neuron.bias_exp),
               bias_mant=0 if bias is None else bias.astype(np.int32))


def _softif(neuron: qir.SoftIF, block: qir.Block):
    from netx_export.procs.softif_process import SoftIF

    bias = _bias_whc(block)
    return SoftIF(shape=_whc(block.shape), vth=np.asarray(neuron.vth, np.int64),
                  v_init=0 if neuron.v_init is None else np.asarray(neuron.v_init, np.int64),
                  bias=0 if bias is None else bias, bias_exp=int(neuron.bias_exp),
                  mode=str(neuron.mode), max_units=int(neuron.max_units),
                  clamp_steps=int(neuron.clamp_steps),
                  spicalib_beta=None if neuron.spicalib_beta is None else int(neuron.spicalib_beta))


def _delta(neuron: qir.Delta, block: qir.Block):
    from lava.proc.sdn.process import Delta

    return Delta(shape=_whc(block.shape), vth=int(neuron.vth), spike_exp=int(neuron.spike_exp),
                 state_exp=int(neuron.state_exp))


def _sigma_delta(neuron: qir.SigmaDelta, block: qir.Block):
    from lava.proc.sdn.process import ActivationMode, SigmaDelta

    bias = _bias_whc(block)
    return SigmaDelta(shape=_whc(block.shape), vth=int(neuron.vth),
                      bias=0 if bias is None else bias.astype(np.int32),
                      act_mode=ActivationMode.RELU, spike_exp=int(neuron.spike_exp),
                      state_exp=int(neuron.state_exp))


def _sigma(neuron: qir.Sigma, block: qir.Block):
    from lava.proc.sdn.process import Sigma

    return Sigma(shape=_whc(block.shape))


NEURON_BUILDERS = {qir.Cuba: _lif, qir.Readout: _lif, qir.SoftIF: _softif, qir.Delta: _delta,
                   qir.SigmaDelta: _sigma_delta, qir.Sigma: _sigma}


def _softif_bits(neuron: qir.SoftIF) -> int:
    """0 for binary SoftIF spikes; the graded payload's width for burst/multi-bit/buffered or
    SpiCalib (signed)."""
    from netx_export.procs.softif_process import message_bits

    return message_bits(str(neuron.mode), int(neuron.max_units), neuron.spicalib_beta is not None)


# Output payload bits of a neuron (netx: LIF 0 = binary spikes, SDNN 16): the receiving
# synapse's num_message_bits (> 0: graded, W·s; 0: binary, s cast to bool). Input ints use the
# caller's value.
MESSAGE_BITS = {qir.Cuba: lambda n: 0, qir.Readout: lambda n: 0, qir.SoftIF: _softif_bits,
                qir.Delta: lambda n: 16, qir.SigmaDelta: lambda n: 16, qir.Sigma: lambda n: 16}


def _conv(syn: qir.ConvSyn, src_shape: tuple[int, ...], bits: int):
    """Lava Conv takes (X,Y)-ordered geometry: reverse PyTorch's (y, x) pairs. ``src_shape``:
    the (C,H,W) the weights see (pooled behind a spiking max-pool stage)."""
    from lava.proc.conv.process import Conv

    weight, groups = lava_conv_groups(np.asarray(syn.weight, np.int64), int(syn.groups))
    return Conv(weight=conv_weight_to_lava(weight),
                input_shape=_whc(src_shape), stride=tuple(syn.stride)[::-1],
                padding=tuple(syn.padding)[::-1], dilation=tuple(syn.dilation)[::-1],
                groups=groups, num_message_bits=bits)


def _dense(syn: qir.DenseSyn, src_shape: tuple[int, ...], bits: int):
    """Dense (or DelayDense) with an exact mantissa/exponent and an explicit sign mode."""
    from lava.proc.dense.process import DelayDense, Dense
    from lava.utils.weightutils import SignMode

    enc = lava_dense_encoding(np.asarray(syn.weight, np.int64))
    kwargs = dict(weights=enc.weights.astype(np.int32), weight_exp=enc.weight_exp,
                  num_weight_bits=enc.num_weight_bits, sign_mode=SignMode[enc.sign_mode],
                  num_message_bits=bits)
    if syn.delay is None:
        return Dense(**kwargs)
    delays = np.broadcast_to(np.asarray(syn.delay, np.int64).reshape(enc.weights.shape[0], -1),
                             enc.weights.shape).astype(int)  # Lava insists on dtype int
    return DelayDense(delays=delays, max_delay=max(int(delays.max()), 1), **kwargs)


SYNAPSE_BUILDERS = {qir.ConvSyn: _conv, qir.DenseSyn: _dense}
SYNAPSE_FLATTENS = {qir.ConvSyn: False, qir.DenseSyn: True}  # dense sees (C,H,W) flattened


def _pool(pool: qir.SpikePool, src: qir.Block):
    """The spiking max-pool stage of a synapse (``procs.pool``), on the source's (W,H,C)."""
    from netx_export.procs.pool import SpikePoolProc

    return SpikePoolProc(shape=_whc(src.shape), scheme=pool.scheme, kernel=pool.kernel,
                         stride=pool.stride, padding=pool.padding, ceil_mode=pool.ceil_mode)


def _connect(out, port, flat: bool) -> None:
    """out -> port; ``flat``: (W,H,C) -> (C,H,W) -> PyTorch C-order flatten, as netx does
    (hdf5.py:655-660)."""
    (out.transpose([2, 1, 0]).flatten() if flat else out).connect(port)


def _build_own(qnet: qir.QNetwork, path: Path | None, input_message_bits: int) -> LavaNet:
    """Wire the processes. A synapse with a spiking max-pool stage gets a ``SpikePoolProc``
    between the source's ``s_out`` and its ``s_in`` (no extra step, procs/pool.py), and the
    stage's messages keep the source's message bits."""
    from netx_export.procs.pool import message_bits

    blocks: dict[str, LavaBlock] = {}
    inputs: list[InputTarget] = []
    for block in qnet.blocks:
        neuron = None if block.neuron is None else \
            NEURON_BUILDERS[type(block.neuron)](block.neuron, block)
        lb = LavaBlock(block.name, tuple(block.shape), neuron, block.neuron, [],
                       _bias_whc(block))
        for syn in block.synapses:
            src = qnet[syn.source]
            src_lava = blocks[syn.source]
            bits = input_message_bits if src.neuron is None else \
                MESSAGE_BITS[type(src.neuron)](src.neuron)
            shape = qir.synapse_input_shape(syn, src.shape)
            pool = None if syn.pool is None else _pool(syn.pool, src)
            proc = SYNAPSE_BUILDERS[type(syn)](syn, shape, bits if pool is None else
                                               message_bits(bits))
            flat = SYNAPSE_FLATTENS[type(syn)] and len(shape) == 3
            if pool is not None:
                _connect(pool.s_out, proc.s_in, flat)
            entry, entry_flat = (proc.s_in, flat) if pool is None else (pool.s_in, False)
            if src_lava.neuron is None:
                inputs.append(InputTarget(entry, entry_flat))
            else:
                _connect(src_lava.neuron.s_out, entry, entry_flat)
            proc.a_out.connect(neuron.a_in)
            lb.synapses.append(proc)
            lb.pools.append(pool)
        blocks[block.name] = lb
    return LavaNet(qnet, list(blocks.values()), "loihi-conv", inputs, None, path)
