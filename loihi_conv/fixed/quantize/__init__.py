"""Quantization: float SNN IR (``ir.Graph`` with ``ir.Neuron`` nodes) -> fixed-point
``qir.QNetwork`` for one Loihi 2 target, registered by name:

* ``if-soft``: SoftIF neurons (reset by subtraction, per-channel vth; custom Lava process);
* ``cuba``: standard NetX CUBA neurons (IF with reset to zero, one vThMant per layer);
* ``sdnn``: standard NetX sigma-delta network (Delta / SigmaDelta ReLU / Sigma).

Steps: fold every synapse chain between populations into single synapses (``fold``), pick the
input scale and a per-layer integer scale under Loihi's limits, minimizing a threshold-normalized
quantization error on calibration data (``common.search``), refuse what could overflow unless
``force=True``. ``emulate.quant_report.report(qnet)`` describes the result per layer. Equations:
docs/targets.md.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.registry import lookup
from loihi_conv.fixed import qir
from loihi_conv.frontend import ir
from loihi_conv.snn.readouts import readout_class, readout_name

from . import cuba, sdnn, softif  # noqa: F401  (register the targets)
from .blocks import DT, fold, hops
from .common import TARGETS, Context, Options, QuantizeWarning, register_target, spiking_targets
from .rounding import WEIGHT_ROUNDINGS

SYNTHETIC_SAMPLES = 64

__all__ = ["quantize", "TARGETS", "register_target", "WEIGHT_ROUNDINGS",
           "QuantizeWarning", "Options", "fold"]


def quantize(snn: ir.Graph, target: str = "if-soft", timesteps: int = 64,
             calib: torch.Tensor | np.ndarray | None = None, **opts) -> qir.QNetwork:
    """Quantize the SNN IR ``snn`` for ``target`` and a readout window of ``timesteps`` steps.

    ``calib``: analog input samples (N, *input shape), PyTorch layout, used to choose the input
    scale, per-layer scales (least error) and the readout scale (typical accumulation); without
    it, uniform samples from ``input_range`` drive the error metric and worst cases bound the
    readout. ``opts``: see ``common.Options`` (``force``, ``weight_step``, ``scales``, ...).
    Blocks are named after the IR nodes; ``meta`` holds per-layer scales and errors, the target,
    T, and the recipe of ``snn.meta`` if any.
    """
    if target not in TARGETS:
        raise LoihiConvError(f"unknown quantization target {target!r}",
                             f"use one of: {', '.join(sorted(TARGETS))}")
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise LoihiConvError(f"timesteps={timesteps!r} must be a positive integer",
                             "pass the readout window T, e.g. timesteps=64")
    opts.setdefault("weight_rounding", snn.meta.get("recipe", {}).get("weight_rounding", "nearest"))
    options = Options.build(opts)
    lookup(WEIGHT_ROUNDINGS, options.weight_rounding, "weight rounding")
    scheme = readout_class(readout_name(snn))  # Recipe.output: what the output block must be
    _check_readout(scheme, target)
    with _one_thread():
        blocks = fold(snn)
        _check_pools(blocks, target)
        blocks[-1].neuron = scheme.output_neuron(snn, tuple(blocks[-1].shape))  # None: Readout
        unknown = sorted(set(options.scales) - {b.name for b in blocks[1:]})
        if unknown:
            raise LoihiConvError(f"quantize: scales= names unknown block(s) {', '.join(unknown)}",
                                 f"blocks: {', '.join(b.name for b in blocks[1:])}")
        x, synthetic, lo, hi = _samples(blocks[0].shape, calib, options)
        ctx = Context(blocks, int(timesteps), hops(blocks), options, x, synthetic, lo, hi)
        if synthetic:
            ctx.notes.append("no calibration data: per-layer scales use uniform inputs in input_range "
                             "and the readout is sized for the worst case")
        qnet = TARGETS[target](ctx)
    if "recipe" in snn.meta:
        qnet.meta["recipe"] = snn.meta["recipe"]
    return qnet


def _check_readout(scheme, target: str) -> None:
    """The spiking readouts run on the spiking targets only (``spiking_targets``)."""
    spiking = spiking_targets()
    if scheme.needs_spikes and target not in spiking:
        raise LoihiConvError(f"quantize: the SNN was converted with output={scheme.name!r}, which target "
                             f"{target!r} cannot run (it needs one of: {', '.join(spiking)})",
                             f"quantize for {' or '.join(repr(t) for t in spiking)}, or convert "
                             "with Recipe(output='potential') (the default)")


def _check_pools(blocks, target: str) -> None:
    """Spiking max-pool stages run on the spiking targets only (``spiking_targets``)."""
    pooled = [f"'{b.name}' (from '{s.source}', {s.pool.scheme})" for b in blocks for s in b.synapses
              if s.pool is not None]
    spiking = spiking_targets()
    if pooled and target not in spiking:
        raise LoihiConvError(f"target {target!r} cannot run the spiking max-pool stage of block(s) "
                             f"{', '.join(pooled)}: its messages are not spikes in threshold units",
                             f"quantize for {' or '.join(map(repr, spiking))}, or convert "
                             "with max_pool='relu-tree' (the exact max as ReLU layers) or 'avg' (a linear pool)")


@contextmanager
def _one_thread():
    """The scale search runs hundreds of small convolutions: intra-op threads only add
    synchronisation cost there (100x on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _samples(shape: tuple[int, ...], calib, opts: Options) -> tuple[torch.Tensor, bool, float, float]:
    """Calibration samples (float64, at most ``calib_samples``, a seeded subset) and the input
    range; uniform synthetic samples over ``input_range`` (default (0, 1)) without data."""
    gen = torch.Generator().manual_seed(opts.seed)
    if calib is None:
        lo, hi = opts.input_range or (0.0, 1.0)
        x = lo + (hi - lo) * torch.rand((SYNTHETIC_SAMPLES,) + tuple(shape), generator=gen, dtype=DT)
        return x, True, float(min(lo, 0.0)), float(max(hi, 0.0))
    try:
        x = torch.as_tensor(np.asarray(calib) if not torch.is_tensor(calib) else calib).detach().to(DT)
    except (TypeError, ValueError, RuntimeError):
        raise LoihiConvError(f"calibration data of type {type(calib).__name__} is not an array",
                             "pass a tensor (N, C, H, W) of analog input samples") from None
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] == 0:
        raise LoihiConvError(f"calibration data has shape {tuple(x.shape)}, the network expects "
                             f"(N, {', '.join(map(str, shape))})", "pass samples in the input layout (NCHW)")
    if not bool(torch.isfinite(x).all()):
        raise LoihiConvError("calibration data has NaN or inf values", "clean the data")
    if x.shape[0] > opts.calib_samples:
        x = x[torch.randperm(x.shape[0], generator=gen)[:opts.calib_samples]]
    lo, hi = opts.input_range or (float(x.min()), float(x.max()))
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi == lo:
        hi = 1.0
    return x, False, lo, hi
