"""The low-latency acceptance numbers on the full Fashion-MNIST test set (float if-soft SNN,
delay=1 Lava timing): the best recipes against the ANN at the readout windows they target, with
the conversion + calibration wall time.

    .venv/bin/python benchmarks/low_latency.py --case zoo-T32 --case qrelu-T8
    .venv/bin/python benchmarks/low_latency.py --case zoo-T8-mb2-export --emulate --lava 5

``--emulate`` also quantizes the SNN for the if-soft target and runs the bit-exact emulator on
the same images; ``--lava N`` then saves it as a NetX file, loads it and verifies N images on
Lava's CPU simulator (every state at every step against the emulator).

``qrelu-T8`` needs the QReLU fine-tuned model written by
``loihi-conv finetune-qrelu --model fmnist_vgg -T 8 --s-max 1 --epochs 1 --out <cache>/fmnist_vgg-qrelu-T8-S1.pt``.
Each case appends to results/low_latency.json; the markdown table is rebuilt from it.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import torch

from loihi_conv.app.data import cache_dir, calibration_batches, load_dataset
from loihi_conv.app.models import resolve
from loihi_conv.convert import Recipe, convert
from loihi_conv.emulate import emulator_predictions
from loihi_conv.fixed.quantize import quantize
from loihi_conv.snn.simulate import simulate

RESULTS = Path(__file__).parent / "results"
CALIBRATED = dict(normalizer="mmse", granularity="channel", clip_round=True, lcp=True, acp=True,
                  acp_weights=True, mmse_samples=128)
# case -> (model spec, recipe options, T)
# HPC multi-bit spikes (S_max=2, eq. 14-16) with the calibration best and voltage clamping d=1:
# representation power P = T * S_max = 16 at T=8, and no start-up transient under Lava timing.
MULTIBIT_CLAMPED = dict(CALIBRATED, neuron_model="if-multibit", neuron_params={"s_max": 2}, clamp_delay=1)
# The same with ACP's v(0) per channel: everything in it exports to the if-soft target.
EXPORTABLE = dict(MULTIBIT_CLAMPED, acp_granularity="channel")
CASES = {
    "zoo-T8": ("fmnist_vgg", CALIBRATED, 8),
    "zoo-T8-mb2": ("fmnist_vgg", MULTIBIT_CLAMPED, 8),
    "zoo-T8-mb2-export": ("fmnist_vgg", EXPORTABLE, 8),
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
@click.option("--emulate", is_flag=True, help="also quantize for if-soft and run the bit-exact emulator")
@click.option("--lava", default=0, type=int, help="with --emulate: save the NetX file, load it and verify "
              "this many test images on Lava's CPU simulator against the emulator")
def main(cases, samples, emulate, lava):
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
        if emulate:  # the same network in Loihi fixed point (if-soft target), bit-exact with Lava
            qnet = quantize(snn, "if-soft", T, calib=calib)
            out[case]["emulator"] = float((emulator_predictions(qnet, x, T) == y.numpy()).mean())
            if lava:
                out[case]["lava"] = _lava(qnet, x[:lava], y[:lava], T)
        print(case, out[case], flush=True)
        path.write_text(json.dumps(out, indent=1))
    lines = ["# Low latency on Fashion-MNIST (float if-soft SNN, delay=1, 1 thread)", "",
             "| case | model | T | test images | ANN (zoo VGG) | ANN (this model) | SNN | gap (points) | "
             "emulator (if-soft fixed point) | convert + calibrate s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in out.items():
        emu = f"{100 * r['emulator']:.2f}" if "emulator" in r else "–"
        if "lava" in r:
            lv = r["lava"]
            emu += (f"; Lava, {lv['images']} images: {lv['mismatches']} mismatches in {lv['compared']:,} "
                    f"values, {lv['lava_correct']}/{lv['images']} correct")
        lines.append(f"| {case} | {r['model']} | {r['T']} | {r['samples']} | {100 * r['ann_fmnist_vgg']:.2f} | "
                     f"{100 * r['ann_own']:.2f} | {100 * r['snn']:.2f} | {r['gap_points']:.2f} | {emu} | {r['convert_s']:.0f} |")
    (RESULTS / "low_latency.md").write_text("\n".join(lines) + "\n")


def _lava(qnet, x, y, T: int) -> dict:
    """Write the network as a NetX file, read it back and run it on Lava, every state compared
    with the emulator at every step."""
    from loihi_conv.app.verify import verify
    from netx_export import load, save

    with tempfile.TemporaryDirectory() as tmp:
        ver = verify(load(save(qnet, Path(tmp) / "net.net")), x, T)
    return {"images": len(y), "compared": ver.total_compared, "mismatches": ver.total_mismatches,
            "lava_correct": int((torch.tensor(ver.lava_predictions) == y).sum()),
            "lava_equals_emulator": ver.lava_predictions == ver.emulator_predictions}


if __name__ == "__main__":
    main()
