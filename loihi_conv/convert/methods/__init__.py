"""Accuracy-at-low-latency methods from the seed papers, each a named Recipe option of
``convert``: MMSE thresholds (normalizer "mmse"), QReLU thresholds (normalizer "qrelu"),
ClipRound bias, voltage clamping, LCP/ACP calibration, efficiency numbers. Importing this
package registers its normalizers."""
from loihi_conv.convert.methods import qrelu_normalizer  # noqa: F401  (registers the "qrelu" normalizer)
from loihi_conv.convert.methods.apply import apply_methods  # noqa: F401
from loihi_conv.convert.methods.calibrate import calibrate, clamp, clip_round_bias  # noqa: F401
from loihi_conv.convert.methods.efficiency import Efficiency, efficiency  # noqa: F401
from loihi_conv.convert.methods.thresholds import MMSENormalizer, clip_floor, clip_round, mmse_threshold  # noqa: F401
