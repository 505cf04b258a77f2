"""Threshold choice beyond max/percentile: the calibration paper's MMSE thresholds, the RetinaNet
paper's ReLU1 predictor and SpiCalib's Bayesian optimisation of the percentile p.

Layouts: activations are (N, C, *spatial) or (N, F) (channel = dim 1); thresholds are (C,).
"""
from __future__ import annotations

import math
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F

from loihi_conv import ir, ops
from loihi_conv.errors import LoihiConvError
from loihi_conv.normalize import Normalizer, _positive, register_normalizer
from loihi_conv.observe import Observer, _by_channel, register_observer

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
    k = torch.ceil(vth / x.clamp_min(torch.finfo(x.dtype).tiny))
    return vth / T * torch.clamp(torch.floor(T / k), 0, T)


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


# ---- ReLU1 predictor (RetinaNet paper §III-C) ----------------------------------------------
def relu1_output(snn: ir.Graph, x: Tensor) -> Tensor:
    """Output (N, classes) of the normalised, clipped ANN: every neuron replaced by
    ``min(ReLU(z), threshold)`` -- the RetinaNet paper's ReLU1 network (activations clipped to
    [0, 1] after normalisation), an approximate upper bound on the SNN without simulating it."""
    return ops.forward(snn, x)  # ops.apply(ir.Neuron) is exactly that clipped ReLU


def kl_divergence(reference: Tensor, output: Tensor) -> float:
    """SpiCalib eq. (12): ``KL(r || o) = sum_i r_i log(r_i / o_i)`` with r = softmax of the
    ANN output (the "real" distribution) and o = softmax of the SNN (or ReLU1) output, averaged
    over the batch. Both (N, classes)."""
    return float(F.kl_div(F.log_softmax(output, 1), F.log_softmax(reference, 1), log_target=True,
                          reduction="batchmean"))


SCORES: dict[str, Callable[[Tensor, Tensor, Tensor | None], float]] = {
    # higher is better
    "kl": lambda ref, out, y: -kl_divergence(ref, out),
    "accuracy": lambda ref, out, y: float((out.argmax(1) == (ref.argmax(1) if y is None else y)).float().mean()),
}


def relu1_predict(graph: ir.Graph, calib: Tensor, x: Tensor, percentiles: Sequence[float], recipe=None,
                  labels: Tensor | None = None, score: str = "accuracy") -> dict[float, float]:
    """Score each candidate percentile on the ReLU1 network (no SNN simulation): convert with
    ``recipe.replace(percentile=p)`` on ``calib`` and evaluate ``relu1_output`` on ``x``
    (N, *input shape) against ``labels`` (or the ANN's own predictions). Returns {p: score}."""
    from loihi_conv.convert import as_graph, convert
    from loihi_conv.recipe import Recipe

    recipe = recipe or Recipe()
    ann = as_graph(graph, tuple(x.shape[1:]))
    ref = ops.forward(ann, x)
    out = {}
    for p in percentiles:
        snn = convert(ann, calib, recipe.replace(percentile=float(p), normalizer="percentile"))
        out[float(p)] = SCORES[score](ref, relu1_output(snn, x), labels)
    return out


# ---- Bayesian optimisation of p (SpiCalib §3.5) --------------------------------------------
def snn_kl(graph: ir.Graph, calib: Tensor, x: Tensor, p: float, T: int, recipe=None) -> float:
    """SpiCalib eq. (12) for one p: KL(softmax(ANN(x)) || softmax(SNN(x)/T)) where the SNN is
    ``convert(graph, calib, recipe.replace(percentile=p))`` simulated for T steps."""
    from loihi_conv.convert import as_graph, convert
    from loihi_conv.recipe import Recipe
    from loihi_conv.simulate import simulate

    recipe = recipe or Recipe()
    ann = as_graph(graph, tuple(x.shape[1:]))
    snn = convert(ann, calib, recipe.replace(percentile=float(p), normalizer="percentile"))
    res = simulate(snn, x, [T], delay=recipe.delay, record=False)
    return kl_divergence(ops.forward(ann, x), res.mean_output(T))


def log_p(p: float) -> float:
    """Search coordinate for p: ``-log10(100 - p)`` (99 -> 0, 99.9 -> 1, 99.99 -> 2); the
    percentiles of interest (Rueckauer 2016: 99..99.999) are evenly spaced in it."""
    return -math.log10(100.0 - p)


def from_log_p(u: float) -> float:
    return 100.0 - 10.0 ** (-u)


def bayes_percentile(graph: ir.Graph, calib: Tensor, x: Tensor, T: int, recipe=None,
                     bounds: tuple[float, float] = (99.0, 99.999), init_points: int = 3, n_iter: int = 7,
                     seed: int = 0) -> tuple[float, list[tuple[float, float]]]:
    """SpiCalib eq. (13): ``argmin_p KL(r(D|p) || o(D|p))`` on one batch ``x`` by Bayesian
    optimisation (``bayes_opt``: Gaussian-process prior, expected-improvement acquisition),
    over ``-log10(100 - p)`` within ``bounds``. Budget: ``init_points + n_iter`` SNN runs.
    Returns (best p, [(p, KL) for every evaluation])."""
    from bayes_opt import BayesianOptimization, UtilityFunction

    lo, hi = bounds
    if not 0 < lo < hi < 100:
        raise LoihiConvError(f"percentile bounds {bounds} are invalid", "use 0 < low < high < 100, e.g. (99, 99.999)")
    history: list[tuple[float, float]] = []

    def target(u: float) -> float:
        p = from_log_p(u)
        kl = snn_kl(graph, calib, x, p, T, recipe)
        history.append((p, kl))
        return kl

    # Targets are -log KL (O(1) scale, so EI's xi is meaningful); the initial design spreads
    # init_points evenly over the bounds (ends included) instead of drawing them at random.
    a, b = log_p(lo), log_p(hi)
    opt = BayesianOptimization(f=lambda u: -math.log(max(target(u), 1e-12)), pbounds={"u": (a, b)},
                               random_state=seed, verbose=0, allow_duplicate_points=True)
    for i in range(init_points):
        opt.probe({"u": a + i * (b - a) / max(init_points - 1, 1)}, lazy=True)
    opt.maximize(init_points=0, n_iter=n_iter, acquisition_function=UtilityFunction(kind="ei", xi=0.01))
    best = min(history, key=lambda h: h[1])
    return best[0], history
