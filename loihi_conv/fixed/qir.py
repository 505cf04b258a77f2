"""The fixed-point IR: integers only, one ``Block`` per Loihi population, mirroring NetX.

This is what the quantizer produces, what the NetX writer writes, what the NetX reader returns
(for our files and lava-dl's), and what the emulator runs. Layout conventions:
* block ``shape`` is PyTorch order: (C, H, W) or (N,);
* weights are PyTorch layouts (conv correlation (Co, Ci/g, kH, kW); dense (Nout, Nin));
* a ``DenseSyn`` fed by a (C,H,W) block sees it flattened in PyTorch C order (NetX ``flatten``);
* bias is (C,) per channel or the block's full shape per neuron; all arrays are int64 numpy.

Time: every synapse delays by one step (Lava's synapse sends the a_buf computed at t-1), plus
``delay`` extra steps on dense synapses. A block with several synapses sums them into one
neuron input (Lava InPort fan-in), which is how residual adds are built.

Spiking max-pool (``SpikePool``, emulator and NetX extension): a synapse with ``pool`` set receives
its source's out-port messages through a stateful integer pooling stage, and its weights act on
the pooled (C, H', W') messages (a ``DenseSyn`` sees them flattened in C order). The stage runs
in the synapse's receive, in the same step as the weights (no extra delay), which is the float
SNN's timing: a MaxPool2d is part of the synapse path between two populations (a pooling block
of its own would add the one-step delay of one more synapse). Messages are
integer units per channel (0/1 spikes or graded n); within a channel all units are worth the
same threshold, so a max over units is a max over rates. Per step, with ``maxpool`` PyTorch's
``max_pool2d`` (kernel, stride, padding, ceil mode; padded positions never win; ties -> first
index in row-major window order) and ``msg`` the source's (C, H, W) message:

* ``mli`` (MLIPooling, SpiCalib §3.4): ``cum += msg``; ``total = maxpool(cum)``;
  ``out = total - sent``; ``sent = total`` (exact integers). The cumulative output is the max of the
  window's cumulative inputs; ``|out| <= max|msg|`` (0/1 stays 0/1).
* ``rate-gate`` (Rueckauer et al. 2016 §3.6): ``r += (msg << RATE_INPUT_SHIFT) - (r >> RATE_DECAY_SHIFT)`` (``base.limits``)
  (arithmetic shift; an exponential rate estimate with decay 1 - 2^-3); ``out`` = the ``msg``
  of the window's neuron with the largest ``r`` (first on ties).
* ``spike-max``: ``out = maxpool(msg)`` (stateless; on the neuron-less input block it is the
  ANN max-pool of the integer image, exact since rounding is monotone).

Every scheme's output lies in the source's per-step message range, so message bounds carry over.
Standard NetX has no such stage; the NetX extension writes it as a ``spikePool`` group on the
synapse and Lava runs it as the custom process ``netx_export.procs.pool.SpikePoolProc``
(docs/netx-extension.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loihi_conv.base.limits import DECAY_ONE, NETX_READOUT_VTH
from loihi_conv.fixed.softif_modes import is_buffered

Pair = tuple[int, int]


# ---- synapses -------------------------------------------------------------------------
POOL_SCHEMES = ("mli", "rate-gate", "spike-max")  # SpikePool.scheme values (module doc)


@dataclass(eq=False)
class SpikePool:
    """A spiking max-pool stage on a synapse's input (module doc): ``scheme`` one of
    ``POOL_SCHEMES``; kernel/stride/padding/ceil_mode as PyTorch's ``max_pool2d``."""
    scheme: str
    kernel: Pair = (2, 2)
    stride: Pair = (2, 2)
    padding: Pair = (0, 0)
    ceil_mode: bool = False

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Pooled (C, H', W') of a (C, H, W) source, PyTorch's pooling output size."""
        c, *hw = (int(n) for n in shape)
        out = []
        for n, k, s, p in zip(hw, self.kernel, self.stride, self.padding):
            span = n + 2 * p - k
            o = (-(-span // s) if self.ceil_mode else span // s) + 1
            if self.ceil_mode and (o - 1) * s >= n + p:  # the last window must start inside
                o -= 1
            out.append(o)
        return (c, out[0], out[1])


@dataclass(eq=False)
class Synapse:
    source: str  # name of the block whose output spikes feed this synapse


@dataclass(eq=False)
class DenseSyn(Synapse):
    weight: np.ndarray = None  # (Nout, Nin) int
    delay: np.ndarray | None = None  # (Nout, Nin) or (Nout,) int extra steps, <= 62
    pool: SpikePool | None = None  # receives the source through this stage (module doc)


@dataclass(eq=False)
class ConvSyn(Synapse):
    weight: np.ndarray = None  # (Co, Ci/groups, kH, kW) int, correlation (PyTorch) layout
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    pool: SpikePool | None = None  # receives the source through this stage (module doc)


def synapse_input_shape(syn: Synapse, src_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape the synapse's weights see: the source's, or its pooled (C, H', W')."""
    pool = getattr(syn, "pool", None)
    return tuple(src_shape) if pool is None else pool.out_shape(src_shape)


# ---- neurons --------------------------------------------------------------------------
@dataclass(eq=False)
class Cuba:
    """Lava LIF (NetX 'CUBA'): IF with reset to zero when i_decay=4096, v_decay=0."""
    vth: int
    i_decay: int = DECAY_ONE
    v_decay: int = 0
    bias_exp: int = 6


@dataclass(eq=False)
class Readout:
    """Non-spiking accumulator (NetX dense without a neuron group: CUBA iDecay=0, vDecay=4096,
    vThMant=131072). The prediction is its state ``u`` (sum of a<<6 over time). Its bias enters
    only ``v = u + (bias << bias_exp)`` (once, not accumulated): the quantizer scales the bias by
    the steps run, so ``v / QNetwork.output_scale`` is the float SNN's summed output."""
    vth: int = NETX_READOUT_VTH
    i_decay: int = 0
    v_decay: int = DECAY_ONE
    bias_exp: int = 6


@dataclass(eq=False)
class SoftIF:
    """Integrate-and-fire with reset by subtraction and per-channel thresholds (loihi-conv
    extension; a custom Lava process). ``vth`` and ``v_init`` are (C,) ints in state units.

    ``mode`` names the float model whose spike payload it reproduces (docs/architecture.md):
    'if-soft' (binary spikes, the default), 'if-burst', 'if-multibit', 'if-buffered' (graded
    spikes carrying n threshold units, signed for 'if-buffered'); ``max_units`` is the largest
    |n| per step (Γ for burst, S_max for multi-bit/buffered; 1 for 'if-soft').

    ``clamp_steps`` (voltage clamping, ``Recipe.clamp_delay``): on steps t = 1..clamp_steps of
    a sample the neuron is held -- no input, no bias, v stays v_init << 6, payload 0.
    ``spicalib_beta`` (None: off): SpiCalib's ISI monitor with the integer allowance beta on the
    mode's payload (SpiCalib eq. 10-11, exact integer form in loihi_conv/snn/neurons/spicalib.py): the
    payload may then be -1 less (signed graded messages). Both count steps with a per-sample
    step counter ``t``; docs/architecture.md "Fixed-point semantics"."""
    vth: np.ndarray
    v_init: np.ndarray | None = None
    bias_exp: int = 6
    params: dict[str, Any] = field(default_factory=dict)
    mode: str = "if-soft"
    max_units: int = 1
    clamp_steps: int = 0
    spicalib_beta: int | None = None

    @property
    def counters(self) -> tuple[str, ...]:
        """Step-counted states in use (restart at 0 every sample): ``t`` with clamping or
        SpiCalib, SpiCalib's ``n_spikes``, ``t_last``, ``net``."""
        spicalib = self.spicalib_beta is not None
        return (("t",) if spicalib or self.clamp_steps > 0 else ()) \
            + (("n_spikes", "t_last", "net") if spicalib else ())

    @property
    def state_names(self) -> tuple[str, ...]:
        """Every state the emulator and the Lava process keep (the process's Var names): ``v``,
        the buffer ``vb`` of a buffered mode ('if-buffered'), then ``counters``."""
        return ("v",) + (("vb",) if is_buffered(self.mode) else ()) + self.counters


@dataclass(eq=False)
class Delta:
    """NetX SDNN input neuron (Lava Delta)."""
    vth: int
    spike_exp: int = 6
    state_exp: int = 6


@dataclass(eq=False)
class SigmaDelta:
    """NetX SDNN hidden neuron (Lava SigmaDelta, ReLU, lava-nc 0.10.0 residue behaviour)."""
    vth: int
    spike_exp: int = 6
    state_exp: int = 6


@dataclass(eq=False)
class Sigma:
    """NetX SDNN output neuron (``sigma_output``): sends its running sum; takes no bias."""


NEURONS = (Cuba, Readout, SoftIF, Delta, SigmaDelta, Sigma)


# ---- blocks and network ---------------------------------------------------------------
@dataclass(eq=False)
class Block:
    name: str
    shape: tuple[int, ...]
    synapses: list[Synapse] = field(default_factory=list)  # empty for the input block
    bias: np.ndarray | None = None
    neuron: Any = None  # one of NEURONS, or None for a neuron-less input block

    @property
    def is_input(self) -> bool:
        return not self.synapses


@dataclass(eq=False)
class QNetwork:
    """Blocks in execution order; blocks[0] is the input, blocks[-1] the output.

    ``input_scale``: float input x becomes int round(x * input_scale) at the input port.
    ``output_scale``: the output block's integer readout divided by this gives ANN units.
    ``meta``: provenance (recipe, tool versions, per-layer scales), stored in exported files.
    """
    blocks: list[Block]
    input_scale: float = 1.0
    output_scale: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def input(self) -> Block:
        return self.blocks[0]

    @property
    def output(self) -> Block:
        return self.blocks[-1]

    @property
    def depth(self) -> int:
        """Synapse hops from input to output along the longest path (the output latency)."""
        hops: dict[str, int] = {}
        for b in self.blocks:
            hops[b.name] = max((hops[s.source] + 1 for s in b.synapses), default=0)
        return hops[self.blocks[-1].name]


def mantissa_bits(w: np.ndarray) -> int:
    """Bits of integer weights as Loihi stores them: a signed mantissa times a shared power of two
    (even ints in [-254, 254] are 8-bit: mantissa [-127, 127], times 2). Here, with numpy only, so
    that inspecting a file does not import torch."""
    nz = np.abs(w[w != 0])
    if nz.size == 0:
        return 0
    k = 0
    while not np.any(nz % (2 << k)) and k < 62:
        k += 1
    return int(nz.max() >> k).bit_length() + int(w.min() < 0)
