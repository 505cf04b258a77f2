"""score: the accuracy of a NetX file on a labelled test set, on the emulator or on Lava."""
from __future__ import annotations

import sys
import time

import click
import numpy as np

from loihi_conv.app.commands.fixed_cmds import _dataset_of, _load_net, _progress, _timesteps_of, warn_other_dataset
from loihi_conv.app.commands.group import Ctx, guarded, main, write_json
from loihi_conv.app.commands.options import scale_options
from loihi_conv.base.errors import LoihiConvError

LAVA_SAMPLES = 5  # each image compiles and runs the whole network on Lava's CPU simulator


@main.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default=None,
              help="mnist | fashion-mnist | digits | path/to/data.npz (default: the one the file was made for).")
@click.option("--samples", "-n", type=int, default=None,
              help=f"First n test images (default: all on the emulator, {LAVA_SAMPLES} on Lava).")
@click.option("--backend", type=click.Choice(["emulator", "lava"]), default="emulator", show_default=True,
              help="emulator: bit-exact and batched; lava: Lava's CPU simulator, checked against the emulator.")
@click.option("--timesteps", "-T", type=int, default=None, help="Readout window (default: the file's).")
@click.option("--batch-size", "-b", type=int, default=256, show_default=True, help="Emulator images per batch.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the results here.")
@scale_options
@click.pass_obj
@guarded
def score(obj: Ctx, net, dataset, samples, backend, timesteps, batch_size, json_out, scale=None) -> None:
    """Accuracy of NET on the test split of a labelled dataset, decoded with the file's readout.

    With --backend lava the same images also run on the emulator and the command reports whether
    the predictions agree (exit status 4 if they do not).

    \b
    Examples:
      loihi-conv score mnist.net
      loihi-conv score net.net --dataset my_data.npz --samples 1000 --json score.json
      loihi-conv score mnist.net --backend lava --samples 5
      loihi-conv score mnist.net --workers 2
      loihi-conv score mnist.net --ray local
    """
    from loihi_conv.app import pipeline
    from loihi_conv.app.data import dataset_info
    from loihi_conv.fixed.decode import steps_for
    from loihi_conv.snn.readouts import readout_name

    if batch_size <= 0:
        raise LoihiConvError(f"--batch-size must be positive, got {batch_size}", "pass e.g. --batch-size 256")
    from loihi_conv.app.scaleout import Scale

    scale = (scale or Scale()).check()
    qnet = _load_net(net)
    ds = _dataset_of(qnet, dataset, net, warn=False)
    T = _timesteps_of(qnet, timesteps)
    classes = dataset_info(ds).num_classes
    outputs = int(np.prod(qnet.output.shape))
    if classes > outputs:
        raise LoihiConvError(f"{ds} has {classes} classes (labels 0..{classes - 1}), but {net} has only "
                             f"{outputs} outputs", "score the network on the dataset it was trained for")
    warn_other_dataset(qnet, ds, net)
    x, y = pipeline.test_data(ds, samples if samples is not None or backend == "emulator" else LAVA_SAMPLES)
    labels = y.numpy()
    steps = steps_for(qnet, T)
    readout = readout_name(qnet)

    emu_preds, emu_s = _emulate(obj, qnet, x, T, batch_size, scale)
    result = {"net": str(net), "dataset": ds, "backend": backend, "readout": readout, "samples": len(labels),
              "timesteps": T, "steps": steps, "scale": _scale_of(scale)}
    if backend == "emulator":
        result.update(_accuracy(emu_preds, labels), seconds=emu_s, predictions=emu_preds.tolist())
        obj.echo(_line("emulator", result))
        write_json(json_out, result)
        return

    lava_preds, lava_s = _lava(obj, net, qnet, x, steps)
    disagree = np.flatnonzero(lava_preds != emu_preds).tolist()
    result.update(_accuracy(lava_preds, labels), seconds=lava_s, predictions=lava_preds.tolist(),
                  emulator={**_accuracy(emu_preds, labels), "seconds": emu_s, "predictions": emu_preds.tolist()},
                  agree=not disagree, disagreements=disagree)
    obj.echo(_line("Lava CPU simulator", result))
    obj.echo(_line("emulator", {**result, **result["emulator"]}))
    obj.echo(f"predictions agree on {len(labels) - len(disagree)}/{len(labels)} images"
             + (f"; they differ on images {disagree}" if disagree else ""))
    write_json(json_out, result)
    if disagree:
        sys.exit(4)


def _emulate(obj: Ctx, qnet, x, T: int, batch_size: int, scale=None) -> tuple[np.ndarray, float]:
    """Emulator predictions (N,) in batches, with a progress bar, and the seconds they took;
    sharded over ``scale``'s workers (``app.scaleout``: the predictions of one process)."""
    from loihi_conv.app.scaleout import emulator_predictions

    t0 = time.perf_counter()
    preds = emulator_predictions(qnet, x, T, batch_size=batch_size, scale=scale,
                                 progress=_progress(obj, f"emulator ({batch_size} images/batch)"))
    return preds, time.perf_counter() - t0


def _scale_of(scale) -> dict:
    return {"workers": scale.workers or 1, "ray": scale.ray, "device": scale.device}


def _lava(obj: Ctx, net: str, qnet, x, steps: int) -> tuple[np.ndarray, float]:
    """Predictions (N,) on Lava's CPU simulator, one image at a time, as ``run-lava`` runs them."""
    from loihi_conv.fixed.decode import encode, predictions
    from netx_export.runner import LavaRunner

    t0 = time.perf_counter()
    x_int = encode(qnet, x)
    preds = []
    with LavaRunner(net) as runner:
        for i in _progress(obj, "lava")(range(len(x_int))):
            preds.append(int(predictions(qnet, runner.run(x_int[i], steps))[0]))
    return np.asarray(preds, dtype=np.int64), time.perf_counter() - t0


def _accuracy(preds: np.ndarray, labels: np.ndarray) -> dict:
    correct = int((preds == labels).sum())
    return {"accuracy": correct / len(labels), "correct": correct}


def _line(backend: str, r: dict) -> str:
    return (f"{backend}: accuracy {100 * r['accuracy']:.2f}% ({r['correct']}/{r['samples']}) on {r['dataset']} "
            f"test images, readout {r['readout']}, T={r['timesteps']} ({r['steps']} steps), {r['seconds']:.1f} s")
