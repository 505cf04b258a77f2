"""Weight rounding, registered by name (``Options.weight_rounding``, ``Recipe.weight_rounding``):
how a block's float weights at the chosen scale become integers on the weight grid.

* ``nearest``: round each weight to the nearest grid value (``common.int_weight``);
* ``gptq``: data-aware rounding (GPTQ / OBQ, Frantar et al. 2023): the fan-in columns of each
  weight row are rounded in turn and each rounding error is pushed onto the columns not yet
  rounded, through the inverse Hessian ``H = X^T X`` of the synapse's calibration messages.
  Correlated inputs (the positions an average pool folded into one weight, neighbouring taps)
  then get errors that cancel in the sum. Same scale, same grid and limits as ``nearest``: only
  integer values change, so files stay standard NetX and Lava stays bit-exact.

Measured (docs/board-targets-gap.md): sdnn on fmnist_vgg 91.05 -> 93.55 % (ANN 94.05).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from loihi_conv.base.knobs import Choice, Knobs

from .blocks import DT, FConv, FDense, pool_values
from .common import Options, SynData, int_weight, out_view, round_to

Tensor = torch.Tensor
Rounding = Callable[[list[SynData], Tensor, Options, dict | None], list[Tensor]]
WEIGHT_ROUNDINGS: dict[str, Rounding] = {}
HESSIAN_CHUNK = 16  # samples per im2col: a conv's unfolded inputs of all samples do not fit in memory
ROWS_PER_COLUMN = 64  # rows of X per fan-in column that are enough for H
BLOCK = 128  # columns updated together (GPTQ's lazy batch updates)
HESSIAN_BLOCK = 2048  # fan-in columns per Hessian block (a conv's whole fan-in; dense layers split)
DAMP = 0.01  # diagonal damping, a fraction of the mean diagonal (GPTQ's default)


def register_rounding(name: str) -> Callable[[Rounding], Rounding]:
    def deco(fn: Rounding) -> Rounding:
        WEIGHT_ROUNDINGS[name] = fn
        return fn
    return deco


def round_weights(data: list[SynData], sigma: Tensor, opts: Options, cache: dict | None = None) -> list[Tensor]:
    """Integer weights of every synapse of a block at per-channel scale ``sigma`` (Co,);
    ``cache`` keeps what a rounding can reuse across scales (GPTQ's inverse Hessians, keyed
    by ``SynData.hkey``)."""
    return WEIGHT_ROUNDINGS[opts.weight_rounding](data, sigma, opts, cache)


@register_rounding("nearest")
def nearest(data: list[SynData], sigma: Tensor, opts: Options, cache: dict | None = None) -> list[Tensor]:
    return [int_weight(d.wk, sigma, opts) for d in data]


def _inverse_hessians(d: SynData, cache: dict | None) -> list[tuple[slice, Tensor]]:
    """``block_hessians`` of the synapse's messages, inverted for GPTQ; the rounding is the same
    for messages scaled by any factor, so equal ``hkey``s share them."""
    key = ("gptq-hinv", d.hkey)
    if cache is not None and d.hkey is not None and key in cache:
        return cache[key]
    out = [(cols, _hinv(h)) for cols, h in block_hessians(d.syn, d.m, HESSIAN_BLOCK)]
    if cache is not None and d.hkey is not None:
        cache[key] = out
    return out


@register_rounding("gptq")
def gptq(data: list[SynData], sigma: Tensor, opts: Options, cache: dict | None = None) -> list[Tensor]:
    lim = opts.weight_max - opts.weight_max % opts.weight_step
    out = []
    for d in data:
        target = d.wk * out_view(sigma, d.wk)
        if isinstance(d.syn, FConv) and d.syn.groups != 1:  # im2col below is for dense fan-in
            out.append(round_to(target, opts.weight_step).clamp(-lim, lim))
            continue
        flat = target.reshape(target.shape[0], -1)
        q = torch.empty_like(flat)
        for cols, hinv in _inverse_hessians(d, cache):
            q[:, cols] = _gptq_columns(flat[:, cols], hinv, float(opts.weight_step), float(lim))
        out.append(q.reshape(target.shape))
    return out


def inputs_matrix(syn: FConv | FDense, m: Tensor) -> Tensor:
    """The rows X the synapse's weight rows are applied to: one per sample (dense) or per sample
    and output position (conv), columns in the weight's fan-in order."""
    x = pool_values(syn.pool, m)
    if isinstance(syn, FDense):
        return x.flatten(1)
    cols = F.unfold(x, tuple(syn.weight.shape[2:]), dilation=syn.dilation, padding=syn.padding, stride=syn.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def block_hessians(syn: FConv | FDense, m: Tensor, size: int) -> list[tuple[slice, Tensor]]:
    """The diagonal blocks ``X[:, c]^T X[:, c]`` of ``inputs_matrix``'s ``X^T X`` over the messages
    ``m`` (N, *source shape), for consecutive fan-in column blocks ``c`` of ``size``; summed in
    chunks of samples until there are ``ROWS_PER_COLUMN`` rows per block column (a conv on a
    large map gets that many from a few samples; its im2col over all of them is the slow part).

    Blocks, not the whole matrix: a dense layer after a folded pool has a fan-in of 10^4-10^5
    (fmnist_vgg: 25088), whose full Hessian takes GBs and its Cholesky minutes. Consecutive
    columns hold what matters most -- a channel's neighbouring positions, which the pool folded
    into near-copies -- so rounding errors still cancel within a block."""
    hs: list[Tensor] = []
    rows = 0
    for mc in m.split(HESSIAN_CHUNK):
        x = inputs_matrix(syn, mc.to(DT))
        k = x.shape[1]
        parts = [x[:, i:i + size] for i in range(0, k, size)]
        hs = [p.T @ p for p in parts] if not hs else [h + p.T @ p for h, p in zip(hs, parts)]
        rows += x.shape[0]
        if rows >= ROWS_PER_COLUMN * min(size, k):
            break
    return [(slice(i * size, i * size + h.shape[0]), h) for i, h in enumerate(hs)]


def hessian(syn: FConv | FDense, m: Tensor) -> Tensor:
    """The whole ``X^T X`` of ``inputs_matrix`` over the messages ``m`` (one block)."""
    k = inputs_matrix(syn, m[:1].to(DT)).shape[1]
    return block_hessians(syn, m, k)[0][1]


def gptq_round(target: Tensor, h: Tensor, step: float, lim: float) -> Tensor:
    """Round ``target`` (Co, K) onto ``step * ints`` in [-lim, lim], lowering ``||(Q - target) X^T||``
    for ``h = X^T X`` (K, K); exactly round-to-nearest when ``h`` is diagonal."""
    return _gptq_columns(target, _hinv(h), step, lim)


def _hinv(h: Tensor) -> Tensor:
    """The upper Cholesky factor of the damped inverse of ``h`` (GPTQ's)."""
    k = h.shape[0]
    h = h.clone()
    dead = torch.diag(h) == 0  # inputs never active: their weights do not matter
    h[dead, dead] = 1
    h += DAMP * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


def _gptq_columns(target: Tensor, hinv: Tensor, step: float, lim: float) -> Tensor:
    """GPTQ's column loop: round a column, push its error onto the later ones (lazy blocks)."""
    k = hinv.shape[0]
    w = target.clone()
    q = torch.zeros_like(w)
    for i0 in range(0, k, BLOCK):
        i1 = min(i0 + BLOCK, k)
        w1 = w[:, i0:i1].clone()
        err = torch.zeros_like(w1)
        hb = hinv[i0:i1, i0:i1]
        for j in range(i1 - i0):
            qc = (torch.round(w1[:, j] / step) * step).clamp(-lim, lim)
            q[:, i0 + j] = qc
            e = (w1[:, j] - qc) / hb[j, j]
            w1[:, j:] -= e[:, None] * hb[j, j:][None, :]
            err[:, j] = e
        w[:, i1:] -= err @ hinv[i0:i1, i1:]
    return q


# The recipe search's domain (a target opts in with ``register_target(recipe_knobs=("weight_rounding",))``).
QUANTIZE_KNOBS: Knobs = {"weight_rounding": Choice(tuple(WEIGHT_ROUNDINGS))}

__all__ = ["QUANTIZE_KNOBS", "WEIGHT_ROUNDINGS", "register_rounding", "round_weights", "gptq_round", "hessian", "block_hessians"]
