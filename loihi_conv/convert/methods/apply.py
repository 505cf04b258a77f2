"""The post-normalization steps ``convert`` runs when the recipe asks for them, in order:
ClipRound bias -> voltage clamping -> LCP/ACP calibration (which so measures the final network)."""
from __future__ import annotations

import torch

from loihi_conv.base.knobs import Choice, Knobs
from loihi_conv.convert.methods.calibrate import WeightCalibration, calibrate, clamp, clip_round_bias
from loihi_conv.frontend import ir
from loihi_conv.snn.pooling import POOLING_SCHEMES

# The recipe switches of these methods and what the recipe search may choose for them; a target
# lists the ones whose effect it keeps (``fixed.quantize.register_target(recipe_knobs=...)``).
METHOD_KNOBS: Knobs = {
    "v_init": Choice((0.0, 0.5)),          # RetinaNet paper: unbiased quantization (v(0) = theta/2)
    "clip_round": Choice((False, True)),   # calibration paper eq. 17
    "clamp_delay": Choice((0, 1, 2)),      # RetinaNet paper: voltage clamping
    "lcp": Choice((False, True)),          # calibration paper eq. 20
    "acp": Choice((False, True)),          # calibration paper eq. 22
    "acp_weights": Choice((False, True), requires=("acp", True)),  # calibration paper eq. 23
    "max_pool": Choice(tuple(POOLING_SCHEMES), only_for=ir.MaxPool2d),  # spiking max-pool scheme
}


def apply_methods(snn: ir.Graph, ann: ir.Graph, x: torch.Tensor | None, recipe, device=None) -> ir.Graph:
    """Apply the recipe's methods to the freshly normalized ``snn`` (ANN graph ``ann``,
    calibration samples x (N, *input shape) for the simulated calibrations: LCP and the ACP
    potential use the first ``calib_sim_size``, the ACP weights up to ``calib_size``); LCP/ACP
    simulate on ``device`` (``base.devices``, default cpu)."""
    T = recipe.calib_timesteps
    snn = snn.copy()
    snn.meta["recipe"] = recipe.to_dict()  # the simulations below honour e.g. its max_pool scheme
    if recipe.clip_round:
        snn = clip_round_bias(snn, T)
    if recipe.clamp_delay:
        snn = clamp(snn, recipe.clamp_delay)
    methods = tuple(m for m in ("lcp", "acp") if getattr(recipe, m))
    weights = (WeightCalibration(recipe.acp_iterations, recipe.acp_lr, seed=recipe.seed)
               if recipe.acp_weights else None)
    if methods or weights:
        snn = calibrate(snn, ann, x[:recipe.calib_sim_size], T, methods, delay=recipe.delay,
                        granularity=recipe.acp_granularity, weights=weights, x_weights=x[:recipe.calib_size],
                        device=device)
    return snn
