"""Issue 14's acceptance numbers: the fixed-point emulator (bit-exact with Lava) on the full test
set with default flags, i.e. with the recipe search, against today's defaults (--no-search)
and the ANN, per (model, target, T), with the search time and the recipe it chose.

    .venv/bin/python benchmarks/recipe_search.py --model mnist_cnn --target if-soft -T 8 -T 32
    .venv/bin/python benchmarks/recipe_search.py --model fmnist_vgg --target cuba --target sdnn -T 8 --budget 300

Every row is what `loihi-conv convert --model M --target X -T T` would export (search) and
`... --no-search` (defaults). The search sees only training images (calibration + held-out);
the test set scores the chosen network once. Rows append to results/recipe_search.json; the
markdown table is rebuilt from it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from loihi_conv.app import pipeline
from loihi_conv.app.models import resolve
from loihi_conv.app.recipe_search import DEFAULT_BUDGET, describe
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.emulate import emulator_predictions
from loihi_conv.fixed.quantize import TARGETS
from loihi_conv.frontend.ops import forward
from loihi_conv.frontend.prepare import prepare

RESULTS = Path(__file__).parent / "results"


def _accuracy(qnet, x, y, T: int) -> float:
    return float((torch.as_tensor(emulator_predictions(qnet, x, T)) == y).float().mean())


def _pct(v) -> str:
    return "refused" if v is None else f"{100 * v:.2f}"


@click.command()
@click.option("--model", "models", multiple=True, required=True, help="zoo model (repeatable)")
@click.option("--target", "targets", multiple=True, type=click.Choice(sorted(TARGETS)), required=True)
@click.option("-T", "timesteps", multiple=True, type=int, required=True)
@click.option("--budget", default=DEFAULT_BUDGET, show_default=True, help="search seconds per row")
@click.option("--samples", default=None, type=int, help="first N test images (default: all)")
@click.option("--threads", default=2, show_default=True)
def main(models, targets, timesteps, budget, samples, threads):
    torch.set_num_threads(threads)
    path = RESULTS / "recipe_search.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    for name in models:
        ref = resolve(name, progress=False)
        x, y = pipeline.test_data(ref.dataset, samples)
        ann = float((forward(prepare(ref.module, ref.input_shape), x).argmax(1) == y).float().mean())
        for target in targets:
            for T in timesteps:
                snn, _ = pipeline.convert_model(ref, Recipe())
                try:
                    default = _accuracy(pipeline.quantize_snn(snn, ref, Recipe(), target, T), x, y, T)
                except LoihiConvError as e:  # e.g. sdnn and the default spiking max-pool
                    default, refused = None, e.problem
                else:
                    refused = None
                t0 = time.perf_counter()
                res = pipeline.search_recipe(ref, target, T, {}, budget=budget, progress=False)
                secs = time.perf_counter() - t0
                acc = _accuracy(res.qnet, x, y, T)
                key = f"{name}/{target}/T{T}"
                out[key] = {"model": name, "target": target, "T": T, "samples": len(y), "ann": ann,
                            "defaults": default, "defaults_refused": refused, "search": acc, "gap_points": 100 * (ann - acc),
                            "heldout": res.accuracy, "search_seconds": secs, "trials": len(res.trials),
                            "recipe": describe(res.recipe), "threads": threads}
                print(key, out[key], flush=True)
                path.write_text(json.dumps(out, indent=1))
    lines = ["# Recipe search: fixed-point emulator accuracy with default flags (test images: see the column)", "",
             "`defaults` = `convert --no-search` (the behaviour before the search); `search` = `convert` "
             "(the recipe searched on held-out training images, then scored once on the test set).", "",
             "| model | target | T | test images | ANN | defaults | search | ANN - search (points) | "
             "held-out acc | search s | trials | chosen recipe |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out.values():
        lines.append(f"| {r['model']} | {r['target']} | {r['T']} | {r['samples']} | {100 * r['ann']:.2f} | "
                     f"{_pct(r['defaults'])} | {100 * r['search']:.2f} | {r['gap_points']:.2f} | "
                     f"{100 * r['heldout']:.2f} | {r['search_seconds']:.0f} | {r['trials']} | {r['recipe']} |")
    (RESULTS / "recipe_search.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
