"""A SoftIF payload mode: how many threshold units ``n`` a SoftIF neuron sends in one step, from
``q = floor(v / (vth << 6))``, and then ``v -= n * (vth << 6)`` (``qir.SoftIF.mode``).

Each mode file holds the mode's integer rule twice, written independently on purpose: once
for the emulator (torch, batched) and once for the Lava process (numpy; no torch inside Lava
processes). The emulator-vs-Lava tests compare the two bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from loihi_conv.base.registry import lookup


@dataclass(frozen=True)
class SoftIFMode:
    """``name``: the mode (and the float neuron model it reproduces, ``snn/neurons/<name>.py``).
    ``power_of_two``: max_units must be a power of two (payloads are shifts).
    ``buffered``: the neuron keeps ``vb``, the net units sent, and adds every payload to it.
    ``emulate(q, vb, units, table)``: torch int tensors (q may be changed in place), ``table`` the
    emulator's lookup ``A[k]`` (largest power of two <= k); None for the binary mode, which the
    emulator runs on its own fast path. ``lava(q, vb, units)``: numpy, int64 or integer-valued
    float64 (the Lava process's fixed- and floating-point models)."""
    name: str
    power_of_two: bool
    buffered: bool
    emulate: Callable[[Any, Any, int, Any], Any] | None
    lava: Callable[[np.ndarray, np.ndarray, int], np.ndarray]


SOFTIF_MODES: dict[str, SoftIFMode] = {}
DEFAULT_MODE = "if-soft"  # binary spikes; never written to a file, so older files read unchanged


def register_mode(mode: SoftIFMode) -> SoftIFMode:
    """Add ``mode`` to ``SOFTIF_MODES`` under its name."""
    SOFTIF_MODES[mode.name] = mode
    return mode


def get_mode(name: str) -> SoftIFMode:
    return lookup(SOFTIF_MODES, name, "SoftIF payload mode")


def is_buffered(name: str) -> bool:
    """Whether mode ``name`` keeps the buffer ``vb`` (False for an unknown name)."""
    mode = SOFTIF_MODES.get(name)
    return bool(mode and mode.buffered)


def power_of_two_floor(k: np.ndarray, units: int) -> np.ndarray:
    """A(k) for 0 <= k <= units: the largest power of two <= k, A(0) = 0 (HPC eq. 15); exact
    for ints and integer-valued floats (no log2 rounding)."""
    out = np.zeros_like(k)
    for j in range(int(units).bit_length()):
        out = np.where(k >= (1 << j), 1 << j, out)
    return out
