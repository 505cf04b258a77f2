"""The post-normalization steps ``convert`` runs when the recipe asks for them, in order:
ClipRound bias -> voltage clamping -> LCP/ACP calibration (which so measures the final network)."""
from __future__ import annotations

import torch

from loihi_conv import ir
from loihi_conv.methods.calibrate import calibrate, clamp, clip_round_bias


def apply_methods(snn: ir.Graph, ann: ir.Graph, x: torch.Tensor, recipe) -> ir.Graph:
    """Apply the recipe's methods to the freshly normalized ``snn`` (ANN graph ``ann``,
    calibration batch x (N, *input shape) for the simulated calibrations)."""
    T = recipe.calib_timesteps
    if recipe.clip_round:
        snn = clip_round_bias(snn, T)
    if recipe.clamp_delay:
        snn = clamp(snn, recipe.clamp_delay)
    methods = tuple(m for m in ("lcp", "acp") if getattr(recipe, m))
    if methods:
        snn = calibrate(snn, ann, x, T, methods, delay=recipe.delay, granularity=recipe.acp_granularity)
    return snn
