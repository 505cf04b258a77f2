"""The Python API in one import, mirroring the CLI step for step.

    from loihi_conv import api
    ref = api.load_model("mnist_cnn")                       # or "my_net.py:Net", weights=...
    snn = api.convert(ref.module, api.calibration_data(ref.dataset, api.Recipe()), api.Recipe())
    res = api.simulate(snn, x, timesteps=(16, 64))          # float SNN
    qnet = api.quantize(snn, "if-soft", timesteps=64, calib=calib)
    best = api.search_recipe(ref.module, ref.dataset, ref.input_shape, "if-soft", 8, budget=120)  # .recipe, .qnet
    api.save(qnet, "net.net"); results = api.run_lava("net.net", x_int, steps=68)
"""
from loihi_conv.app.models import resolve as load_model
from loihi_conv.app.pipeline import calibration_data, evaluate, test_data
from loihi_conv.app.qat import qrelu_model
from loihi_conv.app.recipe_search import search as search_recipe
from loihi_conv.app.scaleout import Scale  # evaluate(..., scale=Scale(workers=2)), search_recipe(..., scale=)
from loihi_conv.app.zoo import build_model, load_user_model
from loihi_conv.convert import Recipe, convert
from loihi_conv.emulate import emulate
from loihi_conv.emulate.quant_report import report
from loihi_conv.fixed.decode import encode, predictions, scores, steps_for
from loihi_conv.fixed.quantize import quantize
from loihi_conv.snn.simulate import simulate


def save(qnet, path, **kw):
    """Write a NetX file (``netx_export.save``)."""
    import netx_export

    return netx_export.save(qnet, path, **kw)


def load(path):
    """Read a NetX file, ours or lava-dl's (``netx_export.load``)."""
    import netx_export

    return netx_export.load(path)


def load_nir(source, dt: float | None = None, reset: str | None = None):
    """SNN IR of a NIR graph or ``.nir`` file (``loihi_conv.interop.load_nir``; rules in docs/nir.md):
    quantize, simulate and emulate it like a converted network."""
    from loihi_conv.interop import load_nir as run

    return run(source, dt=dt, reset=reset)


def to_nir(snn, path=None):
    """Our float SNN IR as a ``nir.NIRGraph``; with ``path``, also written there (``.nir``)."""
    from loihi_conv.interop import to_nir as run
    from loihi_conv.interop import write_nir

    if path is not None:
        write_nir(snn, path)
    return run(snn)


def run_lava(net, x_int, steps: int, hardware: bool = False, probes=None):
    """Run integer inputs (N, *input shape) through Lava one sample at a time, compiling once;
    returns the list of ``netx_export.LavaResult``."""
    from netx_export.runner import LavaRunner

    with LavaRunner(net, hardware=hardware) as runner:
        return [runner.run(x, steps, probes=probes) for x in x_int]


__all__ = ["Recipe", "Scale", "build_model", "calibration_data", "convert", "emulate", "encode", "evaluate", "load",
           "load_model", "load_nir", "load_user_model", "predictions", "qrelu_model", "quantize", "report", "run_lava", "save",
           "scores", "search_recipe", "simulate", "steps_for", "test_data", "to_nir"]
