"""Wall time of the calibration methods on the Fashion-MNIST VGG (issue budget: LCP <= 30 s,
ACP <= 5 min on 2 CPU cores): conversion with and without each method, same calibration data.
Writes results/calibration_time.{json,md}.

    .venv/bin/python benchmarks/calibration_time.py --threads 2 --T 32
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from loihi_conv.app.data import calibration_batches
from loihi_conv.app.zoo import get_model
from loihi_conv.convert import Recipe, convert

RESULTS = Path(__file__).parent / "results"
ROWS = {"plain (channel-wise p99.99)": {}, "LCP": dict(lcp=True), "ACP potential": dict(acp=True),
        "ACP potential + weights": dict(acp=True, acp_weights=True)}


@click.command()
@click.option("--model", default="fmnist_vgg")
@click.option("--threads", default=2, type=int)
@click.option("--T", "T", default=32, type=int)
def main(model, threads, T):
    torch.set_num_threads(threads)
    net, info = get_model(model, train_if_missing=False)
    calib = torch.cat(list(calibration_batches(info["dataset"] if isinstance(info, dict) else info.dataset, 1024)))
    out = {"model": model, "threads": threads, "T": T, "seconds": {}}
    for name, opts in ROWS.items():
        t0 = time.perf_counter()
        convert(net, calib, Recipe(calib_timesteps=T, **opts))
        out["seconds"][name] = time.perf_counter() - t0
        print(name, round(out["seconds"][name], 1), flush=True)
    base = out["seconds"]["plain (channel-wise p99.99)"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calibration_time.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Calibration wall time, {model}, T={T}, {threads} torch threads", "",
             "| recipe | convert s | method s (minus plain) |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {v - base:.1f} |" for k, v in out["seconds"].items()]
    (RESULTS / "calibration_time.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
