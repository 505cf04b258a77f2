"""What Lava does to an integer dense weight matrix, in plain numpy (no Lava import).

Two paths put a (Nout, Nin) int matrix W into a bit-accurate Lava ``Dense``:

* netx (``netx.utils.optimize_weight_bits``, netx/utils.py:80-158) rescales W and picks
  ``num_weight_bits``/``weight_exp``; Lava then re-derives the sign mode and clips/truncates
  (``lava.utils.weightutils``). ``netx_effective_dense`` replays both steps and returns the
  weights the simulator really uses, so the writer can refuse matrices netx would mangle
  (reference doc section 1.7: zeroed weights, OverflowError, wrong sign mode, 255 -> 254).
* our extension builder, which passes ``sign_mode`` explicitly and chooses the mantissa and
  exponent itself (``lava_dense_encoding``), exact whenever W = M * 2^k with M an 8-bit
  mantissa of its sign mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loihi_conv.base.limits import DENSE_MIXED_RANGE, LAVA_CONV_GROUPS_MAX

EXCITATORY, INHIBITORY, MIXED = "EXCITATORY", "INHIBITORY", "MIXED"


def _lava_sign_mode(w: np.ndarray) -> str:
    """``lava.utils.weightutils.determine_sign_mode``."""
    if w.min() >= 0:
        return EXCITATORY
    return INHIBITORY if w.max() <= 0 else MIXED


def _lava_clip_truncate(w: np.ndarray, sign: str, num_weight_bits: int) -> np.ndarray:
    """``clip_weights(w, sign, 8)`` then ``truncate_weights(w, sign, num_weight_bits)``."""
    w = w.astype(np.int64)
    flip = -1 if sign == INHIBITORY else 1
    w = w * flip
    mixed = int(sign == MIXED)
    w = np.clip(w, -256 * mixed, 255)
    drop = 8 - num_weight_bits + mixed
    if drop < 0:  # numpy shifts by a negative count are undefined: treat as mangled
        raise ValueError(f"negative truncation shift {drop}")
    return ((w >> drop) << drop) * flip


def netx_effective_dense(weight: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The weights netx + Lava's bit-accurate Dense effectively apply, scaled back to W's units.

    Returns (effective, note): ``effective`` is None when netx would crash or the result is not
    an exact integer multiple (it then differs from ``weight`` anyway); ``note`` says why.
    A matrix is safe for netx iff ``effective`` equals ``weight`` exactly.
    """
    w = np.asarray(weight, dtype=np.int64)
    note = ""
    hi, lo = int(w.max()), int(w.min())
    (mixed_lo, mixed_hi) = DENSE_MIXED_RANGE
    if (hi > mixed_hi and lo < 0) or (lo < mixed_lo and hi > 0):
        w = np.clip(w, mixed_lo, mixed_hi)
        note = f"netx clips mixed-sign weights to [{mixed_lo}, {mixed_hi}]"
        hi, lo = int(w.max()), int(w.min())
    if hi == 0 and lo == 0:
        return None, "netx raises OverflowError on an all-zero dense matrix"
    signed = int(not (hi < 0 or lo >= 0))  # netx: INH if max<0, EXC if min>=0, else MIXED
    if signed:
        scale = min(127 / hi if hi > 0 else np.inf, -128 / lo)
    elif hi < 0:
        scale = -256 / lo
    else:
        scale = 255 / hi
    shift = int(np.floor(np.log2(scale))) + signed
    if shift < 0:
        return None, (f"netx computes a negative weight shift ({shift}) and zeroes every "
                      "weight (lava-dl #170)")
    n = 8
    while n > 0 and np.any(w % (1 << n)):
        n -= 1
    num_weight_bits = 8 - shift - (n - signed)
    scaled = w << shift
    try:
        applied = _lava_clip_truncate(scaled, _lava_sign_mode(scaled), num_weight_bits)
    except ValueError as e:
        return None, f"Lava would {e} (netx's and Lava's sign modes differ)"
    if np.any(applied % (1 << shift)):
        return None, note or "Lava truncates the rescaled weights"
    effective = applied >> shift
    if not note and not np.array_equal(effective, weight):
        note = ("netx's sign mode differs from Lava's and Lava clips the rescaled weights"
                if hi <= 0 else "Lava clips or truncates the rescaled weights")
    return effective, note


@dataclass(frozen=True)
class DenseEncoding:
    """Arguments for ``lava.proc.dense.process.Dense`` that reproduce W exactly:
    a = (Σ weights·s) << weight_exp (>> if negative), with no clipping or truncation."""
    weights: np.ndarray
    weight_exp: int
    num_weight_bits: int
    sign_mode: str
    hardware_ok: bool  # the mantissa is a real Loihi 2 8-bit weight (not a 9-bit sim-only one)


def _twos_exponent(w: np.ndarray) -> int:
    """Largest k with every entry divisible by 2^k (0 for an all-zero matrix)."""
    nz = np.abs(w[w != 0])
    if nz.size == 0:
        return 0
    k = 0
    while not np.any(nz & ((1 << (k + 1)) - 1)) and k < 62:
        k += 1
    return k


def lava_dense_encoding(weight: np.ndarray) -> DenseEncoding | None:
    """Mantissa/exponent/sign mode for an exact Lava Dense, or None if W does not fit.

    W = M * 2^k with k the shared power of two. Excitatory: M in [0, 255]; inhibitory:
    M in [-255, 0] (both with num_weight_bits=8, no truncation); mixed: the hardware format
    is 2*M with M in [-128, 127] (8-bit signed mantissa, Lava drops one LSB), and for M in
    [-256, 255] only the simulator can be exact, with num_weight_bits=9 (as netx also does).
    """
    w = np.asarray(weight, dtype=np.int64)
    k = _twos_exponent(w)
    m = w >> k
    sign = _lava_sign_mode(w)
    if sign == EXCITATORY and m.max() <= 255:
        return DenseEncoding(m, k, 8, sign, True)
    if sign == INHIBITORY and m.min() >= -255:
        return DenseEncoding(m, k, 8, sign, True)
    if sign == MIXED and -128 <= m.min() and m.max() <= 127:
        return DenseEncoding(2 * m, k - 1, 8, sign, True)
    if sign == MIXED and -256 <= m.min() and m.max() <= 255:
        return DenseEncoding(m, k, 9, sign, False)
    return None



def lava_conv_groups(weight: np.ndarray, groups: int) -> tuple[np.ndarray, int]:
    """A grouped conv weight (Co, Ci/g, kH, kW) Lava's Conv computes correctly, and its groups.

    Lava 0.10's PyConvModel stores ``groups`` in an int8 Var (lava/proc/conv/models.py), so
    g >= 128 wraps (a depthwise conv or identity shortcut on 128+ channels gives wrong sums). Merge
    g / g' neighbouring groups into each of g' <= 127 groups (g' the largest such divisor of g),
    block-diagonal inside: the same integer sums, only zero weights added."""
    g = int(groups)
    if g <= LAVA_CONV_GROUPS_MAX:
        return weight, g
    g2 = max(d for d in range(1, LAVA_CONV_GROUPS_MAX + 1) if g % d == 0)
    r = g // g2  # original groups per merged group
    co, cig = weight.shape[:2]
    co_g = co // g
    out = np.zeros((co, cig * r) + weight.shape[2:], dtype=weight.dtype)
    local = (np.arange(co) // co_g) % r  # each output's original group, within its merged group
    for k in range(r):
        rows = local == k
        out[rows, k * cig:(k + 1) * cig] = weight[rows]
    return out, g2
