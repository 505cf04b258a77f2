"""SpikePoolProc: the spiking max-pool stage (``qir.SpikePool``) as a Lava process between a
source's ``s_out`` and a Dense/Conv ``s_in`` (loihi-conv extension; bit-exact with
``loihi_conv.emulate``'s ``PoolStage``s).

Integer rules, per step, on the source's (C, H, W) message ``msg`` (the qir module docstring),
with ``maxpool`` PyTorch's ``max_pool2d`` (kernel, stride, padding, ceil mode; padded positions
never win; ties -> the first position in row-major window order)::

    mli        cum += msg; total = maxpool(cum); out = total - sent; sent = total
    rate-gate  r += (msg << RATE_INPUT_SHIFT) - (r >> RATE_DECAY_SHIFT)   (arithmetic shift)
               out = msg of the window's position with the largest r (first on ties)
    spike-max  out = maxpool(msg)

Every scheme's output lies in the source's per-step message range (0/1 spikes stay 0/1), so
the receiving synapse takes the source's ``num_message_bits`` (``message_bits``).

Timing: no extra step. Under LoihiProtocol every process runs ``run_spk`` at once and ports
block: Dense/Conv send their a_buf of t-1 first and then receive (proc/dense/models.py:96-107,
proc/conv/models.py:34-51), a neuron receives ``a_in`` and then sends ``s_out``
(proc/lif/models.py), and this process receives and then sends. So within step t the chain
source neuron -> pool -> synapse resolves in that order without a cycle, and the synapse's
a_buf of step t holds W . pool(s(t)): the emulator's timing (the stage runs in the synapse's
receive). On Loihi 2 the stage would be a microcode neuron population per pooling block with
lateral inhibition (MLIPooling, SpiCalib §3.4); only this CPU process is built here.

Layouts: ports and Vars are Lava order (W, H, C) (``s_out`` and ``sent``: the pooled (W', H', C));
the rules run in PyTorch order (C, H, W), converted at the border with ``loihi_conv.base.layout``.
``kernel``/``stride``/``padding`` are PyTorch (y, x) pairs, as in ``qir.SpikePool`` (not Lava
Conv's (x, y)). numpy only: torch hangs inside Lava processes (lava/proc/conv/utils.py:10-18).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from loihi_conv.base.layout import chw_to_whc, whc_to_chw
from loihi_conv.base.limits import RATE_DECAY_SHIFT, RATE_INPUT_SHIFT
from loihi_conv.fixed.qir import SpikePool

# A padded position holds this rank, below any real one (states and messages are far smaller).
PAD = np.iinfo(np.int64).min

# State Vars each scheme uses (every process has all of them; unused ones stay 0). ``sent`` is
# pooled-shaped, the others source-shaped.
STATE_VARS = {"mli": ("cum", "sent"), "rate-gate": ("rate",), "spike-max": ()}
State = dict  # Var name -> int64 array, PyTorch order (C, H, W)


# ---- the integer rules (numpy, PyTorch order) ------------------------------------------------
def windows(x: np.ndarray, pool: SpikePool, fill: int) -> Iterator[np.ndarray]:
    """Each kernel offset's (C, H', W') view of ``x`` (C, H, W), in row-major window order;
    positions outside ``x`` (padding, the ceil-mode overhang) hold ``fill``."""
    c, h, w = x.shape
    _, oh, ow = pool.out_shape(x.shape)
    (kh, kw), (sh, sw), (ph, pw) = (tuple(int(v) for v in p)
                                    for p in (pool.kernel, pool.stride, pool.padding))
    rows, cols = max(ph + h, (oh - 1) * sh + kh), max(pw + w, (ow - 1) * sw + kw)
    padded = np.full((c, rows, cols), fill, dtype=np.int64)
    padded[:, ph:ph + h, pw:pw + w] = x
    for ky in range(kh):
        for kx in range(kw):
            yield padded[:, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw]


def gated_max(rank: np.ndarray, value: np.ndarray, pool: SpikePool) -> np.ndarray:
    """Per window, ``value`` at the position of the largest ``rank`` (the first in row-major
    order on ties, padding never: PyTorch's ``max_pool2d`` with ``return_indices``).
    (C, H, W) ints -> (C, H', W') int64."""
    best = out = None
    for r, v in zip(windows(rank, pool, PAD), windows(value, pool, 0)):
        if best is None:
            best, out = r.copy(), v.copy()
        else:
            better = r > best  # strict: an equal later rank never replaces the first
            best = np.where(better, r, best)
            out = np.where(better, v, out)
    return out


def max_pool(x: np.ndarray, pool: SpikePool) -> np.ndarray:
    """PyTorch's ``max_pool2d`` of an int (C, H, W) array -> (C, H', W') int64."""
    return gated_max(x, x, pool)


SCHEMES: dict[str, Callable[[State, np.ndarray, SpikePool], np.ndarray]] = {}


def scheme(name: str):
    """Register the step rule of a ``qir.SpikePool.scheme``."""
    def register(fn):
        SCHEMES[name] = fn
        return fn
    return register


@scheme("mli")
def mli_step(state: State, msg: np.ndarray, pool: SpikePool) -> np.ndarray:
    """MLIPooling (SpiCalib §3.4) as its integer identity: the cumulative output is the max of
    the window's cumulative inputs, ``cum += msg``, ``total = maxpool(cum)``,
    ``out = total - sent``, ``sent = total``."""
    state["cum"] = state["cum"] + msg
    total = max_pool(state["cum"], pool)
    out = total - state["sent"]
    state["sent"] = total
    return out


@scheme("rate-gate")
def rate_gate_step(state: State, msg: np.ndarray, pool: SpikePool) -> np.ndarray:
    """Gated max-pool (Rueckauer et al. 2016 §3.6): an exponential rate estimate per neuron,
    ``r += (msg << RATE_INPUT_SHIFT) - (r >> RATE_DECAY_SHIFT)`` (decay 1 - 2^-3, arithmetic
    shift), and each window passes the message of its neuron with the largest r."""
    r = state["rate"]
    state["rate"] = r - np.right_shift(r, RATE_DECAY_SHIFT) + np.left_shift(msg, RATE_INPUT_SHIFT)
    return gated_max(state["rate"], msg, pool)


@scheme("spike-max")
def spike_max_step(state: State, msg: np.ndarray, pool: SpikePool) -> np.ndarray:
    """Stateless baseline: ``out = maxpool(msg)`` (on the input block: the ANN max-pool of the
    integer image, exact since rounding is monotone)."""
    return max_pool(msg, pool)


def initial_state(pool: SpikePool, shape_chw: tuple[int, ...]) -> State:
    """The zero state of every Var (PyTorch order): ``cum``/``rate`` source-shaped, ``sent``
    pooled-shaped."""
    src, out = tuple(shape_chw), pool.out_shape(shape_chw)
    return {"cum": np.zeros(src, np.int64), "rate": np.zeros(src, np.int64),
            "sent": np.zeros(out, np.int64)}


def step(pool: SpikePool, state: State, msg_chw: np.ndarray) -> np.ndarray:
    """One step of ``pool.scheme``: updates ``state`` in place and returns the pooled message.
    (C, H, W) ints -> (C, H', W') int64."""
    return SCHEMES[pool.scheme](state, np.asarray(msg_chw, np.int64), pool)


def message_bits(source_bits: int) -> int:
    """``num_message_bits`` of the synapse behind the stage: the source's (module docstring)."""
    return int(source_bits)


# ---- the Lava process ----------------------------------------------------------------------
class SpikePoolProc(AbstractProcess):
    """A spiking max-pool stage on a synapse's input (loihi-conv extension).

    ``shape``: the source's (W, H, C), Lava order; ``s_out`` is the pooled (W', H', C).
    Process parameters: ``scheme`` (``qir.POOL_SCHEMES``), ``kernel``/``stride``/``padding``
    (y, x) and ``ceil_mode``, as ``qir.SpikePool``. Vars (Lava order): ``cum`` and ``sent``
    (mli), ``rate`` (rate-gate); the ones a scheme does not use stay 0.
    """

    def __init__(self, *, shape: tuple[int, int, int], scheme: str, kernel=(2, 2), stride=(2, 2),
                 padding=(0, 0), ceil_mode: bool = False, name: str | None = None) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"SpikePoolProc scheme {scheme!r} is not one of {sorted(SCHEMES)}")
        pair = lambda p: tuple(int(v) for v in p)  # noqa: E731
        geometry = dict(kernel=pair(kernel), stride=pair(stride), padding=pair(padding),
                        ceil_mode=bool(ceil_mode))
        shape = tuple(int(s) for s in shape)
        super().__init__(shape=shape, name=name, scheme=scheme, **geometry)
        pool = SpikePool(scheme, **geometry)
        out = tuple(pool.out_shape(shape[::-1])[::-1])  # (C,H,W) rule, Lava order around it
        self.shape_out = out
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=out)
        self.cum = Var(shape=shape, init=np.zeros(shape, np.int64))
        self.rate = Var(shape=shape, init=np.zeros(shape, np.int64))
        self.sent = Var(shape=out, init=np.zeros(out, np.int64))


def proc_pool(proc_params) -> SpikePool:
    """The ``qir.SpikePool`` a process (or model) was made for."""
    return SpikePool(proc_params["scheme"], proc_params["kernel"], proc_params["stride"],
                     proc_params["padding"], proc_params["ceil_mode"])


@implements(proc=SpikePoolProc, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PySpikePoolModelFixed(PyLoihiProcessModel):
    """Bit-accurate stage: receive, pool (module docstring rules), send, in the same step.
    States are int64: an mli ``cum`` of graded input ints grows like steps x 2^31."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    cum: np.ndarray = LavaPyType(np.ndarray, np.int64)
    rate: np.ndarray = LavaPyType(np.ndarray, np.int64)
    sent: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self) -> None:
        pool = proc_pool(self.proc_params)
        msg = whc_to_chw(self.s_in.recv().astype(np.int64))
        names = STATE_VARS[pool.scheme]
        state = {k: whc_to_chw(getattr(self, k)).astype(np.int64) for k in names}
        out = step(pool, state, msg)
        for k in names:
            getattr(self, k)[:] = chw_to_whc(state[k])
        self.s_out.send(chw_to_whc(out).astype(np.int32))
