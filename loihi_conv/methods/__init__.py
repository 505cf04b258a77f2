"""Accuracy-at-low-latency methods from the seed papers, each a named Recipe option of
``convert``: MMSE thresholds (normalizer "mmse"), ClipRound bias, voltage clamping, LCP/ACP
calibration, ReLU1 predictor and Bayesian optimisation of the percentile, efficiency numbers."""
from loihi_conv.methods.thresholds import (MMSENormalizer, bayes_percentile, clip_floor, clip_round,  # noqa: F401
                                           kl_divergence, mmse_threshold, relu1_output, relu1_predict, snn_kl)
from loihi_conv.methods.calibrate import calibrate, clamp, clip_round_bias  # noqa: F401
from loihi_conv.methods.efficiency import Efficiency, efficiency  # noqa: F401
from loihi_conv.methods.apply import apply_methods  # noqa: F401
