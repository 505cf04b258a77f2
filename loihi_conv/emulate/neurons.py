"""Neuron runners: lava-nc 0.10.0 fixed-point neuron models (and SoftIF) on batched torch tensors.

Layouts: input ``a`` is an int32 tensor (B, *block.shape) holding exactly what Lava's
``a_in.recv()`` returns; states are (B, *block.shape); per-channel parameters broadcast along
axis 1 (C).

Each runner picks its state dtype at ``reset`` from static bounds: int32 when it is proven that no
intermediate overflows (then every Lava wrap is provably a no-op), otherwise int64 with the
explicit int32 wraps Lava's numpy code performs.
"""
from __future__ import annotations

from functools import singledispatch

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.limits import DECAY_ONE, STATE_MAX
from loihi_conv.fixed.qir import Block, Cuba, Delta, Readout, Sigma, SigmaDelta, SoftIF
from loihi_conv.fixed.softif_modes import DEFAULT_MODE, SOFTIF_MODES

from .arith import abs_bound, wrap, wrap32, zeros

UV = STATE_MAX + 1  # Loihi u, v are 24-bit: |v| <= 2^23 - 1


def per_channel(value, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """A scalar, (C,) or full-shape int array -> int64 tensor broadcastable to (B, *shape)."""
    v = torch.as_tensor(np.asarray(value, dtype=np.int64) if not torch.is_tensor(value) else value,
                        dtype=torch.int64)
    if v.ndim == 0:
        return v.reshape((1,) * (len(shape) + 1))
    if tuple(v.shape) == tuple(shape):
        return v.unsqueeze(0)
    if v.ndim == 1 and v.shape[0] == shape[0]:
        return v.reshape((1, shape[0]) + (1,) * (len(shape) - 1))
    if v.ndim == len(shape) + 1 and tuple(v.shape[1:]) == tuple(shape):
        return v  # per-sample (B, *shape), e.g. an image injected as bias
    raise LoihiConvError(f"{what} has shape {tuple(v.shape)}, which does not fit a block of "
                         f"shape {tuple(shape)}", "give a scalar, one value per channel (C,) "
                         "or one per neuron")


def dense_param(p: torch.Tensor, shape: tuple[int, ...]):
    """A per-neuron-broadcastable parameter in the fastest form for elementwise ops: a Python
    int when uniform, else materialized to (1, *shape) (channels-last for (C, H, W)): torch's
    CPU kernels vectorize poorly when broadcasting a (1, C, 1, 1) tensor."""
    if p.numel() == 1 or bool(torch.all(p == p.reshape(-1)[0])):
        return int(p.reshape(-1)[0])
    return zeros(1, shape, p.dtype).add_(p)


def shift(x: torch.Tensor, e: int) -> torch.Tensor:
    """Lava ``scale_bias``: x << e for e >= 0, arithmetic (floor) x >> -e otherwise."""
    return x << e if e >= 0 else x >> -e


def decay(x: torch.Tensor, d: int) -> torch.Tensor:
    """Lava LIF decay (lif/models.py:162-166): ``sign(p) * (|p| >> 12)`` with ``p = x*(4096-d)``,
    i.e. x*(4096-d)/4096 rounded toward zero, computed in int64 like Lava."""
    if d == 0:
        return x
    if d == DECAY_ONE:
        return torch.zeros_like(x)
    p = x.to(torch.int64) * (DECAY_ONE - d)
    return torch.div(p, DECAY_ONE, rounding_mode="trunc").to(x.dtype)


class Lif:
    """Lava LIF, bit-accurate (PyLifModelBitAcc, lif/models.py:72-278), used for Cuba and Readout.

    Reference doc §3.4::

        u = wrap32(trunc(u*(4096-iDecay)/4096) + wrap32(a << 6))
        u -= 2^24 if u > 2^23;  u += 2^24 if u <= -2^23     (once: u can leave 24 bits)
        v = clip(wrap32(trunc(v*(4096-vDecay)/4096) + u + (int16(bias) << bias_exp)), +-(2^23-1))
        s = v > vth << 6;  v[s] = 0
    """

    binary = True
    msg_bound = 1
    state_names = ("u", "v")

    def __init__(self, neuron: Cuba | Readout, block: Block):
        for name in ("i_decay", "v_decay"):
            d = int(getattr(neuron, name))
            if not 0 <= d <= DECAY_ONE:
                raise LoihiConvError(f"block '{block.name}': {name}={d} is outside [0, 4096]",
                                     "use 12-bit decays: 4096 = full decay, 0 = no decay")
        self.shape = tuple(block.shape)
        self.i_decay, self.v_decay = int(neuron.i_decay), int(neuron.v_decay)
        self.bias_exp = int(neuron.bias_exp)
        self.vth6 = per_channel(neuron.vth, self.shape, f"block '{block.name}' vth") << 6
        self.bias = block.bias
        self.name = block.name

    def reset(self, batch: int, a_bound: int, bias=None) -> None:
        """Zero u, v. ``bias`` (B, *shape) replaces the block bias (the ``inject='bias'`` input)."""
        mant = bias if bias is not None else (self.bias if self.bias is not None else 0)
        mant = per_channel(mant, self.shape, f"block '{self.name}' bias")
        # bias_mant is an int16 Var in Lava (wraps), promoted to int32 before the shift.
        bias_eff = wrap32(shift(wrap(mant, 16), self.bias_exp))
        # Proof of int32 safety: |a<<6| < 2^24 keeps u in (-2^23, 2^23] after one 24-bit wrap,
        # then |vdecayed + u + bias| < 2^24 + 2^30 < 2^31: none of Lava's int32 wraps can occur.
        self.safe = a_bound < 2 ** 18 and abs_bound(bias_eff) < 2 ** 30
        self.dtype = torch.int32 if self.safe else torch.int64
        u_bound = (0 if self.i_decay == DECAY_ONE else UV) + 64 * a_bound
        self.wrap_u = not (self.safe and u_bound < UV)  # else the 24-bit u wrap never triggers
        self.has_bias = bool(torch.any(bias_eff != 0))
        self.bias_eff = bias_eff.to(self.dtype)
        # |v| < 2^23, so clamping vth<<6 to +-2^24 keeps every comparison and fits int32.
        self.vth = dense_param(self.vth6.clamp(-2 ** 24, 2 ** 24).to(self.dtype), self.shape)
        self.u = zeros(batch, self.shape, self.dtype)
        self.v = zeros(batch, self.shape, self.dtype)
        self._d = torch.empty_like(self.v)

    def step(self, a: torch.Tensor) -> torch.Tensor:
        """One Lava LIF step on input ``a`` (int32); returns the spikes (uint8 0/1)."""
        return self._step_int32(a) if self.safe else self._step_exact(a)

    @staticmethod
    def _wrap_u(u: torch.Tensor) -> torch.Tensor:
        """Lava's asymmetric 24-bit u wrap: -2^24 if u > 2^23, +2^24 if u <= -2^23."""
        u = torch.where(u > UV, u - 2 * UV, u)
        return torch.where(u <= -UV, u + 2 * UV, u)

    def _step_exact(self, a: torch.Tensor) -> torch.Tensor:
        """General path: int64 holding int32 values, with each int32 wrap Lava's numpy makes."""
        u = wrap32(decay(self.u, self.i_decay) + wrap32(a.to(torch.int64) * 64))
        self.u = u = self._wrap_u(u)
        v = wrap32(decay(self.v, self.v_decay) + u + self.bias_eff).clamp_(-(UV - 1), UV - 1)
        s = v > self.vth
        self.v = v.mul_(s.logical_not())
        return s.view(torch.uint8)

    def _step_int32(self, a: torch.Tensor) -> torch.Tensor:
        """Proven-overflow-free path (see ``reset``): int32, in place (same values as exact)."""
        u, v = self.u, self.v
        if self.i_decay == DECAY_ONE:
            torch.mul(a, 64, out=u)
        else:
            if self.i_decay:
                u.copy_(decay(u, self.i_decay))
            u.add_(a, alpha=64)
        if self.wrap_u:
            u.copy_(self._wrap_u(u))
        if self.v_decay == DECAY_ONE:
            v.copy_(u)
        else:
            if self.v_decay:
                v.copy_(decay(v, self.v_decay))
            v.add_(u)
        if self.has_bias:
            v.add_(self.bias_eff)
        v.clamp_(-(UV - 1), UV - 1)
        # s = (v > vth) as 0/1 ints: clamp(v - vth, 0, 1); exact since |v - vth| < 2^25. Torch's
        # CPU comparisons and bool<->int casts are ~10x slower than int32 arithmetic.
        d = self._d
        torch.sub(v, self.vth, out=d).clamp_(0, 1)
        v.addcmul_(v, d, value=-1)  # reset to zero where s
        return d.to(torch.uint8)

    def states(self) -> dict[str, torch.Tensor]:
        """Live state tensors (mutated in place by the next step: copy to keep)."""
        return {"u": self.u, "v": self.v}


def largest_power_of_two(max_units: int) -> torch.Tensor:
    """Lookup table ``A[k]`` for k = 0..max_units: the largest power of two <= k, A[0] = 0
    (HPC eq. 15 on integers; exact, unlike a float log2)."""
    k = torch.arange(max_units + 1, dtype=torch.int64)
    a = torch.zeros_like(k)
    for j in range(max_units.bit_length()):
        a = torch.where(k >= (1 << j), torch.full_like(k, 1 << j), a)
    return a


class SoftIFRunner:
    """loihi-conv SoftIF (docs/architecture.md "Fixed-point semantics"): reset by subtraction.

    ``v = clip(v + (a << 6) + (bias << bias_exp), +-(2^23-1))``; the payload n is
    ``v >= vth << 6`` (mode 'if-soft', 0/1) or a graded rule of ``q = floor(v / (vth << 6))``
    (``fixed.softif_modes``: burst, multi-bit, buffered with negative spikes); ``v -= n * (vth << 6)``,
    ``v(0) = v_init << 6``; exact integer arithmetic (no int16/int32 wraps inside the neuron;
    ``a`` is the int32 InPort sum like for every Lava neuron). Messages: uint8 0/1 for 'if-soft'
    (``binary``), else the int32 payload n in [-max_units, max_units] (graded spikes).

    Step-counted extras (``SoftIF.clamp_steps``, ``SoftIF.spicalib_beta``; off: the plain paths
    above, no counter): a counter ``t`` (steps of this sample, 1 at the first step); on steps
    t <= clamp_steps nothing is integrated and the payload is 0 (voltage clamping); afterwards
    SpiCalib (loihi_conv/snn/neurons/spicalib.py, exact integer form of eq. 10-11) turns the payload n into
    ``n - corr`` with t' = t - clamp_steps: ``N += n > 0``, ``t_last = t'`` where n > 0,
    ``corr = N (t' - t_last) > t_last + N beta  and  net >= 1``, ``net += n - corr``.
    SpiCalib messages are signed: graded int32, |message| <= max_units (+1 for 'if-buffered').
    """

    def __init__(self, neuron: SoftIF, block: Block):
        self.shape = tuple(block.shape)
        self.name = block.name
        self.bias_exp = int(neuron.bias_exp)
        self.vth6 = per_channel(neuron.vth, self.shape, f"block '{block.name}' vth") << 6
        v_init = neuron.v_init if neuron.v_init is not None else 0
        self.v0 = per_channel(v_init, self.shape, f"block '{block.name}' v_init") << 6
        self.bias = block.bias
        self.mode, self.max_units = str(neuron.mode), int(neuron.max_units)
        graded = sorted(m for m, rule in SOFTIF_MODES.items() if rule.emulate is not None)
        known = self.mode == DEFAULT_MODE or self.mode in graded
        units_ok = self.max_units == 1 if self.mode == DEFAULT_MODE else self.max_units >= 1
        if not known or not units_ok:
            raise LoihiConvError(f"block '{block.name}': SoftIF mode={self.mode!r} with "
                                 f"max_units={self.max_units} is not supported",
                                 f"use mode {DEFAULT_MODE!r} (max_units 1) or one of "
                                 f"{graded} with max_units >= 1")
        self.rule = SOFTIF_MODES[self.mode]
        if self.mode != DEFAULT_MODE and bool(torch.any(self.vth6 <= 0)):
            raise LoihiConvError(f"block '{block.name}': graded SoftIF needs vth >= 1",
                                 "requantize the block (thresholds are at least 1)")
        self.clamp_steps = int(neuron.clamp_steps)
        beta = neuron.spicalib_beta
        if self.clamp_steps < 0 or (beta is not None and int(beta) < 0):
            raise LoihiConvError(f"block '{block.name}': SoftIF clamp_steps={self.clamp_steps}, "
                                 f"spicalib_beta={beta} must be >= 0",
                                 "use clamp_steps >= 0 and an integer beta >= 0 (or None)")
        self.beta = None if beta is None else int(beta)
        self.counted = self.clamp_steps > 0 or self.beta is not None  # else no counter at all
        self.binary = self.mode == DEFAULT_MODE and self.beta is None
        # A correction takes one unit off the payload: -1 for unsigned modes, -(U+1) buffered.
        self.msg_bound = self.max_units + int(self.beta is not None and self.rule.buffered)
        self.state_names = neuron.state_names

    def reset(self, batch: int, a_bound: int, bias=None) -> None:
        mant = bias if bias is not None else (self.bias if self.bias is not None else 0)
        bias_eff = shift(per_channel(mant, self.shape, f"block '{self.name}' bias"), self.bias_exp)
        # |v| <= max(2^23, |v0|) + max vth6 after a reset; every sum stays < 2^31 in int32 when
        # the bound holds (a graded reset subtracts n*vth6 <= v, moving v toward [0, vth6)):
        bound = max(UV, abs_bound(self.v0)) + abs_bound(self.vth6) + 64 * a_bound \
            + abs_bound(bias_eff)
        self.dtype = torch.int32 if bound < 2 ** 31 else torch.int64
        self.has_bias = bool(torch.any(bias_eff != 0))
        self.bias_eff = bias_eff.to(self.dtype)
        self.vth = dense_param(self.vth6.to(self.dtype), self.shape)
        self.vth_m1 = dense_param(self.vth6.to(self.dtype) - 1, self.shape)
        self.v = zeros(batch, self.shape, self.dtype).add_(self.v0)
        self._d = torch.empty_like(self.v)
        self.table = largest_power_of_two(self.max_units).to(self.dtype)
        self.vb = torch.zeros_like(self.v)  # buffer V^b / theta (if-buffered; else stays 0)
        self.t = 0
        if self.beta is not None:  # int64: N (t' - t_last) grows like steps^2
            self.n_spikes = zeros(batch, self.shape, torch.int64)
            self.t_last = torch.zeros_like(self.n_spikes)
            self.net = torch.zeros_like(self.n_spikes)

    def step(self, a: torch.Tensor) -> torch.Tensor:
        """One step; the payload (uint8 0/1 if ``binary``, else int32)."""
        return self._counted(a) if self.counted else self._integrate(a)

    def _counted(self, a: torch.Tensor) -> torch.Tensor:
        """Clamping, then SpiCalib on the plain payload (class docstring)."""
        self.t += 1
        if self.t <= self.clamp_steps:  # held: v stays v_init << 6, nothing sent
            return torch.zeros(self.v.shape, dtype=torch.uint8 if self.binary else torch.int32)
        n = self._integrate(a)
        return n if self.beta is None else self._spicalib(n)

    def _spicalib(self, n: torch.Tensor) -> torch.Tensor:
        """SpiCalib eq. 10-11 in integers: phi = t_last / N exactly (loihi_conv/snn/neurons/spicalib.py), so
        ``t' - t_last > phi + beta`` is ``N (t' - t_last) > t_last + N beta`` for N >= 1, and
        N = 0 (t_last = 0) is never flagged."""
        tp = self.t - self.clamp_steps  # unclamped steps, from 1
        n = n.to(torch.int64)
        fired = n > 0
        self.n_spikes.add_(fired)
        self.t_last.masked_fill_(fired, tp)
        flagged = self.n_spikes * (tp - self.t_last) > self.t_last + self.n_spikes * self.beta
        out = n.sub_((flagged & (self.net >= 1)).to(torch.int64))
        self.net.add_(out)
        return out.to(torch.int32)

    def _integrate(self, a: torch.Tensor) -> torch.Tensor:
        """The plain SoftIF step, in place; exact because ``reset`` chose a dtype in which no
        sum can overflow."""
        v = self.v
        v.add_(a.to(self.dtype), alpha=64)
        if self.has_bias:
            v.add_(self.bias_eff)
        v.clamp_(-(UV - 1), UV - 1)
        if self.mode != DEFAULT_MODE:
            return self._graded()
        # s = (v >= vth) as 0/1 ints (see Lif): clamp(v - (vth - 1), 0, 1); no overflow by the
        # dtype bound of ``reset`` (|v| + |vth| + 1 <= 2^23 + |vth| < 2^31).
        d = self._d
        torch.sub(v, self.vth_m1, out=d).clamp_(0, 1)
        if isinstance(self.vth, int):  # uniform threshold (see dense_param)
            v.add_(d, alpha=-self.vth)  # reset by subtraction
        else:
            v.addcmul_(d, self.vth, value=-1)
        return d.to(torch.uint8)

    def _graded(self) -> torch.Tensor:
        """Payload n of the mode's rule, then ``v -= n * vth6``; |n * vth6| <= |v| < 2^23."""
        v = self.v
        n = self.rule.emulate(torch.div(v, self.vth, rounding_mode="floor"), self.vb, self.max_units, self.table)
        if self.rule.buffered:
            self.vb.add_(n)
        if isinstance(self.vth, int):
            v.add_(n, alpha=-self.vth)
        else:
            v.addcmul_(n, self.vth, value=-1)
        return n.to(torch.int32)

    def states(self) -> dict[str, torch.Tensor]:
        """Live state tensors (mutated in place by the next step: copy to keep); names as the
        Lava process's Vars. ``t`` (one counter for the population) is broadcast to (B, *shape)
        like Lava's per-neuron Var."""
        out = {"v": self.v, "vb": self.vb}
        if self.counted:
            out["t"] = torch.full((), self.t, dtype=torch.int64).expand(self.v.shape)
        if self.beta is not None:
            out.update(n_spikes=self.n_spikes, t_last=self.t_last, net=self.net)
        return {k: out[k] for k in self.state_names}


def _sdn_scale(vth: int, spike_exp: int, state_exp: int, name: str) -> tuple[int, int]:
    """(E+S, vth << (E+S) as Lava's int32 Var holds it, i.e. wrapped)."""
    if not (0 <= spike_exp <= 16 and 0 <= state_exp <= 16):
        raise LoihiConvError(f"block '{name}': spike_exp={spike_exp}, state_exp={state_exp} "
                             "outside [0, 16]", "use NetX's defaults spike_exp=6, state_exp=6")
    e = spike_exp + state_exp
    return e, int(wrap32(torch.tensor(int(vth) << e)))


class DeltaEncoder:
    """Shared delta encoding of Delta and SigmaDelta (states ``act``, ``residue``; ``vth``,
    ``state_exp`` set by the subclass).

    Two exact paths. While static bounds prove that none of Lava's int32 wraps can occur
    (``_fits``: the running bound on |act| plus the threshold stays below 2^31), the states
    are int32 and updated in place (~4x fewer bytes than int64 + explicit wraps); once they
    cannot (long runs accumulate sigma), the states widen to int64 and every wrap is explicit.
    Both give the same values: without an overflow a wrap is the identity.
    """

    binary = False

    @property
    def msg_bound(self) -> int:
        """|message| <= 2^(31 - state_exp): an int32 delta shifted right by state_exp."""
        return 2 ** (31 - self.state_exp)

    def _fits(self, act_range: int) -> bool:
        """Whether |d| + |vth| + 1 < 2^31 when act_new - act spans at most ``act_range``:
        |residue| < |vth|, so |d| <= act_range + |vth| and no int32 op below overflows."""
        return act_range + 2 * abs(self.vth) + 1 < 2 ** 31

    def _start(self, shape_like: torch.Tensor, names: tuple[str, ...], dtype: torch.dtype) -> None:
        for name in names:
            setattr(self, name, torch.zeros_like(shape_like, dtype=dtype))
        self.fast = dtype == torch.int32
        if self.fast:
            self._d = torch.zeros_like(shape_like, dtype=dtype)
            self._f = torch.zeros_like(self._d)
            self._new = torch.zeros_like(self._d)

    def _widen(self, names: tuple[str, ...]) -> None:
        """Leave the int32 path for good: the states become int64 (same values)."""
        for name in names:
            setattr(self, name, getattr(self, name).to(torch.int64))
        self.fast = False

    def encode(self, new_act: torch.Tensor) -> torch.Tensor:
        """Lava AbstractDeltaModel.delta_dynamics (sdn/models.py:77-101) in int32 arithmetic:
        ``d = act_new - act + residue; s = d if |d| >= vth else 0; residue = d - s;
        act = act_new``; message ``s >> state_exp`` (floor; the dropped low bits are lost:
        the lava-nc 0.10.0 drift, lava PR #875)."""
        d = wrap32(new_act - self.act + self.residue)
        fire = wrap32(d.abs()) >= self.vth  # np.abs(int32 min) stays negative
        self.residue = torch.where(fire, 0, d)
        self.act = new_act
        return (torch.where(fire, d, 0) >> self.state_exp).to(torch.int32)

    def encode32(self, new_act: torch.Tensor) -> torch.Tensor:
        """``encode`` on int32 states, in place, when ``_fits`` holds (no wrap can occur).
        fire = clamp(|d| - (vth - 1), 0, 1) as an int (torch's CPU comparisons and bool
        casts are ~10x slower than int32 arithmetic); s = d * fire; residue = d - s."""
        d, f = self._d, self._f
        torch.sub(new_act, self.act, out=d).add_(self.residue)
        torch.abs(d, out=f).sub_(self.vth - 1).clamp_(0, 1)
        f.mul_(d)  # s
        torch.sub(d, f, out=self.residue)
        self._new, self.act = self.act, new_act  # act = act_new (buffers swap, no copy)
        return torch.bitwise_right_shift(f, self.state_exp)  # a new tensor: callers keep it


class DeltaRunner(DeltaEncoder):
    """Lava Delta, fixed point (PyDeltaModelFixed, sdn/models.py:205-231), reference doc §3.5:
    ``x = a << (E+S)`` (int32), then delta encoding of x."""

    state_names = ("act", "residue")

    def __init__(self, neuron: Delta, block: Block):
        self.shape = tuple(block.shape)
        self.state_exp = int(neuron.state_exp)
        self.exp, self.vth = _sdn_scale(neuron.vth, int(neuron.spike_exp), self.state_exp,
                                        block.name)
        if block.bias is not None and np.any(np.asarray(block.bias) != 0):
            raise LoihiConvError(f"block '{block.name}' is a Delta neuron with a bias",
                                 "Lava's Delta takes no bias: remove it")

    def reset(self, batch: int, a_bound: int, bias=None) -> None:
        if bias is not None:
            raise LoihiConvError("inject='bias' needs an input neuron with a bias; Delta has none",
                                 "use inject='a_in' for an SDNN (Delta) input layer")
        x_bound = a_bound << self.exp  # |a << (E+S)|; act_new - act spans twice that
        fast = x_bound < 2 ** 31 and self._fits(2 * x_bound)
        self._start(zeros(batch, self.shape, torch.int32), ("act", "residue"),
                    torch.int32 if fast else torch.int64)

    def step(self, a: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return self.encode32(torch.bitwise_left_shift(a.to(torch.int32), self.exp,
                                                          out=self._new))
        return self.encode(wrap32(a.to(torch.int64) << self.exp))

    def states(self) -> dict[str, torch.Tensor]:
        return {"act": self.act, "residue": self.residue}


class SigmaDeltaRunner(DeltaEncoder):
    """Lava SigmaDelta, fixed point, ReLU (PySigmaDeltaModelFixed, sdn/models.py:260-284),
    reference doc §3.5: ``sigma += a; act_new = relu(sigma + bias << (E+S))``, delta encoding.

    The int32 path (DeltaEncoder) keeps a running bound |sigma| <= sum of the per-step input
    bounds: with |bias| it bounds act in [0, A], so act_new - act spans at most A."""

    state_names = ("sigma", "act", "residue")

    def __init__(self, neuron: SigmaDelta, block: Block):
        self.shape = tuple(block.shape)
        self.name = block.name
        self.state_exp = int(neuron.state_exp)
        self.exp, self.vth = _sdn_scale(neuron.vth, int(neuron.spike_exp), self.state_exp,
                                        block.name)
        self.bias = block.bias

    def reset(self, batch: int, a_bound: int, bias=None) -> None:
        mant = bias if bias is not None else (self.bias if self.bias is not None else 0)
        # Lava: bias * 2^(E+S) stored in an int32 Var (wraps).
        self.bias_var = wrap32(per_channel(mant, self.shape, f"block '{self.name}' bias")
                               << self.exp)
        self.a_bound, self.sigma_bound = int(a_bound), 0
        self.has_bias = bool(torch.any(self.bias_var != 0))
        self.bias32 = dense_param(self.bias_var.to(torch.int32), self.shape)
        self._start(zeros(batch, self.shape, torch.int32), self.state_names,
                    torch.int32 if self._safe(self.a_bound) else torch.int64)

    def _safe(self, sigma_bound: int) -> bool:
        """Whether the int32 path is exact while |sigma| <= ``sigma_bound``."""
        top = sigma_bound + abs_bound(self.bias_var)  # |sigma + bias| and the range of act
        return top < 2 ** 31 and self._fits(top)

    def step(self, a: torch.Tensor) -> torch.Tensor:
        self.sigma_bound += self.a_bound
        if self.fast and not self._safe(self.sigma_bound):
            self._widen(self.state_names)
        if not self.fast:
            self.sigma = wrap32(self.sigma + a)
            return self.encode(wrap32(self.sigma + self.bias_var).clamp_(min=0))
        self.sigma.add_(a)
        new = self._new
        if self.has_bias:
            torch.add(self.sigma, self.bias32, out=new).clamp_(min=0)
        else:
            torch.clamp(self.sigma, min=0, out=new)
        return self.encode32(new)

    def states(self) -> dict[str, torch.Tensor]:
        return {"sigma": self.sigma, "act": self.act, "residue": self.residue}


class SigmaRunner:
    """Lava Sigma, fixed point (PySigmaModelFixed, sdn/models.py:169-176): ``sigma += a``
    (int32), sends sigma."""

    binary = False
    msg_bound = 2 ** 31
    state_names = ("sigma",)

    def __init__(self, neuron: Sigma, block: Block):
        self.shape = tuple(block.shape)
        if block.bias is not None and np.any(np.asarray(block.bias) != 0):
            raise LoihiConvError(f"block '{block.name}' is a Sigma neuron with a bias",
                                 "Lava's Sigma takes no bias: remove it")

    def reset(self, batch: int, a_bound: int, bias=None) -> None:
        if bias is not None:
            raise LoihiConvError("inject='bias' needs an input neuron with a bias; Sigma has none",
                                 "use inject='a_in'")
        self.sigma = zeros(batch, self.shape, torch.int64)

    def step(self, a: torch.Tensor) -> torch.Tensor:
        self.sigma = wrap32(self.sigma + a)
        return self.sigma.to(torch.int32)

    def states(self) -> dict[str, torch.Tensor]:
        return {"sigma": self.sigma}


@singledispatch
def make_neuron(neuron, block: Block):
    """Build the runner for one qir neuron (registered per neuron type)."""
    raise LoihiConvError(f"block '{block.name}': the emulator has no model for neuron type "
                         f"{type(neuron).__name__}", "use one of qir.NEURONS")


make_neuron.register(Cuba, Lif)
make_neuron.register(Readout, Lif)
make_neuron.register(SoftIF, SoftIFRunner)
make_neuron.register(Delta, DeltaRunner)
make_neuron.register(SigmaDelta, SigmaDeltaRunner)
make_neuron.register(Sigma, SigmaRunner)
