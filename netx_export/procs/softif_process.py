"""SoftIF: integrate-and-fire with reset by subtraction and per-channel thresholds, as a Lava
Process with a bit-accurate fixed-point model and a float model (docs/architecture.md).

Fixed point (what the emulator implements bit for bit)::

    a = Σ synapse inputs (int)
    v = clip(v + (a << 6) + (bias << bias_exp), -(2^23-1), 2^23-1)
    q = floor(v / (vth << 6))           # per channel vth
    n = SOFTIF_MODES[mode].lava(q)      # 'if-soft': q >= 1 ('>=' as in the conversion papers)
    v = v - n * (vth << 6)              # reset by subtraction
    initial v = v_init << 6

``mode`` (``qir.SoftIF.mode``) picks the payload n sent on ``s_out``: 'if-soft' binary spikes;
'if-burst' ``clip(q, 0, Γ)``; 'if-multibit' ``A(clip(q, 0, S_max))`` with A(k) the largest power
of two <= k (HPC eq. 15); 'if-buffered' additionally ``- A(clip(min(-q, vb), 0, S_max))``
(negative spikes, HPC eq. 12-14) and ``vb += n``. Graded payloads need ``num_message_bits > 0``
on the receiving Dense/Conv (``netx_export.build`` sets it), which then compute ``W · n``.

Step-counted extras (process parameters ``clamp_steps`` and ``spicalib_beta``; both off by
default, then ``t`` and the SpiCalib Vars stay 0 and cost nothing). ``t`` counts the steps of the
sample (reset to 0 between samples by the runner; one per neuron here, as a microcode neuron
keeps it in its own register, all equal)::

    t = t + 1
    if t <= clamp_steps: send 0 (v untouched: no input, no bias)      # voltage clamping
    else: n = the payload above; with SpiCalib (beta not None), t' = t - clamp_steps:
        N = N + (n > 0);  t_last = t' where n > 0                     # eq. 10, phi = t_last / N
        corr = N (t' - t_last) > t_last + N beta  and  net >= 1       # SIN overdue, eq. 11
        n = n - corr;  net = net + n

(SpiCalib, Li et al. 2022 §3.3; the exact integer form and its proof are in
loihi_conv/snn/neurons/spicalib.py.) SpiCalib payloads are signed, so they travel as graded messages.

Spike on V >= threshold and reset by subtraction are Rueckauer et al. 2016 ("Theory and tools
for the conversion...", /work/shared/papers), eq. (3) and (4b): keeping the residual charge
makes the firing rate track the ReLU activation up to one spike.

Layouts: ``shape`` is Lava order (W,H,C) or (N,); ``vth``/``v_init`` are per channel (C,) and
broadcast along the last axis; ``bias`` is per neuron in Lava order or per channel (C,).
No torch inside the models (torch hangs inside Lava processes, lava/proc/conv/utils.py:10-18).
"""
from __future__ import annotations

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

from loihi_conv.base.limits import ACT_SHIFT, STATE_MAX
from loihi_conv.fixed.softif_modes import DEFAULT_MODE, SOFTIF_MODES  # numpy rules: no torch here

SPICALIB_VARS = ("n_spikes", "t_last", "net")  # SpiCalib's monitor state per neuron
COUNTERS = ("t",) + SPICALIB_VARS  # step-counted Vars; all restart at 0 every sample


def counted(proc) -> bool:
    """Whether the process runs the step counter (clamping or SpiCalib)."""
    return proc.proc_params["clamp_steps"] > 0 or proc.proc_params["spicalib_beta"] is not None


def counted_step(proc, integrate, dtype):
    """Clamping and SpiCalib around the payload rule (module docstring), shared by the fixed-
    and floating-point models. ``integrate()`` updates v and returns the payload (called only
    when unclamped); arithmetic in ``dtype`` (int64: N (t' - t_last) grows like steps^2).
    Returns the payload to send."""
    clamp, beta = proc.proc_params["clamp_steps"], proc.proc_params["spicalib_beta"]
    proc.t[:] = proc.t + 1
    t = dtype(proc.t.reshape(-1)[0])  # every neuron holds the same count
    if t <= clamp:
        return np.zeros(proc.v.shape, dtype)  # held: v untouched, nothing sent
    payload = integrate()
    if beta is None:
        return payload
    tp = t - clamp  # unclamped steps, from 1
    fired = payload > 0
    count = proc.n_spikes.astype(dtype) + fired
    last = np.where(fired, tp, proc.t_last.astype(dtype))
    net = proc.net.astype(dtype)
    flagged = count * (tp - last) > last + count * beta
    payload = payload - (flagged & (net >= 1))
    proc.n_spikes[:], proc.t_last[:], proc.net[:] = count, last, net + payload
    return payload


def message_bits(mode: str, max_units: int, spicalib: bool = False) -> int:
    """Payload width on ``s_out``: 0 (binary spikes) for 'if-soft', else the bits of
    ``max_units`` plus a sign bit for 'if-buffered' or SpiCalib (what the receiving synapse's
    ``num_message_bits`` must be; the CPU simulator only distinguishes 0 from > 0). A buffered
    SpiCalib payload reaches -(max_units + 1), which the sign bit still holds."""
    if mode == DEFAULT_MODE and not spicalib:
        return 0
    return int(max_units).bit_length() + (1 if SOFTIF_MODES[mode].buffered or spicalib else 0)


class SoftIF(AbstractProcess):
    """Integrate-and-fire neurons with reset by subtraction (loihi-conv extension).

    Vars: ``v`` (state), ``vb`` (buffer: net payload sent, used by 'if-buffered', else 0),
    ``t`` (steps of the sample; used with clamping or SpiCalib), SpiCalib's ``n_spikes``,
    ``t_last``, ``net`` (per neuron, else 0), ``vth`` and ``v_init`` (per channel),
    ``bias_mant`` (per neuron), ``bias_exp`` (scalar).
    Ports: ``a_in`` (summed synaptic input), ``s_out`` (binary spikes, or the graded payload n
    for the graded modes and SpiCalib). ``mode``/``max_units``/``clamp_steps``/``spicalib_beta``
    are process parameters (module docstring).
    """

    def __init__(self, *, shape: tuple[int, ...], vth, v_init=0, bias=0, bias_exp: int = 6,
                 mode: str = DEFAULT_MODE, max_units: int = 1, clamp_steps: int = 0,
                 spicalib_beta: int | None = None, name: str | None = None) -> None:
        if mode not in SOFTIF_MODES:
            raise ValueError(f"SoftIF mode {mode!r} is not one of {sorted(SOFTIF_MODES)}")
        if int(clamp_steps) < 0 or (spicalib_beta is not None and int(spicalib_beta) < 0):
            raise ValueError(f"SoftIF clamp_steps={clamp_steps}, spicalib_beta={spicalib_beta} "
                             "must be >= 0")
        super().__init__(shape=shape, name=name, mode=mode, max_units=int(max_units),
                         clamp_steps=int(clamp_steps),
                         spicalib_beta=None if spicalib_beta is None else int(spicalib_beta))
        shape = tuple(int(s) for s in shape)
        c = shape[-1]
        vth = np.broadcast_to(np.asarray(vth, dtype=np.int64), (c,)).copy()
        v_init = np.broadcast_to(np.asarray(v_init, dtype=np.int64), (c,)).copy()
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.vth = Var(shape=(c,), init=vth)
        self.v_init = Var(shape=(c,), init=v_init)
        self.v = Var(shape=shape, init=initial_v(v_init, shape))
        self.vb = Var(shape=shape, init=np.zeros(shape, np.int64))
        for counter in COUNTERS:
            setattr(self, counter, Var(shape=shape, init=np.zeros(shape, np.int64)))
        self.bias_mant = Var(shape=shape, init=np.broadcast_to(np.asarray(bias, np.int64),
                                                               shape).copy())
        self.bias_exp = Var(shape=(1,), init=int(bias_exp))


def initial_v(v_init: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The state a sample starts from: v_init << 6, broadcast along the channel (last) axis."""
    return np.broadcast_to(np.left_shift(np.asarray(v_init, np.int64), ACT_SHIFT), shape).copy()


@implements(proc=SoftIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PySoftIFModelFixed(PyLoihiProcessModel):
    """Bit-accurate SoftIF: integer arithmetic exactly as in the module docstring."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    vb: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    t: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    n_spikes: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    t_last: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    net: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=5)

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(np.int64)  # read every step, clamped or not
        integrate = lambda: self._integrate(a)  # noqa: E731
        self.s_out.send(counted_step(self, integrate, np.int64) if counted(self) else integrate())

    def _integrate(self, a: np.ndarray) -> np.ndarray:
        e = int(np.asarray(self.bias_exp).reshape(-1)[0])
        b = self.bias_mant.astype(np.int64)
        bias = np.left_shift(b, e) if e >= 0 else np.right_shift(b, -e)
        v = np.clip(self.v.astype(np.int64) + np.left_shift(a, ACT_SHIFT) + bias,
                    -STATE_MAX, STATE_MAX)
        th = np.left_shift(self.vth.astype(np.int64), ACT_SHIFT)
        rule = SOFTIF_MODES[self.proc_params["mode"]]
        n = rule.lava(np.floor_divide(v, th), self.vb.astype(np.int64), self.proc_params["max_units"])
        self.v[:] = v - n * th
        if rule.buffered:
            self.vb[:] = self.vb + n
        return n


@implements(proc=SoftIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySoftIFModelFloat(PyLoihiProcessModel):
    """Float SoftIF: the same equations in float64, without the 24-bit saturation
    (``q = floor(v / th)`` on floats; payloads are integer-valued floats)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    vb: np.ndarray = LavaPyType(np.ndarray, float)
    t: np.ndarray = LavaPyType(np.ndarray, float)
    n_spikes: np.ndarray = LavaPyType(np.ndarray, float)
    t_last: np.ndarray = LavaPyType(np.ndarray, float)
    net: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    v_init: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        a = self.a_in.recv()
        integrate = lambda: self._integrate(a)  # noqa: E731
        n = counted_step(self, integrate, np.float64) if counted(self) else integrate()
        self.s_out.send(n.astype(float))

    def _integrate(self, a: np.ndarray) -> np.ndarray:
        scale = 2.0 ** np.asarray(self.bias_exp).reshape(-1)[0]
        v = self.v + a * 2.0**ACT_SHIFT + self.bias_mant * scale
        th = self.vth * 2.0**ACT_SHIFT
        rule = SOFTIF_MODES[self.proc_params["mode"]]
        n = rule.lava(np.floor(v / th), self.vb, self.proc_params["max_units"])
        self.v[:] = v - n * th
        if rule.buffered:
            self.vb[:] = self.vb + n
        return n
