"""``convert``: trained model (or float IR graph) + calibration data + Recipe -> SNN IR graph.

Steps: prepare the float IR (trace + BN fold, ``loihi_conv.frontend.prepare.prepare``) -> observe the ReLU
outputs on calibration data (``observe``) -> per-channel thresholds (``normalize``) -> replace
every ReLU by a spiking ``ir.Neuron`` (``normalize.to_snn``). The recipe is stored in
``graph.meta["recipe"]``; a readout that needs an output threshold (``Recipe.output`` "spikes")
gets it from the same normalizer in ``graph.meta["output_threshold"]``.

Calibration data layout: a tensor (N, *input shape), or an iterable of batches, each a tensor
(B, *input shape) or a ``(x, y, ...)`` tuple/list whose first item is that tensor (a
DataLoader). numpy arrays are accepted too.
"""
from __future__ import annotations

import itertools
from functools import singledispatch
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from loihi_conv.base import devices
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.normalize import get_normalizer, to_snn
from loihi_conv.convert.observe import observe
from loihi_conv.convert.recipe import Recipe
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.pooling import get_pooling
from loihi_conv.snn.readouts import readout_class, with_threshold_probe

Tensor = torch.Tensor


# ---- calibration data ----------------------------------------------------------------------
@singledispatch
def _as_batch(batch: Any) -> Tensor:
    raise LoihiConvError(f"a calibration batch is a {type(batch).__name__}, not a tensor",
                         "pass a tensor (N, C, H, W), or an iterable of tensors or (x, y) pairs")


@_as_batch.register
def _(batch: torch.Tensor) -> Tensor:
    return batch.detach().float()


@_as_batch.register
def _(batch: np.ndarray) -> Tensor:
    return torch.from_numpy(np.asarray(batch, dtype=np.float32))


@_as_batch.register(tuple)
@_as_batch.register(list)
def _(batch) -> Tensor:
    if not batch:
        raise LoihiConvError("a calibration batch is an empty tuple/list", "yield (x, y) pairs or tensors")
    return _as_batch(batch[0])


@singledispatch
def calibration_stream(data: Any, recipe: Recipe) -> Iterator[Tensor]:
    """Calibration batches of at most ``recipe.calib_batch_size`` samples (layout in module doc)."""
    try:
        batches = iter(data)
    except TypeError:
        raise LoihiConvError(f"calibration data of type {type(data).__name__} is not a tensor or an "
                             "iterable of batches", "pass a tensor (N, C, H, W) or a DataLoader") from None
    for b in batches:
        yield from _as_batch(b).split(recipe.calib_batch_size)


@calibration_stream.register(torch.Tensor)
@calibration_stream.register(np.ndarray)
def _(data, recipe: Recipe) -> Iterator[Tensor]:
    x = _as_batch(data)
    if x.dim() == 0:
        raise LoihiConvError("calibration data is a scalar", "pass a tensor (N, C, H, W)")
    if x.shape[0] > recipe.calib_size:  # a seeded random subset, not the first (maybe sorted) ones
        gen = torch.Generator().manual_seed(recipe.seed)
        x = x[torch.randperm(x.shape[0], generator=gen)[:recipe.calib_size]]
    yield from x.split(recipe.calib_batch_size)


def _checked(batches: Iterable[Tensor], shape: tuple[int, ...]) -> Iterator[Tensor]:
    for b in batches:
        if tuple(b.shape[1:]) != shape:
            raise LoihiConvError(f"calibration batch has shape {tuple(b.shape)}, the model expects "
                                 f"(N, {', '.join(map(str, shape))})",
                                 "pass calibration samples in the model's input layout (N, C, H, W)")
        if not bool(torch.isfinite(b).all()):  # NaN/inf would silently give fallback thresholds
            raise LoihiConvError(f"calibration data holds {int((~torch.isfinite(b)).sum())} NaN or inf "
                                 "value(s)", "clean the data or drop those samples before converting")
        if b.shape[0]:
            yield b


# ---- model -> float IR ---------------------------------------------------------------------
@singledispatch
def as_graph(model: Any, input_shape: tuple[int, ...]) -> ir.Graph:
    """The float IR of ``model`` (an ``nn.Module`` or an ``ir.Graph``), shapes inferred."""
    raise LoihiConvError(f"cannot convert a {type(model).__name__}", "pass a torch.nn.Module or a loihi_conv.frontend.ir.Graph")


@as_graph.register
def _(model: nn.Module, input_shape: tuple[int, ...]) -> ir.Graph:
    from loihi_conv.frontend.prepare import prepare  # trace + BN fold + shape inference

    return prepare(model, input_shape)


@as_graph.register
def _(graph: ir.Graph, input_shape: tuple[int, ...]) -> ir.Graph:
    graph = graph.copy()
    if graph.of_type(ir.Neuron):
        raise LoihiConvError("the graph is already a spiking (SNN) graph", "convert the float ANN graph instead")
    if graph.of_type(ir.BatchNorm):
        raise LoihiConvError("the graph still has BatchNorm nodes",
                             "fold them first: loihi_conv.frontend.prepare.prepare(model, input_shape)")
    if input_shape and not graph.input.shape:
        graph.input.shape = tuple(input_shape)
    return ops.infer_shapes(graph)


# ---- convert -------------------------------------------------------------------------------
def convert(model_or_graph: nn.Module | ir.Graph, calib_data: Tensor | Iterable, recipe: Recipe | None = None,
            input_shape: tuple[int, ...] | None = None, device: "str | torch.device | None" = None) -> ir.Graph:
    """Convert a trained ANN into an SNN IR graph (ReLUs -> ``ir.Neuron`` with thresholds).

    ``calib_data``: training samples (module doc for the layout); at most ``recipe.calib_size``
    are used. ``input_shape`` (C, H, W) defaults to the calibration samples' shape.
    Returns a new graph; ``graph.meta["recipe"]`` holds ``recipe.to_dict()`` and
    ``graph.meta["calib_samples"]`` the number of samples observed. ``device``: where the
    calibrations that simulate (LCP, ACP) run ("cpu" default, "cuda"; ``base.devices``).
    """
    recipe = (recipe or Recipe()).validate()
    device = devices.resolve(device)  # a bad name fails before any work
    batches = _nonempty(calibration_stream(calib_data, recipe))
    first = next(batches, None)
    if first is None:
        raise LoihiConvError("the calibration data is empty", "pass at least a few hundred training samples")
    shape = tuple(input_shape) if input_shape else tuple(first.shape[1:])
    graph = get_pooling(recipe.max_pool).rewrite(as_graph(model_or_graph, shape))
    stream = _checked(itertools.chain([first], batches), tuple(graph.input.shape))

    normalizer = get_normalizer(recipe.normalizer, **recipe.to_dict())
    kept: list[Tensor] = []  # samples for the calibrations that simulate (apply_methods slices:
    # LCP/ACP potential use calib_sim_size, ACP weight calibration all calib_size, the paper's 1024)
    need = max(recipe.calib_sim_size if (recipe.lcp or recipe.acp) else 0,
               recipe.calib_size if recipe.acp_weights else 0)
    stream = _keep(stream, kept, need)
    observed, probe = with_threshold_probe(graph) if readout_class(recipe.output).needs_threshold else (graph, None)
    stats = observe(observed, stream, normalizer.observers(), max_samples=recipe.calib_size, sites=("post",))
    if stats.n_samples < min(recipe.min_calib_size, recipe.calib_size):
        raise LoihiConvError(f"only {stats.n_samples} calibration samples, fewer than min_calib_size="
                             f"{recipe.min_calib_size}",
                             f"pass more training samples (up to calib_size={recipe.calib_size} are used)")
    thresholds = normalizer.thresholds(stats)
    output_threshold = thresholds.pop(probe) if probe else None
    snn = to_snn(graph, thresholds, recipe.neuron_model, v_init=recipe.v_init, params=recipe.neuron_params)
    from loihi_conv.convert.methods import apply_methods  # ClipRound bias, clamping, LCP/ACP (if asked)

    snn = apply_methods(snn, graph, torch.cat(kept) if kept else None, recipe, device=device)
    snn.meta["recipe"] = recipe.to_dict()
    snn.meta["calib_samples"] = stats.n_samples
    if output_threshold is not None:  # one for all classes (outputs.SpikeCountReadout)
        snn.meta["output_threshold"] = float(output_threshold.max())
    return snn


def _keep(batches: Iterable[Tensor], kept: list[Tensor], n: int) -> Iterator[Tensor]:
    """Pass batches through, appending to ``kept`` until it holds ``n`` samples."""
    have = 0
    for b in batches:
        if have < n:
            kept.append(b[: n - have])
            have += kept[-1].shape[0]
        yield b


def _nonempty(batches: Iterator[Tensor]) -> Iterator[Tensor]:
    """Skip empty batches so the first one yielded defines the input shape."""
    return (b for b in batches if b.dim() > 0 and b.shape[0] > 0)


__all__ = ["convert", "as_graph", "calibration_stream"]
