"""convert, emulate, run-lava, verify: the fixed-point side (NetX files, emulator, Lava)."""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from pathlib import Path

import click
import numpy as np

from loihi_conv.app.commands.group import Ctx, check_steps, guarded, main, write_json
from loihi_conv.app.commands.options import model_options, pop_fixed, recipe_options, scale_options, search_options
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.fixed.quantize import TARGETS


def _progress(obj: Ctx, desc: str):
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, disable=obj.quiet, leave=False)


@contextlib.contextmanager
def _stage(obj: Ctx, what: str):
    """A status line before and after a long step without its own bar (a real-size network spends
    minutes in each), so a user sees where the time goes; stdout, like the report (stderr is for
    the one error line)."""
    t0 = time.perf_counter()
    obj.echo(f"{what} ...")
    yield
    obj.echo(f"{what}: done in {time.perf_counter() - t0:.1f} s")


def _load_net(path: str):
    import netx_export

    if not Path(path).is_file():
        raise LoihiConvError(f"NetX file {path} does not exist", "check the path, or create one with "
                             "'loihi-conv convert ... --out FILE.net'")
    return netx_export.load(path)


def _dataset_of(qnet, dataset: str | None, net: str, warn: bool = True) -> str:
    """The dataset to run ``qnet`` on; its images must fit the network's input layer.
    ``warn``: warn now if it is not the dataset the file was made for (else call
    ``warn_other_dataset`` once the caller's own checks passed)."""
    from loihi_conv.app.data import dataset_info

    ds = dataset or qnet.meta.get("dataset")
    if not isinstance(ds, str):  # None, or whatever a foreign file's meta holds
        raise LoihiConvError("the file does not say which dataset it was made for",
                             "pass --dataset mnist|fashion-mnist|digits or a .npz file (x_train, y_train, x_test, y_test)")
    image = tuple(dataset_info(ds).input_shape)
    if image != tuple(qnet.input.shape):
        made_for = qnet.meta.get("dataset")
        raise LoihiConvError(f"{net} takes inputs of shape {tuple(qnet.input.shape)} (C,H,W), but {ds} "
                             f"images are {image}",
                             f"pass --dataset {made_for}" if made_for and made_for != ds else
                             "pass the dataset the network was made for with --dataset")
    if warn:
        warn_other_dataset(qnet, ds, net)
    return ds


def warn_other_dataset(qnet, ds: str, net: str) -> None:
    """Same image shape, other data (an MNIST network on Fashion-MNIST): say so."""
    made_for = qnet.meta.get("dataset")
    if isinstance(made_for, str) and made_for != ds:
        warnings.warn(f"{net} was converted for {made_for}, not {ds}: its accuracy on {ds} says nothing "
                      f"about the conversion (drop --dataset to use {made_for})", stacklevel=2)


@main.command()
@model_options
@recipe_options
@search_options
@click.option("--target", type=click.Choice(sorted(TARGETS)), default="if-soft", show_default=True,
              help="cuba: standard NetX; if-soft: reset by subtraction (extension); sdnn: sigma-delta.")
@click.option("--timesteps", "-T", type=int, default=64, show_default=True, help="Readout window the scales are chosen for.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="NetX file to write (.net).")
@click.option("--force", is_flag=True, help="Export even if a value would clip, wrap or saturate on Loihi.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the quantization report here.")
@click.option("--nir", "nir_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the float SNN as a NIR graph (.nir) for other simulators (docs/nir.md).")
@click.option("--nir-dt", type=float, default=None,
              help="With --model FILE.nir: the time step dt of the discretization (default: the file's, else 1).")
@click.option("--nir-reset", type=click.Choice(["zero", "subtract"]), default=None,
              help="With --model FILE.nir: reset every neuron to zero or by subtraction (default: the file's).")
@scale_options
@click.pass_obj
@guarded
def convert(obj: Ctx, model, weights, dataset, target, timesteps, out, force, json_out, no_search, budget,
            trials, heldout, nir_out=None, nir_dt=None, nir_reset=None, scale=None, **kw) -> None:
    """Convert a model, quantize it for a Loihi 2 target and write a NetX file.

    By default the conversion recipe is searched: the options you give are kept, the others
    are chosen for the best accuracy of the fixed-point network at T on training images held out
    from calibration (--budget seconds; --no-search to take the defaults instead).

    \b
    Examples:
      loihi-conv convert --model mnist_cnn --target cuba --out mnist_cuba.net
      loihi-conv convert --model mnist_cnn -T 8 --budget 120 --out mnist_t8.net
      loihi-conv convert --model my.py:Net --weights w.pt --dataset mnist --target if-soft -o net.net
      loihi-conv convert --model net.nir --dataset events.npz --target cuba -T 32 -o net.net
      loihi-conv convert --model mnist_cnn --no-search --nir mnist.nir -o mnist.net
      loihi-conv convert --model fmnist_cnn -T 32 --trials 16 --workers 2 -o fmnist.net
    """
    from loihi_conv.app import models, nir_source, pipeline
    from loihi_conv.app.recipe_search import DEFAULT_BUDGET, DEFAULT_HELDOUT, describe
    from loihi_conv.app.scaleout import Scale

    check_steps(timesteps, "--timesteps", "-T 64")
    scale = (scale or Scale()).check()
    if nir_source.is_nir(model):  # already an SNN: no ANN conversion, no recipe search
        snn, qnet = nir_source.quantize(model, dataset, target, timesteps, force, nir_dt, nir_reset)
        _write_outputs(obj, qnet, out, json_out, target, snn, nir_out)
        return
    if nir_dt is not None or nir_reset is not None:
        raise LoihiConvError("--nir-dt / --nir-reset apply to a NIR model only", "pass --model FILE.nir, or drop them")
    searching = not no_search and kw["recipe_file"] is None  # a recipe file fixes every option
    recipe, fixed = pop_fixed(kw)
    ref = models.resolve(model, weights, dataset, progress=not obj.quiet)
    if searching:
        result = pipeline.search_recipe(ref, target, timesteps, fixed,
                                        budget=DEFAULT_BUDGET if budget is None and trials is None else budget,
                                        trials=trials, heldout=heldout or DEFAULT_HELDOUT, progress=not obj.quiet,
                                        scale=scale)
        obj.echo(result.summary())
        qnet = result.qnet
    else:
        with _stage(obj, f"convert: calibrate on {recipe.calib_size} training images, normalize"):
            snn, _ = pipeline.convert_model(ref, recipe, scale.device)
        try:
            with _stage(obj, f"quantize for {target}, T={timesteps}"):
                qnet = pipeline.quantize_snn(snn, ref, recipe, target, timesteps, force=force)
        except LoihiConvError as e:  # the Python API's "force=True" is --force here
            raise LoihiConvError(e.problem, e.fix and e.fix.replace("pass force=True", "pass --force")) from e
        obj.echo(f"recipe: {describe(recipe)}")
    if nir_out is not None and searching:
        snn = _searched_snn(ref, result.recipe)
    _write_outputs(obj, qnet, out, json_out, target, snn if nir_out is not None else None, nir_out)


def _searched_snn(ref, recipe):
    from loihi_conv.app import pipeline

    snn, _ = pipeline.convert_model(ref, recipe)
    return snn


def _write_outputs(obj: Ctx, qnet, out: str, json_out, target: str, snn=None, nir_out: str | None = None) -> None:
    import netx_export
    from loihi_conv.emulate.quant_report import report

    if nir_out is not None:  # checked before anything is written: an SNN NIR cannot carry fails cleanly
        from loihi_conv.interop import to_nir, write_nir

        to_nir(snn)
    with _stage(obj, f"write {out}"):
        path = netx_export.save(qnet, out)
    with _stage(obj, "quantization report"):
        rep = report(qnet)
    obj.echo(str(rep))
    obj.echo(f"wrote {path} ({target}, {len(qnet.blocks)} blocks, depth {qnet.depth})")
    if nir_out is not None:
        obj.echo(f"wrote {write_nir(snn, nir_out)} (the float SNN as a NIR graph)")
    write_json(json_out, {"path": str(path), "meta": qnet.meta})


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "input_path", type=click.Path(dir_okay=False), required=True,
              help="Integer input .npy in Lava's port layout: (W,H,C,T) or (N,T); (W,H,C) or (N,) static.")
@click.option("--steps", "-s", type=int, required=True, help="Steps to run.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="Output .npy: the output layer's out-port per step, (W,H,C,steps) or (N,steps).")
@click.option("--inject", type=click.Choice(["a_in", "bias"]), default="a_in", show_default=True,
              help="How the input reaches an input layer that has a neuron.")
@click.pass_obj
@guarded
def emulate(obj: Ctx, net: str, input_path: str, steps: int, out: str, inject: str) -> None:
    """Run a NetX file on the bit-exact emulator with Lava's port layouts.

    \b
    Example: loihi-conv emulate mnist.net --input x.npy --steps 64 --out y.npy
    """
    from loihi_conv.base import layout
    from loihi_conv.base.files import atomic_path
    from loihi_conv.emulate import emulate as run

    check_steps(steps, "--steps", "--steps 64")
    qnet = _load_net(net)
    x = _read_npy(input_path)
    if x.dtype.kind not in "biuf":  # complex, strings, datetimes, structured records
        raise LoihiConvError(f"input {input_path} has dtype {x.dtype}; Loihi inputs are real integers",
                             "save an integer array (e.g. numpy.int32) with numpy.save")
    in_shape = tuple(qnet.input.shape)
    lava_shape = tuple(reversed(in_shape))
    if x.shape == lava_shape:  # static
        x_t = layout.lava_to_torch(x[..., None])[0]
    elif x.ndim == len(in_shape) + 1 and x.shape[:-1] == lava_shape:
        x_t = layout.lava_to_torch(x)
    else:
        raise LoihiConvError(f"input {input_path} has shape {x.shape}; {net} expects {lava_shape + ('T',)} "
                             f"or {lava_shape} (Lava layout of input shape {in_shape})",
                             "transpose PyTorch (T,C,H,W) data to (W,H,C,T)")
    if not np.issubdtype(x.dtype, np.integer) and not np.all(np.mod(x, 1) == 0):
        raise LoihiConvError(f"input {input_path} holds non-integer values", "Loihi inputs are integers: round them")
    if x.size and np.abs(x.astype(np.float64)).max() >= 2.0**63:  # would wrap in int64
        raise LoihiConvError(f"input {input_path} holds values beyond the int64 range (up to "
                             f"{np.abs(x).max()})", "Loihi inputs are small integers: rescale them")
    check_state_fits(qnet, steps, "emulate", "fewer --steps or a smaller network")
    res = run(qnet, x_t[None].astype(np.int64), steps, inject=inject)
    y = layout.torch_to_lava(res.output[0])
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, y)
    obj.echo(f"wrote {out} {y.shape} ({int((y != 0).sum())} non-zero messages)")


def check_state_fits(qnet, steps: int, what: str, fix: str, samples: int = 1) -> None:
    """The memory a run claims, from the file's declared shapes, before allocating it: a few
    int64 arrays per neuron (states, synapse buffers) and the output recorded every step."""
    from loihi_conv.base.budget import check_fits

    neurons = sum(int(np.prod(b.shape)) for b in qnet.blocks)
    out = int(np.prod(qnet.blocks[-1].shape))
    check_fits(8.0 * samples * (16 * neurons + 2 * steps * out),
               f"{what} of {neurons} neurons for {steps} steps", fix)


def _read_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LoihiConvError(f"input file {path} does not exist", "check the path") from None
    except Exception as e:  # noqa: BLE001 - numpy raises many types for a bad file
        raise LoihiConvError(f"cannot read {path} as a .npy array ({type(e).__name__}: {e})",
                             "save it with numpy.save (no pickled objects)") from None


@main.command("run-lava")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default=None, help="Test set: a dataset name or a .npz file (default: the one the file was made for).")
@click.option("--samples", "-n", type=int, default=20, show_default=True)
@click.option("--timesteps", "-T", type=int, default=None, help="Readout window (default: the file's).")
@click.option("--hardware", is_flag=True, help="Run on Loihi 2 via Loihi2HwCfg (needs lava-loihi, INRC).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.pass_obj
@guarded
def run_lava(obj: Ctx, net, dataset, samples, timesteps, hardware, json_out) -> None:
    """Run test images through a NetX file on Lava (CPU simulator, or Loihi 2 with --hardware).

    \b
    Example: loihi-conv run-lava mnist.net --samples 20 --timesteps 64
    """
    from loihi_conv.app import pipeline
    from loihi_conv.fixed.decode import encode, predictions, steps_for
    from netx_export.runner import LavaRunner

    qnet = _load_net(net)
    ds = _dataset_of(qnet, dataset, net)
    T = _timesteps_of(qnet, timesteps)
    steps = steps_for(qnet, T)
    check_state_fits(qnet, steps, "the Lava run", "use a smaller network or fewer --timesteps")
    x, y = pipeline.test_data(ds, samples)
    x_int = encode(qnet, x)
    preds = []
    with LavaRunner(net, hardware=hardware) as runner:
        for i in _progress(obj, "lava")(range(len(x_int))):
            res = runner.run(x_int[i], steps)
            preds.append(int(predictions(qnet, res)[0]))
        timing = dict(runner.timing)
    acc = float((np.array(preds) == y.numpy()).mean())
    obj.echo(f"Lava {'Loihi 2' if hardware else 'CPU simulator'}: accuracy {100 * acc:.2f}% on {len(y)} "
             f"{ds} test images, T={T} ({steps} steps); {timing['run_s'] / max(timing['steps'], 1) * 1e3:.1f} ms/step")
    write_json(json_out, {"accuracy": acc, "samples": len(y), "timesteps": T, "steps": steps,
                          "predictions": preds, "timing": timing})


def _timesteps_of(qnet, timesteps: int | None) -> int:
    if timesteps is not None:
        return check_steps(timesteps, "--timesteps", "--timesteps 64")
    T = qnet.meta.get("timesteps")
    if T is None:
        raise LoihiConvError("no readout window: the file does not record one and --timesteps is missing",
                             "pass e.g. --timesteps 64")
    if isinstance(T, bool) or not isinstance(T, int):  # meta read from a file may hold anything
        raise LoihiConvError(f"the file records timesteps={T!r}, not an integer", "pass e.g. --timesteps 64")
    return check_steps(T, "the file's readout window", "--timesteps 64")


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default=None, help="Test set: a dataset name or a .npz file (default: the one the file was made for).")
@click.option("--samples", "-n", type=int, default=5, show_default=True)
@click.option("--timesteps", "-T", type=int, default=None, help="Readout window (default: the file's).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.pass_obj
@guarded
def verify(obj: Ctx, net, dataset, samples, timesteps, json_out) -> None:
    """Check the emulator against Lava step by step: every block's spikes and states.

    Exits with status 4 when any value differs.

    \b
    Example: loihi-conv verify mnist.net --samples 5 --timesteps 32
    """
    import sys

    from loihi_conv.app import pipeline
    from loihi_conv.app.verify import verify as run_verify

    qnet = _load_net(net)
    ds = _dataset_of(qnet, dataset, net)
    T = _timesteps_of(qnet, timesteps)
    x, y = pipeline.test_data(ds, samples)
    ver = run_verify(qnet, x, T, progress=_progress(obj, "verify"))
    obj.echo(ver.table())
    obj.echo(f"{ver.total_mismatches} mismatches in {ver.total_compared} compared values "
             f"({ver.samples} samples x {ver.steps} steps); predictions agree: "
             f"{ver.lava_predictions == ver.emulator_predictions}")
    write_json(json_out, dataclasses.asdict(ver))
    if ver.total_mismatches:
        sys.exit(4)
