"""Searches over conversions: each candidate is a full ``convert`` (so this module sits above
``to_snn``): the RetinaNet paper's ReLU1 predictor and SpiCalib's Bayesian optimisation of the
percentile p (eq. 12-13).

Layouts: inputs (N, *input shape); outputs (N, classes).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.conversion import as_graph, convert
from loihi_conv.convert.recipe import Recipe
from loihi_conv.frontend import ir, ops
from loihi_conv.snn.simulate import simulate

Tensor = torch.Tensor


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
