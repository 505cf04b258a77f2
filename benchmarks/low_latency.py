"""The low-latency acceptance numbers on the full Fashion-MNIST test set (float if-soft SNN,
delay=1 Lava timing): the best recipes against the ANN at the readout windows they target, with
the conversion + calibration wall time.

    .venv/bin/python benchmarks/low_latency.py --case zoo-T32 --case qrelu-T8

``qrelu-T8`` needs the QReLU fine-tuned model written by
``loihi-conv finetune-qrelu --model fmnist_vgg -T 8 --s-max 1 --epochs 1 --out <cache>/fmnist_vgg-qrelu-T8-S1.pt``.
Each case appends to results/low_latency.json; the markdown table is rebuilt from it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from loihi_conv.data import cache_dir
from loihi_conv.convert import convert
from loihi_conv.data import calibration_batches, load_dataset
from loihi_conv.models import resolve
from loihi_conv.recipe import Recipe
from loihi_conv.simulate import simulate

RESULTS = Path(__file__).parent / "results"
CALIBRATED = dict(normalizer="mmse", granularity="channel", clip_round=True, lcp=True, acp=True,
                  acp_weights=True, mmse_samples=128)
# case -> (model spec, recipe options, T)
CASES = {
    "zoo-T8": ("fmnist_vgg", CALIBRATED, 8),
    "zoo-T32": ("fmnist_vgg", CALIBRATED, 32),
    "qrelu-T8": ("qrelu:fmnist_vgg-qrelu-T8-S1", dict(normalizer="qrelu", lcp=True, acp=True, acp_weights=True), 8),
}


def _model(spec: str):
    if spec.startswith("qrelu:"):
        base = cache_dir() / "models" / spec.split(":", 1)[1]
        return resolve(f"{base}.py:QReLUModel", f"{base}.pt", "fashion-mnist").module
    return resolve(spec).module


@click.command()
@click.option("--case", "cases", multiple=True, type=click.Choice(sorted(CASES)), required=True)
@click.option("--samples", default=None, type=int, help="first N test images (default: all 10k)")
def main(cases, samples):
    torch.set_num_threads(1)
    path = RESULTS / "low_latency.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    calib = torch.cat(list(calibration_batches("fashion-mnist", 1024)))
    x, y = load_dataset("fashion-mnist", "test")
    if samples:
        x, y = x[:samples], y[:samples]
    with torch.no_grad():
        ann = resolve("fmnist_vgg").module
        ann_acc = float(torch.cat([ann(x[i:i + 1000]).argmax(1) for i in range(0, len(y), 1000)]).eq(y).float().mean())
    for case in cases:
        spec, opts, T = CASES[case]
        model = _model(spec)
        with torch.no_grad():
            own = float(torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(y), 1000)]).eq(y).float().mean())
        t0 = time.perf_counter()
        snn = convert(model, calib, Recipe(**opts, calib_timesteps=T))
        conv_s = time.perf_counter() - t0
        acc = simulate(snn, x, [T], delay=1, batch_size=250).accuracy(y)[T]
        out[case] = {"model": spec, "recipe": opts, "T": T, "samples": len(y), "ann_fmnist_vgg": ann_acc,
                     "ann_own": own, "snn": acc, "gap_points": 100 * (ann_acc - acc), "convert_s": conv_s}
        print(case, out[case], flush=True)
        path.write_text(json.dumps(out, indent=1))
    lines = ["# Low latency on Fashion-MNIST (float if-soft SNN, delay=1, 1 thread)", "",
             "| case | model | T | test images | ANN (zoo VGG) | ANN (this model) | SNN | gap (points) | convert + calibrate s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case, r in out.items():
        lines.append(f"| {case} | {r['model']} | {r['T']} | {r['samples']} | {100 * r['ann_fmnist_vgg']:.2f} | "
                     f"{100 * r['ann_own']:.2f} | {100 * r['snn']:.2f} | {r['gap_points']:.2f} | {r['convert_s']:.0f} |")
    (RESULTS / "low_latency.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
