"""Threshold choice beyond max/percentile: the calibration paper's MMSE thresholds (normalizer
"mmse") and the quantised activation functions they minimise the error of. Searches that convert
many times (ReLU1 predictor, Bayesian optimisation of p) are in ``convert.threshold_search``.

Layouts: activations are (N, C, *spatial) or (N, F) (channel = dim 1); thresholds are (C,).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.knobs import Choice
from loihi_conv.convert.normalize import Normalizer, _positive, register_normalizer
from loihi_conv.convert.observe import Observer, _by_channel, register_observer

Tensor = torch.Tensor


# ---- the SNN's quantised activation functions --------------------------------------------
def clip_floor(x: Tensor, T: int, vth: Tensor) -> Tensor:
    """Calibration paper eq. (10): ``Vth/T * clip(floor(T x / Vth), 0, T)`` -- the expected output
    of an IF neuron (reset by subtraction, v(0)=0) driven by a constant current x for T steps.
    ``vth`` broadcasts against ``x`` (pass (C, 1) for x in (C, M) rows)."""
    return vth / T * torch.clamp(torch.floor(T * x / vth), 0, T)


def clip_round(x: Tensor, T: int, vth: Tensor) -> Tensor:
    """Calibration paper eq. (17): ``Vth/T * clip(floor(T x / Vth + 1/2), 0, T)``; an IF neuron
    computes it when ``Vth/(2T)`` is added to its bias (or ``v(0) = Vth/2``)."""
    return vth / T * torch.clamp(torch.floor(T * x / vth + 0.5), 0, T)


def clip_zero(x: Tensor, T: int, vth: Tensor) -> Tensor:
    """The reset-to-zero IF neuron's (``if-zero``, the ``cuba`` target) output for a constant
    current x over T steps from v(0)=0: a spike every ``k = ceil(Vth / x)`` steps, the charge
    above threshold lost each time (Rueckauer et al. 2016 eq. 5), so
    ``Vth/T * min(floor(T / k), T)``. MMSE against this curve (instead of eq. 10/17, which model
    reset by subtraction) picks thresholds for the arithmetic that target actually runs."""
    k = torch.div(vth, x.clamp_min(torch.finfo(x.dtype).tiny)).ceil_()  # >= 1: floor(T / k) <= T
    return torch.div(torch.tensor(float(T), dtype=k.dtype), k, out=k).floor_().mul_(vth / T)


ROUNDINGS: dict[str, Callable[[Tensor, int, Tensor], Tensor]] = {"floor": clip_floor, "round": clip_round,
                                                                 "zero": clip_zero}


def mmse_threshold(x: Tensor, T: int, rounding: str = "round", grid: int = 100,
                   granularity: str = "channel", chunk: int = 10) -> Tensor:
    """Calibration paper eq. (18) / Algorithm 1: the threshold minimising
    ``mean (ClipRound(x, T, Vth) - ReLU(x))^2`` over ``grid`` candidates ``j/grid * max(x)``,
    j = 1..grid. ``x`` is ReLU output (N, C, ...); returns (C,) thresholds (``granularity``
    "channel": one search per channel; "layer": one search over all channels, broadcast)."""
    if rounding not in ROUNDINGS:
        raise LoihiConvError(f"unknown rounding {rounding!r}", f"use one of: {', '.join(ROUNDINGS)}")
    rows = _by_channel(x.float()).clamp_min(0)                      # (C, M)
    if granularity == "layer":
        rows = rows.reshape(1, -1)
    top = rows.amax(dim=1)                                           # (R,)
    fn = ROUNDINGS[rounding]
    best_err = torch.full_like(top, math.inf)
    best = top.clone()
    for j0 in range(1, grid + 1, chunk):
        js = torch.arange(j0, min(j0 + chunk, grid + 1), dtype=rows.dtype)
        cand = top[:, None] * js[None, :] / grid                     # (R, J)
        safe = torch.where(cand > 0, cand, torch.ones_like(cand))
        err = ((fn(rows[:, None, :], T, safe[:, :, None]) - rows[:, None, :]) ** 2).mean(dim=2)  # (R, J)
        e, i = err.min(dim=1)
        better = e < best_err
        best_err = torch.where(better, e, best_err)
        best = torch.where(better, cand.gather(1, i[:, None])[:, 0], best)
    if granularity == "layer":
        best = best.expand(x.shape[1]).clone()
    return best


@register_observer("samples")
class SampleObserver(Observer):
    """Keeps the raw activations of the first ``keep`` samples (for searches such as MMSE that
    need the values, not a statistic)."""

    def __init__(self, max_samples: int, keep: int = 256):
        super().__init__(max_samples)
        self.keep = keep
        self.parts: list[Tensor] = []
        self.kept = 0

    def _update(self, x: Tensor) -> None:
        if self.kept < self.keep:
            self.parts.append(x[: self.keep - self.kept].clone())
            self.kept += self.parts[-1].shape[0]

    def values(self) -> Tensor:
        return torch.cat(self.parts)


@register_normalizer("mmse")
class MMSENormalizer(Normalizer):
    """Thresholds minimising the ClipRound (or ClipFloor) MSE to the ReLU output for the readout
    window ``calib_timesteps`` (calibration paper §4.3, eq. 18, Algorithm 1, N = 100 grid points
    in [0, max]; channel-wise as the paper's "MMSE*" variant, layer-wise as its "MMSE")."""

    options = ("granularity", "calib_timesteps", "mmse_rounding", "mmse_samples")
    key = "samples"
    knobs = {**Normalizer.knobs, "mmse_rounding": Choice(("round", "floor", "zero"))}  # zero: reset-to-zero neurons

    def __init__(self, granularity: str = "channel", calib_timesteps: int = 32, mmse_rounding: str = "round",
                 mmse_samples: int = 256):
        super().__init__(granularity)
        self.T, self.rounding, self.keep = int(calib_timesteps), mmse_rounding, int(mmse_samples)

    def observers(self):
        return {"samples": ("samples", {"keep": self.keep})}

    def thresholds(self, stats) -> dict[str, Tensor]:
        out = {}
        for relu, obs in stats.observers["post"].items():
            th = mmse_threshold(obs["samples"].values(), self.T, self.rounding, granularity=self.granularity)
            out[relu] = _positive(th, th.max())
        return out
