"""float IR -> SNN IR: observe activations, normalize them into thresholds, apply the seed papers'
methods (``methods/``), all chosen by a ``Recipe``. ``convert`` is the one verb; importing this
package registers every normalizer and method."""
from loihi_conv.convert import methods  # noqa: F401  (registers "mmse", "qrelu")
from loihi_conv.convert.conversion import as_graph, calibration_stream, convert
from loihi_conv.convert.recipe import Recipe

__all__ = ["Recipe", "as_graph", "calibration_stream", "convert"]
