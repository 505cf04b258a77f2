"""``Recipe``: every ANN -> SNN conversion option in one validated, TOML-serialisable dataclass.

A recipe is stored in ``graph.meta["recipe"]`` (as ``to_dict()``) by ``convert`` and travels on
into the quantized network and exported files, so a conversion can always be reproduced.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli
import tomli_w

from loihi_conv.base.errors import LoihiConvError, reject_unknown

# Registries only: they are filled where the methods are defined (``loihi_conv.convert`` imports
# its normalizers, ``loihi_conv.snn.neurons`` its models), never by importing plugins from here.
from loihi_conv.convert.methods.thresholds import ROUNDINGS
from loihi_conv.convert.normalize import GRANULARITIES, NORMALIZERS
from loihi_conv.snn.neurons import NEURON_MODELS, has_count_curve, threshold_scale
from loihi_conv.snn.pooling import POOLING_SCHEMES
from loihi_conv.snn.readouts import READOUTS


@dataclass
class Recipe:
    """Conversion options.

    normalizer      registered normalizer name (``normalize.NORMALIZERS``): "max" or "percentile".
    percentile      p for the "percentile" normalizer, 0 < p <= 100 (Rueckauer 2016: 99..99.999).
    granularity     "channel" (Kim et al. 2019) or "layer" (Diehl 2015 / Rueckauer 2016).
    nonzero         percentile over positive activations only (SNN Toolbox reference behaviour).
    neuron_model    registered neuron model name (``neurons.NEURON_MODELS``).
    v_init          initial membrane potential as a fraction of the threshold (0.5 = the
                    RetinaNet paper's "unbiased quantization").
    delay           1: one step per synapse (Lava, emulator); 0: same-step propagation.
    timesteps       readout windows T used when evaluating the converted network.
    calib_size      calibration samples used at most (the first ones of an iterable; a seeded
                    random subset of a larger tensor).
    calib_batch_size  samples per forward pass while calibrating.
    min_calib_size  fewer calibration samples than this (or than calib_size, if smaller) is an
                    error: thresholds from a handful of images do not generalize.
    seed            seed for the calibration subset (and the "softmax" output's generator).
    neuron_params   model-specific options put on every neuron (``ir.Neuron.params``), e.g.
                    {s_max = 2} for "if-multibit"/"if-buffered", {burst = 5} for "if-burst".
    max_pool        spiking max-pool scheme (``pooling.POOLING_SCHEMES``) MaxPool2d nodes run
                    with: "mli" (lossless, default), "rate-gate", "spike-max", "avg" (the
                    average-pooling replacement baseline; folded into the next synapse),
                    "relu-tree" (exact max as grouped conv + ReLU layers: what sdnn runs).
    output          output readout (``outputs.READOUTS``): "potential" (summed output
                    potential, default), "spikes" (IF output neurons, spike count), "softmax"
                    (Rueckauer 2016 §3.5 spiking softmax, seeded by ``seed``; on the fixed-point
                    targets a host-side decode of the per-step potential).
    --- accuracy-at-low-latency methods (loihi_conv.convert.methods) ---
    calib_timesteps T the methods below optimise for (MMSE, ClipRound, LCP, ACP).
    mmse_rounding   "round" (ClipRound, eq. 17), "floor" (ClipFloor, eq. 10) or "zero" (the
                    reset-to-zero neuron of if-zero/cuba) objective of the "mmse" normalizer;
                    mmse_samples: calibration samples it searches on.
    clip_round      add theta/(2T) to every neuron's bias (calibration paper eq. 17).
    clamp_delay     voltage clamping: layer l silent for its first clamp_delay * l steps (0: off).
    lcp             bias calibration (calibration paper, LCP, eq. 20).
    acp             potential calibration v(0) = T e (calibration paper, ACP, eq. 22).
    acp_granularity "neuron" (the paper; float SNN only) or "channel" (exports to if-soft).
    calib_sim_size  calibration samples simulated by LCP/ACP (one batch, the paper).
    acp_weights     calibrate each layer's weights (calibration paper, ACP weights calibration,
                    eq. 23) on up to calib_size samples (the paper: 1024), on the neuron's own
                    constant-input count curve (``NeuronModel.count_curve``); the paper runs it
                    with acp, the reset-to-zero neuron (if-zero, cuba: no v(0)) without.
    acp_iterations  Adam steps per layer of the weights calibration (the paper: 5000).
    acp_lr          initial learning rate of those steps, cosine-decayed to 0 (the paper: 1e-5
                    with SGD; Adam here, see methods.calibrate.WeightCalibration).
    --- quantization ---
    weight_rounding how the quantizer rounds weights to integers (``fixed.quantize.WEIGHT_ROUNDINGS``):
                    "nearest" or "gptq" (data-aware rounding on the calibration messages).
    """

    normalizer: str = "percentile"
    percentile: float = 99.99
    granularity: str = "channel"
    nonzero: bool = True
    neuron_model: str = "if-soft"
    v_init: float = 0.0
    delay: int = 1
    timesteps: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256)
    calib_size: int = 1024
    calib_batch_size: int = 256
    min_calib_size: int = 16
    seed: int = 0
    neuron_params: dict[str, Any] = field(default_factory=dict)
    max_pool: str = "mli"
    output: str = "potential"
    calib_timesteps: int = 32
    mmse_rounding: str = "round"
    mmse_samples: int = 256
    clip_round: bool = False
    clamp_delay: int = 0
    lcp: bool = False
    acp: bool = False
    acp_granularity: str = "neuron"
    calib_sim_size: int = 256
    acp_weights: bool = False
    acp_iterations: int = 300
    acp_lr: float = 3e-4
    weight_rounding: str = "nearest"

    def __post_init__(self) -> None:
        if not isinstance(self.timesteps, (list, tuple)):
            raise LoihiConvError(f"recipe: timesteps={self.timesteps!r} must be a list of positive integers",
                                 f"write timesteps = [{self.timesteps!r}]" if _is_int(self.timesteps)
                                 else "write e.g. timesteps = [16, 64, 256]")
        self.timesteps = tuple(self.timesteps)
        self.validate()

    def validate(self) -> "Recipe":
        """Raise LoihiConvError naming the first bad option and how to fix it."""

        def bad(problem: str, fix: str) -> None:
            raise LoihiConvError(f"recipe: {problem}", fix)

        if self.normalizer not in NORMALIZERS:
            bad(f"unknown normalizer {self.normalizer!r}", f"use one of: {', '.join(sorted(NORMALIZERS))}")
        if self.neuron_model not in NEURON_MODELS:
            bad(f"unknown neuron_model {self.neuron_model!r}", f"use one of: {', '.join(sorted(NEURON_MODELS))}")
        if self.granularity not in GRANULARITIES:
            bad(f"unknown granularity {self.granularity!r}", f"use one of: {', '.join(GRANULARITIES)}")
        if not _is_number(self.percentile) or not 0.0 < self.percentile <= 100.0:
            bad(f"percentile={self.percentile!r} is out of range", "use 0 < percentile <= 100, e.g. 99.99")
        if not _is_number(self.v_init) or not 0.0 <= self.v_init < 1.0:
            bad(f"v_init={self.v_init!r} is out of range", "use a fraction of the threshold in [0, 1), e.g. 0.5")
        if self.delay not in (0, 1) or isinstance(self.delay, bool):
            bad(f"delay={self.delay!r} is not supported", "use 1 (Lava timing) or 0 (same-step propagation)")
        if not self.timesteps or not all(_is_int(t) and t > 0 for t in self.timesteps):
            bad(f"timesteps={list(self.timesteps)} must be positive integers", "use e.g. [16, 64, 256]")
        for name in ("calib_size", "calib_batch_size", "min_calib_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                bad(f"{name}={value!r} must be a positive integer", f"use e.g. {name}={getattr(Recipe, name)}")
        for name in ("calib_timesteps", "mmse_samples", "calib_sim_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
                bad(f"{name}={getattr(self, name)!r} must be a positive integer", f"use e.g. {name}={getattr(Recipe, name)}")
        if not _is_int(self.clamp_delay) or self.clamp_delay < 0:
            bad(f"clamp_delay={self.clamp_delay!r} must be an integer >= 0", "use 0 (off) or e.g. 1")
        if self.mmse_rounding not in ROUNDINGS:
            bad(f"mmse_rounding={self.mmse_rounding!r} is unknown", f"use one of: {', '.join(ROUNDINGS)}")
        if self.acp_granularity not in ("neuron", "channel"):
            bad(f"acp_granularity={self.acp_granularity!r} is unknown", "use 'neuron' or 'channel'")
        if not isinstance(self.acp_weights, bool):
            bad(f"acp_weights={self.acp_weights!r} must be true or false", "use acp_weights=true")
        if self.acp_weights and not has_count_curve(self.neuron_model, self.neuron_params):
            bad(f"acp_weights fits the neuron's constant-input spike count, which {self.neuron_model!r} "
                f"{self.neuron_params or ''} has no closed form for",
                "use neuron_model 'if-soft', 'if-zero', 'if-burst' or 'if-multibit' with s_max <= 2, "
                "or acp_weights=false")
        if not _is_int(self.acp_iterations) or self.acp_iterations <= 0:
            bad(f"acp_iterations={self.acp_iterations!r} must be a positive integer",
                f"use e.g. acp_iterations={Recipe.acp_iterations}")
        if not _is_number(self.acp_lr) or not 0.0 < self.acp_lr < float("inf"):
            bad(f"acp_lr={self.acp_lr!r} must be a positive finite number", f"use e.g. acp_lr={Recipe.acp_lr}")
        for name in ("clip_round", "lcp", "acp"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name}={getattr(self, name)!r} must be true or false", f"use {name}=true")
        if not _is_int(self.seed):
            bad(f"seed={self.seed!r} must be an integer", "use e.g. seed=0")
        if not isinstance(self.neuron_params, dict):
            bad(f"neuron_params={self.neuron_params!r} must be a table", "use e.g. neuron_params={'s_max': 2}")
        for key, value in self.neuron_params.items():  # counts and step allowances: never negative
            if _is_number(value) and value < 0:
                bad(f"neuron_params {key}={value!r} must be >= 0", f"use e.g. neuron_params={{{key!r}: 2}}")
        try:
            threshold_scale(self.neuron_model, self.neuron_params)  # raises on a bad model option
        except LoihiConvError as e:
            bad(f"neuron_params for {self.neuron_model!r}: {e.problem.split(': ', 1)[-1]}", e.fix or "")
        if self.max_pool not in POOLING_SCHEMES:
            bad(f"unknown max_pool {self.max_pool!r}", f"use one of: {', '.join(sorted(POOLING_SCHEMES))}")
        if not isinstance(self.output, str) or self.output not in READOUTS:
            bad(f"unknown output {self.output!r}", f"use one of: {', '.join(sorted(READOUTS))}")
        if not isinstance(self.weight_rounding, str):  # its names are checked by the quantizer
            bad(f"weight_rounding={self.weight_rounding!r} must be a name", "use 'nearest' or 'gptq'")
        if not isinstance(self.nonzero, bool):
            bad(f"nonzero={self.nonzero!r} must be true or false", "use nonzero=true")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML/JSON-friendly dict (tuples become lists)."""
        d = asdict(self)
        d["timesteps"] = list(self.timesteps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        """Build and validate a recipe; unknown keys are an error listing the known ones."""
        reject_unknown(d, {f.name for f in fields(cls)}, "recipe")
        return cls(**d)

    def to_toml(self, path: str | Path) -> Path:
        """Write the recipe as a flat TOML table."""
        path = Path(path)
        path.write_text(tomli_w.dumps(self.to_dict()))
        return path

    @classmethod
    def from_toml(cls, path: str | Path) -> "Recipe":
        """Read a recipe written by ``to_toml`` (or by hand); missing keys take defaults."""
        path = Path(path)
        try:
            d = tomli.loads(path.read_text())
        except FileNotFoundError:
            raise LoihiConvError(f"recipe file {path} does not exist", "check the path") from None
        except tomli.TOMLDecodeError as e:
            raise LoihiConvError(f"recipe file {path} is not valid TOML ({e})", "fix the syntax") from None
        except (UnicodeDecodeError, OSError) as e:  # binary file, a directory, no permission
            raise LoihiConvError(f"cannot read recipe file {path} as UTF-8 text ({type(e).__name__}: {e})",
                                 "pass a TOML text file, e.g. one written by Recipe.to_toml") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "Recipe":
        """A validated copy with some options changed."""
        return Recipe.from_dict({**self.to_dict(), **changes})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
