"""The one place where PyTorch layouts meet Lava layouts.

PyTorch / loihi-conv arrays: (N, T, C, H, W) or (N, T, F) -- batch first, then time, then CHW.
Lava ports and RingBuffers:  (W, H, C, T) or (F, T)            -- one sample, time last.
Lava Monitor data:           (T, W, H, C) or (T, F).
"""
from __future__ import annotations

import numpy as np


def torch_to_lava(x_tchw: np.ndarray) -> np.ndarray:
    """(T, C, H, W) or (T, F) -> (W, H, C, T) or (F, T)."""
    x = np.asarray(x_tchw)
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(3, 2, 1, 0))
    if x.ndim == 2:
        return np.ascontiguousarray(x.T)
    raise ValueError(f"expected (T,C,H,W) or (T,F), got shape {x.shape}")


def lava_to_torch(x_whct: np.ndarray) -> np.ndarray:
    """(W, H, C, T) or (F, T) -> (T, C, H, W) or (T, F)."""
    x = np.asarray(x_whct)
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(3, 2, 1, 0))
    if x.ndim == 2:
        return np.ascontiguousarray(x.T)
    raise ValueError(f"expected (W,H,C,T) or (F,T), got shape {x.shape}")


def monitor_to_torch(x_twhc: np.ndarray) -> np.ndarray:
    """Lava Monitor (T, W, H, C) or (T, F) -> (T, C, H, W) or (T, F)."""
    x = np.asarray(x_twhc)
    if x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1))
    return np.ascontiguousarray(x)


def chw_to_whc(x_chw: np.ndarray) -> np.ndarray:
    """A static per-neuron array (C,H,W) -> Lava Var layout (W,H,C); vectors pass through."""
    x = np.asarray(x_chw)
    return np.ascontiguousarray(x.transpose(2, 1, 0)) if x.ndim == 3 else x


def whc_to_chw(x_whc: np.ndarray) -> np.ndarray:
    """A static per-neuron Lava Var (W,H,C) -> (C,H,W); vectors pass through."""
    x = np.asarray(x_whc)
    return np.ascontiguousarray(x.transpose(2, 1, 0)) if x.ndim == 3 else x


def conv_weight_to_lava(w_oihw: np.ndarray) -> np.ndarray:
    """PyTorch conv weight (Co, Ci/g, kH, kW), a correlation kernel -> Lava Conv (Co, kW, kH, Ci/g).

    Lava's Conv is a true convolution (scipy convolve2d), so the kernel is flipped in both
    spatial axes first; this is netx's own transform (netx/hdf5.py create_conv).
    """
    w = np.asarray(w_oihw)
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))
