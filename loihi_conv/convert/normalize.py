"""Data-based normalization: one threshold (scale lambda) per channel for every ReLU, and the
ANN -> SNN graph rewrite that puts those thresholds on spiking ``ir.Neuron`` nodes.

Normalizers are registered by name; each declares the observers it needs (``observers()``)
and turns the collected ``ActivationStats`` into ``{relu name: (C,) threshold}``
(``thresholds()``). ``granularity="layer"`` uses one statistic over all channels of a layer
(Diehl 2015, Rueckauer 2016), broadcast to every channel; ``"channel"`` uses one per channel
(Kim et al. 2019, as in the RetinaNet conversion paper, eq. 2).

Why thresholds instead of rescaled weights. Rueckauer et al. (2016, §3.2.1) normalize
parameters, ``W'_l = W_l * lambda_{l-1} / lambda_l`` and ``b'_l = b_l / lambda_l``, and fire
at threshold 1 with unit spikes. Here weights and biases keep their ANN values, neuron l fires
at ``theta_l = lambda_l`` and each spike carries amplitude ``lambda_l`` (docs/architecture.md).
Neuron l then integrates ``W_l (lambda_{l-1} s_{l-1}) + b_l`` against ``lambda_l``; dividing the
membrane equation by ``lambda_l`` gives exactly ``W'_l s_{l-1} + b'_l`` against 1, so the two
networks emit identical spike trains (channel-wise: ``lambda_{l-1}`` per input channel,
``lambda_l`` per output channel, the RetinaNet eq. 2). tests/test_normalize.py checks this
numerically. The quantizer later folds the amplitudes into integer weights the same way.

Residual joins. Hu et al. (2018) -- which the RetinaNet paper applies to its ResNet backbone --
scale each branch into the add by ``lambda_source / lambda_join``: the main-path conv by
``lambda_{l-1}/lambda_l`` and the shortcut by ``lambda_shortcut_source/lambda_l``, so both
currents reach the joint neuron in the same normalized units. With threshold-amplitude spikes
both branches already carry ANN units when they meet, the neuron after the ``Add`` gets one
threshold from its own statistics, and dividing its membrane equation by that threshold yields
precisely Hu's per-branch factors. No special case is needed.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.knobs import Choice, Knobs
from loihi_conv.base.registry import lookup, registrar
from loihi_conv.convert.observe import ActivationStats, ObserverSpec
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.neurons import NEURON_MODELS, threshold_scale

Tensor = torch.Tensor
GRANULARITIES = ("layer", "channel")

NORMALIZERS: dict[str, type["Normalizer"]] = {}


register_normalizer = registrar(NORMALIZERS, "normalizer (``Recipe.normalizer``)")


def get_normalizer(name: str, **options) -> "Normalizer":
    """Instantiate the normalizer ``name``; a LoihiConvError lists the registered names."""
    cls = lookup(NORMALIZERS, name, "normalizer")
    return cls(**{k: v for k, v in options.items() if k in cls.options})


class Normalizer:
    """Maps activation statistics of the ReLU *outputs* to per-channel thresholds.

    ``options`` names the constructor arguments (recipe fields) the normalizer uses.
    """

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ("granularity",)
    key: ClassVar[str] = ""  # the observer key read from ActivationStats
    # What the recipe search may choose for this normalizer (None: never chosen by the search).
    knobs: ClassVar[Knobs | None] = {"granularity": Choice(("channel", "layer"))}

    def __init__(self, granularity: str = "channel"):
        if granularity not in GRANULARITIES:
            raise LoihiConvError(f"unknown granularity {granularity!r}", f"use one of: {', '.join(GRANULARITIES)}")
        self.granularity = granularity

    def observers(self) -> ObserverSpec:
        raise NotImplementedError

    def thresholds(self, stats: ActivationStats) -> dict[str, Tensor]:
        """``{relu name: (C,) threshold}``, every entry > 0."""
        out = {}
        for relu in stats.observers["post"]:
            layer = stats.layer(relu, self.key)
            if self.granularity == "layer":
                lam = stats.channel(relu, self.key).clone().fill_(float(layer))
            else:
                lam = stats.channel(relu, self.key)
            out[relu] = _positive(lam, layer)
        return out


def _positive(lam: Tensor, layer: Tensor) -> Tensor:
    """A threshold of 0 would fire on every step: channels that never activated on the
    calibration data take the layer's value (or 1 when the whole layer stayed silent)."""
    fallback = float(layer) if float(layer) > 0 else 1.0
    return torch.where(lam > 0, lam, torch.full_like(lam, fallback))


@register_normalizer("max")
class MaxNormalizer(Normalizer):
    """``lambda = max`` of the ReLU output over the calibration set (Diehl et al. 2015;
    Rueckauer et al. 2016 §3.2.1: ``lambda_l = max[a_l]``); layer-wise it is the max over channels."""

    key = "max"

    def observers(self) -> ObserverSpec:
        return {"max": ("max", {})}


@register_normalizer("percentile")
class PercentileNormalizer(Normalizer):
    """``lambda = p``-th percentile of the ReLU output (Rueckauer et al. 2016 §3.2.2, robust
    normalization, p in [99, 99.999]; p=100 is max-norm). Channel-wise: the p-th percentile of
    each channel (Kim et al. 2019; RetinaNet paper eq. 2, ``lambda^k_c``). ``nonzero`` counts only
    positive activations, as the SNN Toolbox reference implementation does."""

    options = ("granularity", "percentile", "nonzero")
    key = "percentile"
    knobs = {**Normalizer.knobs, "percentile": Choice((99.9, 99.99, 99.999))}

    def __init__(self, granularity: str = "channel", percentile: float = 99.99, nonzero: bool = True):
        super().__init__(granularity)
        if not 0.0 < percentile <= 100.0:
            raise LoihiConvError(f"percentile {percentile} is out of range", "use 0 < percentile <= 100, e.g. 99.99")
        self.p = float(percentile)
        self.nonzero = nonzero

    def observers(self) -> ObserverSpec:
        return {"percentile": ("percentile", {"p": self.p, "nonzero": self.nonzero})}


def _channels(node: ir.Node) -> int:
    return node.shape[0]


def to_snn(graph: ir.Graph, thresholds: dict[str, Tensor | float], neuron_model: str = "if-soft",
           v_init: float | Tensor = 0.0, params: dict | None = None) -> ir.Graph:
    """Copy ``graph`` with every ``ir.ReLU`` replaced by an ``ir.Neuron`` of the same name.

    ``thresholds[relu]`` is a (C,) tensor or a scalar (layer-wise, broadcast to C channels);
    ``v_init`` is the initial membrane potential as a fraction of the threshold (scalar or (C,));
    ``params`` go to every neuron's model-specific ``params``. Weights stay in ANN units (module
    doc). The input graph is not modified.
    """
    if neuron_model not in NEURON_MODELS:
        raise LoihiConvError(f"unknown neuron model {neuron_model!r}",
                             f"use one of: {', '.join(sorted(NEURON_MODELS))}")
    snn = graph.copy()
    if any(not n.shape for n in snn if not isinstance(n, ir.Input)):
        ops.infer_shapes(snn)
    relus = snn.of_type(ir.ReLU)
    missing = [r.name for r in relus if r.name not in thresholds]
    if missing:
        raise LoihiConvError(f"no threshold for ReLU node(s) {', '.join(missing)}",
                             "pass a threshold for every ReLU (normalize.*.thresholds gives them all)")
    # Multi-bit models fire at lambda / S_max so the clipping level stays lambda (HPC eq. 16).
    scale = threshold_scale(neuron_model, params or {})
    for relu in relus:
        c = _channels(relu)
        theta = torch.as_tensor(thresholds[relu.name], dtype=torch.float32).flatten()
        theta = theta.expand(c).clone() if theta.numel() == 1 else theta
        if isinstance(relu, ir.ClippedReLU):  # ReLU6 & co.: the neuron's clip is the ANN's clip
            theta = theta.clamp(max=float(relu.max_value))
        theta = theta * scale
        if theta.shape != (c,) or not bool((theta > 0).all()) or not bool(torch.isfinite(theta).all()):
            raise LoihiConvError(f"threshold for {relu.name} must be {c} positive finite values, got "
                                 f"shape {tuple(theta.shape)} min {float(theta.min()):.3g}",
                                 "give one positive value per channel or one for the layer")
        v0 = torch.as_tensor(v_init, dtype=torch.float32).flatten()
        v0 = v0.expand(c).clone() if v0.numel() == 1 else v0
        if v0.shape != (c,):
            raise LoihiConvError(f"v_init for {relu.name} must be a scalar or {c} values, got shape "
                                 f"{tuple(v0.shape)}", "give one fraction of the threshold, e.g. 0.5")
        snn.replace(relu.name, ir.Neuron(relu.name, relu.inputs, relu.shape, model=neuron_model,
                                         threshold=theta, v_init=v0, params=dict(params or {})))
    return snn
