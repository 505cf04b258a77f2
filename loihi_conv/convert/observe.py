"""Activation statistics for data-based normalization, streamed over calibration batches.

For every ``ir.ReLU`` node we watch two sites: ``"pre"`` (the ReLU's input, the synaptic
current the spiking neuron will integrate) and ``"post"`` (the ReLU output, the activation the
neuron's rate has to reproduce). Observers are small classes registered by name (like
``torch.ao.quantization`` observers); each keeps per-channel *and* layer-wise results.

Layouts at the border: observers receive activations (N, C, *spatial) or (N, F) -- channel is
dim 1 and a vector's features count as channels; results are (C,) per channel and a 0-dim
tensor for the layer.

Exact streaming percentiles. The numpy/torch "linear" p-th percentile of n values sorted
ascending ``v[0..n-1]`` reads ``v[lo]`` and ``v[lo+1]`` with ``lo = floor(p/100 * (n-1))``, i.e.
only the values ranked at most ``ceil((1-p/100) * (n-1))`` from the top. So an observer that
knows an upper bound ``n_max`` on the values it will see keeps the running top
``k = ceil((1-p/100) * (n_max-1)) + 2`` values (a streaming ``torch.topk`` merge) and its
percentile is *exact*, not approximate. Memory is ``k`` floats per channel (plus ``k*C`` for
the layer): for 1024 images of 28x28 positions, p=99.99 keeps 83 values per channel. The cost
grows as ``1 - p/100``, so low percentiles (p < ~99) get expensive; the papers use 99..99.999.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Mapping

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.registry import lookup, registrar
from loihi_conv.frontend import ir, ops

Tensor = torch.Tensor

OBSERVERS: dict[str, type["Observer"]] = {}
SITES = ("pre", "post")


register_observer = registrar(OBSERVERS, "observer")


def make_observer(name: str, max_samples: int, **options) -> "Observer":
    """Instantiate the observer registered as ``name`` for at most ``max_samples`` samples."""
    cls = lookup(OBSERVERS, name, "observer")
    return cls(max_samples=max_samples, **options)


def _by_channel(x: Tensor) -> Tensor:
    """(N, C, *spatial) -> (C, N * positions)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


class Observer:
    """Streaming per-channel statistic. ``update`` takes (N, C, ...) batches; ``channel()`` gives
    the (C,) result and ``layer()`` the statistic over all channels (a 0-dim tensor)."""

    name: ClassVar[str] = ""

    def __init__(self, max_samples: int):
        self.max_samples = max_samples
        self.samples = 0

    def update(self, x: Tensor) -> None:
        self.samples += x.shape[0]
        if self.samples > self.max_samples:
            raise ValueError(f"{type(self).__name__} sized for {self.max_samples} samples got {self.samples}")
        self._update(x.detach().float())

    def _update(self, x: Tensor) -> None:
        raise NotImplementedError

    def channel(self) -> Tensor:
        raise NotImplementedError

    def layer(self) -> Tensor:
        raise NotImplementedError


@register_observer("max")
class MaxObserver(Observer):
    """Running maximum (the "max-norm" statistic of Diehl et al. 2015 / Rueckauer 2016 §3.2.1)."""

    def __init__(self, max_samples: int):
        super().__init__(max_samples)
        self._max: Tensor | None = None

    def _update(self, x: Tensor) -> None:
        m = _by_channel(x).amax(dim=1)
        self._max = m if self._max is None else torch.maximum(self._max, m)

    def channel(self) -> Tensor:
        return self._max.clone()

    def layer(self) -> Tensor:
        return self._max.max()


class _TopK:
    """Exact running top-k of each row of (R, n) batches, plus the count of counted values."""

    def __init__(self, k_of: Callable[[int], int], nonzero: bool):
        self.k_of = k_of  # row capacity (values per row it may ever see) -> k
        self.nonzero = nonzero
        self.top: Tensor | None = None  # (R, <=k) descending
        self.count: Tensor | None = None  # (R,) number of counted values seen

    def update(self, rows: Tensor, capacity: int) -> None:
        counted = (rows > 0).sum(1) if self.nonzero else torch.full((rows.shape[0],), rows.shape[1])
        if self.top is None:
            self.k = self.k_of(capacity)
            self.count = torch.zeros(rows.shape[0], dtype=torch.int64)
            merged = rows
        else:
            merged = torch.cat([self.top, rows], dim=1)
        self.count += counted
        self.top = merged.topk(min(self.k, merged.shape[1]), dim=1).values

    def percentile(self, p: float) -> Tensor:
        """The "linear" percentile per row, from the kept top values (exact, see module doc)."""
        n = self.count.to(torch.float64)
        pos = (p / 100.0) * (n - 1).clamp(min=0)
        lo = pos.floor()
        frac = (pos - lo).to(self.top.dtype)
        rank_lo = (n - 1 - lo).clamp(min=0).to(torch.int64)  # rank from the top of v[lo]
        rank_hi = (rank_lo - 1).clamp(min=0)                 # v[lo + 1] (= v[lo] at the top)
        if int(rank_lo.max()) >= self.top.shape[1]:
            raise ValueError("percentile needs more kept values than the observer's capacity")
        v_lo = self.top.gather(1, rank_lo[:, None])[:, 0]
        v_hi = self.top.gather(1, rank_hi[:, None])[:, 0]
        out = v_lo + (v_hi - v_lo) * frac
        return torch.where(self.count > 0, out, torch.zeros_like(out))  # nothing counted -> 0


@register_observer("percentile")
class PercentileObserver(Observer):
    """Exact streaming p-th percentile (Rueckauer et al. 2016 §3.2.2, "robust normalization";
    per channel as in Kim et al. 2019 / the RetinaNet paper eq. 2).

    ``nonzero=True`` takes the percentile of the strictly positive values only, as the
    reference implementation (SNN Toolbox ``normalize_parameters``) does on ReLU outputs, so
    sparse layers are not dragged towards zero. The percentile is numpy's default "linear"
    interpolation; exactness relies on ``max_samples`` bounding the samples seen (module doc).
    """

    def __init__(self, max_samples: int, p: float = 99.99, nonzero: bool = False):
        super().__init__(max_samples)
        if not 0.0 < p <= 100.0:
            raise LoihiConvError(f"percentile p={p} is out of range", "use 0 < p <= 100, e.g. 99.99")
        self.p = float(p)
        self.nonzero = nonzero
        keep = lambda cap: min(cap, math.ceil((1.0 - self.p / 100.0) * (cap - 1)) + 2)  # noqa: E731
        self._channel = _TopK(keep, nonzero)
        self._layer = _TopK(keep, nonzero)

    def _update(self, x: Tensor) -> None:
        rows = _by_channel(x)
        per_sample = rows.shape[1] // x.shape[0]  # positions per sample and channel
        self._channel.update(rows, self.max_samples * per_sample)
        self._layer.update(rows.reshape(1, -1), self.max_samples * per_sample * rows.shape[0])

    def channel(self) -> Tensor:
        return self._channel.percentile(self.p)

    def layer(self) -> Tensor:
        return self._layer.percentile(self.p)[0]


# An observer request: key -> (registered observer name, constructor options).
ObserverSpec = Mapping[str, tuple[str, dict]]


@dataclass
class ActivationStats:
    """Observers per ReLU node and site: ``observers[site][relu_name][key]``; ``graph`` is the
    ANN they observed (a normalizer may read trained parameters of the ReLU nodes, e.g. QReLU)."""

    n_samples: int
    observers: dict[str, dict[str, dict[str, Observer]]] = field(default_factory=dict)
    graph: ir.Graph | None = None

    def channel(self, relu: str, key: str, site: str = "post") -> Tensor:
        """(C,) per-channel statistic ``key`` of ReLU ``relu`` at ``site``."""
        return self.observers[site][relu][key].channel()

    def layer(self, relu: str, key: str, site: str = "post") -> Tensor:
        """0-dim layer-wise statistic ``key`` of ReLU ``relu`` at ``site``."""
        return self.observers[site][relu][key].layer()


def _take(batches: Iterable[Tensor], max_samples: int) -> Iterable[Tensor]:
    """Yield batches until ``max_samples`` samples are reached (the last one truncated)."""
    seen = 0
    for xb in batches:
        if seen >= max_samples:
            return
        xb = xb[: max_samples - seen]
        seen += xb.shape[0]
        yield xb


@torch.no_grad()
def observe(graph: ir.Graph, batches: Iterable[Tensor], observers: ObserverSpec,
            max_samples: int = 1024, sites: tuple[str, ...] = SITES) -> ActivationStats:
    """Run the ANN ``graph`` over calibration ``batches`` (each (B, *input shape)) and collect
    ``observers`` (``{key: (name, options)}``, e.g. ``{"p": ("percentile", {"p": 99.9})}``) at
    every ReLU's ``sites``. Uses at most ``max_samples`` samples (the observers' exactness bound).
    """
    relus = [n for n in graph.of_type(ir.ReLU)]
    stats = ActivationStats(0, {
        site: {r.name: {k: make_observer(name, max_samples, **opts) for k, (name, opts) in observers.items()}
               for r in relus}
        for site in sites}, graph)
    for xb in _take(batches, max_samples):
        _, acts = ops.forward(graph, xb, record=True)
        stats.n_samples += xb.shape[0]
        for r in relus:
            site_values = {"pre": acts[r.inputs[0]], "post": acts[r.name]}
            for site in sites:
                for obs in stats.observers[site][r.name].values():
                    obs.update(site_values[site])
    return stats
