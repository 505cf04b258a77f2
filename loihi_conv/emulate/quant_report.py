"""The quantization report with observed ranges: emulate calibration inputs and add the state
ranges and spike rates they reach to the worst-case analysis of ``fixed.ranges``."""
from __future__ import annotations

import numpy as np
import torch

from loihi_conv.base.limits import INT16_MAX, STATE_MAX
from loihi_conv.emulate.engine import emulate
from loihi_conv.fixed import qir
from loihi_conv.fixed.ranges import QuantReport, StateRange, build_report, default_steps, graded


def observed(qnet: qir.QNetwork, calib: torch.Tensor, steps: int) -> tuple[dict[str, list[StateRange]], dict[str, float]]:
    """Emulate ``qnet`` on calibration inputs (analog, N x input shape) for ``steps`` steps and
    return each block's recorded state ranges and mean spike (message) rate."""
    x = torch.as_tensor(np.asarray(calib) if not torch.is_tensor(calib) else calib).double()
    x_int = torch.round(x * qnet.input_scale).to(torch.int64)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: threads only add synchronisation cost
    try:
        res = emulate(qnet, x_int, steps, record=True)
    finally:
        torch.set_num_threads(n)
    ranges, rates = {}, {}
    for b in qnet.blocks:
        rs = []
        for k, arr in res.states.get(b.name, {}).items():
            if k != "s":
                mode = "saturate" if k == "v" else "wrap"
                rs.append(StateRange(k, int(arr.min()), int(arr.max()), STATE_MAX, mode))
            elif graded(b.neuron):  # the out-port message is a 16-bit graded spike
                rs.append(StateRange("payload", int(arr.min()), int(arr.max()), INT16_MAX, "payload"))
        ranges[b.name] = rs
        if b.name in res.spike_counts:
            rates[b.name] = float(res.spike_counts[b.name].mean()) / steps
    return ranges, rates


def report(qnet: qir.QNetwork, calib: torch.Tensor | np.ndarray | None = None, steps: int | None = None,
           samples: int = 32) -> QuantReport:
    """Describe ``qnet`` per block (``LayerReport``): scale, weight bits and max |W_int|, relative
    weight error (from ``meta``), bias and threshold ranges, worst-case state ranges over
    ``steps`` (default: ``meta['steps_run']``) and, with ``calib`` (analog inputs, N x input
    shape), the ranges observed by emulating the first ``samples`` of them. Flags (with the side,
    '-' or '+'): ``wrap-risk:u+`` (a wrapping state can exceed 2^23 in the worst case),
    ``clip-risk:v-`` (a saturating one can), ``payload-risk`` (16-bit graded spikes),
    ``overflow:*`` / ``saturated:*`` (observed on the data), plus the quantizer's own
    (``delay-mismatch``, ``model-approx``, ``threshold-raised``, ``no-theta-clip``)."""
    steps = int(steps or default_steps(qnet))
    obs, rates = observed(qnet, calib[:samples], steps) if calib is not None else ({}, {})
    return build_report(qnet, steps, obs, rates)
