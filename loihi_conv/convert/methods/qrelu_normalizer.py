"""The "qrelu" normalizer (HPC eq. 16): thresholds from the clipping levels lambda a QReLU network
was trained with (``frontend.qrelu``), so the converted SNN has zero coding error on constant
input (theory in ``frontend.qrelu``)."""
from __future__ import annotations

import math

import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert.normalize import Normalizer, register_normalizer
from loihi_conv.frontend import ir
from loihi_conv.frontend.qrelu import MIN_CLIP, V_INIT, QReLUNode
from loihi_conv.snn.neurons import max_units, threshold_scale
from loihi_conv.snn.readouts import THRESHOLD_PROBE

Tensor = torch.Tensor


@register_normalizer("qrelu")
class QReLUNormalizer(Normalizer):
    """Thresholds from the trained QReLU clipping levels (HPC eq. 16): every QReLU's lambda,
    for every channel (lambda is per layer, so ``granularity`` changes nothing). ``to_snn``
    divides by S_max for multi-bit neurons: ``theta = lambda / S_max``. Checks that the recipe's
    neuron sends the S_max units per step the QReLU was trained for, and that v_init matches its
    rounding (module doc), since otherwise the coding error is back.
    """

    options = ("granularity", "neuron_model", "neuron_params", "v_init", "clip_round")
    key = "qrelu"
    knobs = None  # needs a model fine-tuned with QReLU: chosen by the user, never by the search

    def __init__(self, granularity: str = "channel", neuron_model: str = "if-soft",
                 neuron_params: dict | None = None, v_init: float = 0.0, clip_round: bool = False):
        super().__init__(granularity)
        self.neuron_model, self.neuron_params = neuron_model, dict(neuron_params or {})
        self.v_init, self.clip_round = float(v_init), bool(clip_round)

    def observers(self):
        return {"max": ("max", {})}  # only for the output probe, which has no lambda

    def thresholds(self, stats) -> dict[str, Tensor]:
        relus = list(stats.observers["post"])
        probes = [relu for relu in relus if relu.endswith(THRESHOLD_PROBE)]
        found = {relu: stats.graph[relu] for relu in relus if relu not in probes}
        plain = [relu for relu, node in found.items() if not isinstance(node, QReLUNode)]
        if plain:
            raise LoihiConvError(
                f"normalizer 'qrelu' needs QReLU activations, but {', '.join(plain)} "
                f"{'is a plain ReLU' if len(plain) == 1 else 'are plain ReLUs'}",
                "fine-tune the model with QReLU first (loihi-conv finetune-qrelu, or "
                "loihi_conv.app.qat.finetune), or use normalizer 'percentile'")
        out = {}
        for relu, node in found.items():
            self._check(relu, node)
            out[relu] = node.clip.reshape(1).expand(node.shape[0]).clone()  # lambda per layer
        for relu in probes:  # the output has no QReLU: max-norm (Diehl et al. 2015)
            top = stats.layer(relu, "max").clamp_min(MIN_CLIP)
            out[relu] = top.reshape(1).expand(stats.graph[relu].shape[0]).clone()
        return out

    def _check(self, relu: str, node: QReLUNode) -> None:
        probe = ir.Neuron("probe", (), model=self.neuron_model, params=self.neuron_params)
        units, scale = max_units(probe), threshold_scale(self.neuron_model, self.neuron_params)
        if units != node.s_max or not math.isclose(scale * node.s_max, 1.0):
            fix = ("use neuron_model 'if-soft' (--neuron if-soft)" if node.s_max == 1 else
                   f"use neuron_model 'if-multibit' with neuron_params {{s_max = {node.s_max}}} (a recipe "
                   f"TOML: neuron_model = \"if-multibit\" and [neuron_params] s_max = {node.s_max})")
            raise LoihiConvError(f"QReLU '{relu}' was trained for spikes of up to S_max={node.s_max} units, but "
                                 f"neuron model {self.neuron_model!r} {self.neuron_params or ''} sends up to "
                                 f"{units} per step at threshold lambda*{scale:g}", fix)
        want = V_INIT[node.rounding]
        if self.v_init != want or self.clip_round:
            got = f"v_init={self.v_init:g}" + (" with clip_round" if self.clip_round else "")
            raise LoihiConvError(f"QReLU '{relu}' rounds by {node.rounding}, which IF neurons reproduce only from "
                                 f"v(0) = {want:g} * threshold; the recipe has {got}",
                                 f"set v_init={want:g} (--v-init {want:g}) and clip_round=false")
