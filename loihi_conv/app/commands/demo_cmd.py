"""demo: the whole pipeline on the MNIST CNN, every backend side by side."""
from __future__ import annotations

import time
from pathlib import Path

import click

from loihi_conv.app.commands.group import Ctx, check_steps, guarded, main, write_json


@main.command()
@click.option("--model", "-m", default="mnist_cnn", show_default=True, help="Zoo model.")
@click.option("--timesteps", "-T", type=int, default=64, show_default=True, help="Readout window.")
@click.option("--samples", "-n", type=int, default=None, help="Test images for ANN/SNN/emulator (default: all).")
@click.option("--lava-samples", type=int, default=20, show_default=True, help="Test images run on Lava.")
@click.option("--targets", default="cuba,if-soft", show_default=True, help="Comma-separated Loihi targets.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.pass_obj
@guarded
def demo(obj: Ctx, model: str, timesteps: int, samples: int | None, lava_samples: int, targets: str,
         out: str) -> None:
    """Train (or load) a zoo CNN, convert, quantize, export to NetX, run on Lava's CPU simulator
    and on the emulator, and print every accuracy side by side with the mismatch count.

    \b
    Example: loihi-conv demo --timesteps 32 --lava-samples 10
    """
    import netx_export
    from loihi_conv.app import models, pipeline
    from loihi_conv.app.commands.fixed_cmds import _progress
    from loihi_conv.app.verify import verify
    from loihi_conv.base.errors import LoihiConvError
    from loihi_conv.convert import Recipe
    from loihi_conv.fixed.quantize import TARGETS

    check_steps(timesteps, "--timesteps", "-T 64")
    chosen = [t.strip() for t in targets.split(",") if t.strip()]
    bad = [t for t in chosen if t not in TARGETS]
    if bad or not chosen:
        raise LoihiConvError(f"unknown target(s) {bad or targets!r}", f"use a comma-separated subset of {', '.join(sorted(TARGETS))}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = Recipe()  # channel-wise 99.99 percentile, if-soft, Lava timing
    obj.echo(f"[1/4] model {model}")
    ref = models.resolve(model, progress=not obj.quiet)
    obj.echo(f"[2/4] convert + float SNN on the test set (T={timesteps})")
    ev = pipeline.evaluate(ref, recipe, (timesteps,), samples)
    snn, _ = pipeline.convert_model(ref, recipe)
    rows = [("ANN (float)", ev.ann_accuracy, ev.samples, ""), ("SNN float (if-soft)", ev.snn_accuracy[timesteps], ev.samples, "")]
    files = {}
    obj.echo("[3/4] quantize, export, emulate")
    results = {"model": model, "timesteps": timesteps, "ann": ev.ann_accuracy,
               "snn_float": ev.snn_accuracy[timesteps], "targets": {}}
    qnets = {}
    for target in chosen:
        qnet = pipeline.quantize_snn(snn, ref, recipe, target, timesteps)
        path = netx_export.save(qnet, out_dir / f"{model}_{target}.net")
        qnets[target], files[target] = netx_export.load(path), path
        acc, secs = pipeline.emulator_accuracy(qnets[target], ref.dataset, timesteps, samples)
        rows.append((f"emulator {target}", acc, ev.samples, f"{secs:.1f} s"))
        results["targets"][target] = {"file": str(path), "emulator": acc, "emulator_seconds": secs}
    obj.echo(f"[4/4] Lava CPU simulator on {lava_samples} test images, checked step by step against the emulator")
    x, y = pipeline.test_data(ref.dataset, lava_samples)
    for target in chosen:
        t0 = time.perf_counter()
        ver = verify(qnets[target], x, timesteps, progress=_progress(obj, f"lava {target}"))
        lava_acc = float((y.numpy() == ver.lava_predictions).mean())
        rows.append((f"Lava {target}", lava_acc, len(y),
                     f"{ver.total_mismatches} mismatches / {ver.total_compared} values, {time.perf_counter() - t0:.0f} s"))
        results["targets"][target].update(lava=lava_acc, lava_samples=len(y), mismatches=ver.total_mismatches,
                                          compared=ver.total_compared)
    obj.echo("")
    obj.echo(f"{'backend':24s} {'accuracy':>9s} {'images':>7s}  notes")
    for name, acc, n, note in rows:
        obj.echo(f"{name:24s} {100 * acc:>8.2f}% {n:>7d}  {note}")
    obj.echo("")
    for target, path in files.items():
        obj.echo(f"NetX file ({target}): {path}")
    write_json(str(out_dir / "demo.json"), results)
    obj.echo(f"results: {out_dir / 'demo.json'}")
