"""Integer helpers that reproduce numpy's int32 / Lava fixed-point wrap rules on torch tensors.

Every function takes and returns integer torch tensors of any shape (layout-agnostic).
"""
from __future__ import annotations

import torch

I32_MIN = -(2 ** 31)
I32_MAX = 2 ** 31 - 1
F32_EXACT = 2 ** 24  # float32 holds every integer with |x| <= 2^24 exactly
F64_EXACT = 2 ** 53  # float64: |x| <= 2^53


def wrap(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's complement wrap ``((x + 2^(b-1)) mod 2^b) - 2^(b-1)``, as an int64 tensor.

    This is numpy's int32 overflow behaviour for bits=32 and Lava's ``signed_clamp`` for bits=24.
    """
    half = 1 << (bits - 1)
    x = x.to(torch.int64)
    return ((x + half) & ((1 << bits) - 1)) - half


def wrap32(x: torch.Tensor) -> torch.Tensor:
    """numpy int32 arithmetic result: the exact value mod 2^32, signed."""
    return wrap(x, 32)


def float_to_int32_x86(y: torch.Tensor) -> torch.Tensor:
    """numpy's ``float64.astype(int32)`` on x86: out-of-range values become INT32_MIN.

    Lava's ``conv`` ends with ``output.astype(int32)`` before the 24-bit wrap, so a conv sum
    with |y| >= 2^31 turns into -2^31 (then 0 after the 24-bit wrap). ``y`` is an exact int64.
    """
    out_of_range = (y < I32_MIN) | (y > I32_MAX)
    return torch.where(out_of_range, torch.full_like(y, I32_MIN), y)


def abs_bound(x: torch.Tensor) -> int:
    """max |x| as a Python int (0 for an empty tensor), computed without int32 abs overflow."""
    if x.numel() == 0:
        return 0
    return max(int(x.max()), -int(x.min()))


def zeros(batch: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A (batch, *shape) state tensor; (C, H, W) blocks are stored channels-last in memory
    (logical layout stays NCHW) because oneDNN convolves channels-last tensors faster."""
    t = torch.zeros((batch, *shape), dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if len(shape) == 3 else t
