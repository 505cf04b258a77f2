"""Ablation of the seed papers' accuracy-at-low-latency methods on zoo models.

Rows are Recipes (loihi_conv.convert.methods). A row is run on the float ``if-soft`` SNN (delay=1, Lava
timing) and, where the fixed-point ``cuba`` target can represent it, quantized for each T and run
on the bit-exact emulator. Rows marked per-T are converted once per readout window (MMSE
thresholds, ClipRound bias and calibration optimise for a given T); the others are converted
once and read out at every T from one run.

Each model's results go to ``results/ablation_<model><tag>.json``; ``--render`` rebuilds the
markdown table and the accuracy-vs-T plots from any set of those files (runs of different models
can go in parallel processes).

    .venv/bin/python benchmarks/ablation.py --models fmnist_vgg --T 4,8,16,32,64,128,256 --samples 1000
    .venv/bin/python benchmarks/ablation.py --render results/ablation_*.json
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from loihi_conv.app.data import calibration_batches, load_dataset
from loihi_conv.app.zoo import get_model
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe, convert
from loihi_conv.convert.methods import efficiency
from loihi_conv.snn.simulate import simulate

RESULTS = Path(__file__).parent / "results"
EFF_T = 64  # the T the efficiency columns are reported at
BASE = dict(calib_size=1024, mmse_samples=128, calib_sim_size=256)
PCT = dict(normalizer="percentile", percentile=99.99, granularity="channel")
MMSE = dict(normalizer="mmse", granularity="channel")
EXTENDED = dict(PCT, v_init=0.5, clamp_delay=1)
# name -> (recipe options, converted per T?, runs on cuba?). Rows build on the one above them
# where the name starts with "+". cuba rows use the reset-to-zero neuron the target has, so the
# thresholds and calibrations see the arithmetic Loihi will run; v(0) and clamping are not
# representable on cuba (v starts at 0 every sample, no per-layer start step).
ROWS: dict[str, tuple[dict, bool, bool]] = {
    "max norm (layer)": (dict(normalizer="max", granularity="layer"), False, False),
    "+percentile 99.99": (dict(PCT, granularity="layer"), False, False),
    "+channel-wise": (PCT, False, True),
    "+unbiased v(0)=θ/2": (dict(PCT, v_init=0.5), False, False),
    "+clamping d=1 (= RetinaNet extended)": (EXTENDED, False, False),
    "ClipRound bias θ/2T": (dict(PCT, clip_round=True), True, False),
    "MMSE (channel, ClipRound obj.)": (MMSE, True, False),
    "+LCP": (dict(MMSE, lcp=True), True, True),
    "channel-wise +LCP": (dict(PCT, lcp=True), True, True),
    "MMSE +ACP": (dict(MMSE, acp=True, acp_weights=True), True, False),
    "calibration best (MMSE + ClipRound + ACP)": (dict(MMSE, clip_round=True, acp=True, acp_weights=True), True, False),
}
# Issue-5 methods, on the plain channel-wise baseline (compare with "+channel-wise"); not run by
# default (--rows). The pooling rows are for a model with MaxPool2d (mnist_cnn_maxpool).
EXTRA_ROWS: dict[str, tuple[dict, bool, bool]] = {
    "multi-bit S_max=2": (dict(PCT, neuron_model="if-multibit", neuron_params={"s_max": 2}), False, False),
    "multi-bit S_max=4": (dict(PCT, neuron_model="if-multibit", neuron_params={"s_max": 4}), False, False),
    "burst Γ=5": (dict(PCT, neuron_model="if-burst", neuron_params={"burst": 5}), False, False),
    "buffered IF (negative spikes)": (dict(PCT, neuron_model="if-buffered"), False, False),
    "SpiCalib": (dict(PCT, neuron_model="spicalib"), False, False),
    "output: spike count": (dict(PCT, output="spikes"), False, True),
    "output: spiking softmax": (dict(PCT, output="softmax"), False, True),
    "max-pool: MLIPooling": (dict(PCT, max_pool="mli"), False, True),
    "max-pool: rate gate (Rueckauer §3.6)": (dict(PCT, max_pool="rate-gate"), False, True),
    "max-pool: stateless max of spikes": (dict(PCT, max_pool="spike-max"), False, True),
    "max-pool → average pooling": (dict(PCT, max_pool="avg"), False, True),
    # The low-latency best (benchmarks/low_latency.py "zoo-T8-mb2-export"): HPC multi-bit spikes
    # with the calibration best and clamping, all of it exportable to the if-soft target.
    "multi-bit S_max=2 + calibration best + clamping d=1": (
        dict(MMSE, clip_round=True, lcp=True, acp=True, acp_weights=True, acp_granularity="channel",
             neuron_model="if-multibit", neuron_params={"s_max": 2}, clamp_delay=1), True, False),
}
ALL_ROWS = {**ROWS, **EXTRA_ROWS}


def recipe_for(opts: dict, T: int | None, neuron_model: str | None = None) -> Recipe:
    """The row's recipe for readout window T (per-T rows); ``neuron_model`` overrides the row's
    (cuba rows run reset-to-zero neurons)."""
    extra = {"calib_timesteps": T} if T else {}
    if neuron_model:
        extra["neuron_model"] = neuron_model
    return Recipe(**{**BASE, **opts, **extra})


def float_row(model, calib, x, y, ts, opts, per_t):
    """Float if-soft SNN accuracy and efficiency at every T."""
    recipes = {T: recipe_for(opts, T) for T in ts} if per_t else {None: recipe_for(opts, None)}
    acc, eff, conv_s, sim_s = {}, {}, 0.0, 0.0
    for key, recipe in recipes.items():
        t0 = time.perf_counter()
        snn = convert(model, calib, recipe)
        t1 = time.perf_counter()
        run_ts = [key] if per_t else list(ts)
        res = simulate(snn, x, run_ts, delay=recipe.delay, record="neuron", batch_size=250)
        sim_s += time.perf_counter() - t1
        conv_s += t1 - t0
        for T in run_ts:
            acc[T] = res.accuracy(y)[T]
            e = efficiency(snn, res, T)
            eff[T] = {"op_ratio": e.op_ratio, "energy_ratio": e.energy_ratio,
                      "mean_rate": sum(e.firing_rates.values()) / len(e.firing_rates),
                      "firing_rates": e.firing_rates}
    # per-T rows: the conversion time of one T (the figure a user pays once)
    return {"accuracy": acc, "efficiency": eff, "convert_s": conv_s / len(recipes), "simulate_s": sim_s}


def cuba_row(model, calib, x, y, ts, opts, per_t):
    """Quantized ``cuba`` accuracy at every T on the emulator (reset-to-zero neurons)."""
    from loihi_conv.emulate import emulator_predictions
    from loihi_conv.fixed.quantize import quantize

    acc, notes, secs = {}, {}, 0.0
    snn = None if per_t else convert(model, calib, recipe_for(opts, None, "if-zero"))
    for T in ts:
        t0 = time.perf_counter()
        net = convert(model, calib, recipe_for(opts, T, "if-zero")) if per_t else snn
        try:
            q = quantize(net, "cuba", timesteps=T, calib=calib[:256], calib_samples=128)
        except LoihiConvError as e:  # recorded, not fatal: the table says why a cell is empty
            notes[T] = str(e).splitlines()[0]
            continue
        pred = torch.as_tensor(emulator_predictions(q, x, T))
        acc[T] = float((pred == y).float().mean())
        secs += time.perf_counter() - t0
    return {"accuracy": acc, "notes": notes, "seconds": secs}


@click.command()
@click.option("--models", default="mnist_cnn,fmnist_vgg,fmnist_resnet")
@click.option("--T", "ts", default="4,8,16,32,64,128,256")
@click.option("--per-t-max", default=256, type=int, help="per-T rows only for T up to this")
@click.option("--samples", default=1000, type=int, help="test images (the first ones of the split)")
@click.option("--rows", default="", help="'|'-separated row names (default: all)")
@click.option("--cuba-T", "cuba_ts", default="16,32,64", help="T of the quantized cuba rows ('' for none)")
@click.option("--tag", default="", help="suffix for the output files")
@click.option("--render", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="only write the table and plots from existing results JSON files")
def main(models, ts, per_t_max, samples, rows, cuba_ts, tag, render):
    if render:
        outs = [_int_keys(json.loads(Path(p).read_text())) for p in render]
        write_md(outs, RESULTS / f"ablation{tag}.md")
        for out in outs:
            plot(out, tag)
        return
    torch.set_num_threads(1)
    ts = [int(t) for t in ts.split(",")]
    cuba_ts = [int(t) for t in cuba_ts.split(",") if t]
    names = list(ROWS) if not rows else rows.split("|")
    unknown = [r for r in names if r not in ALL_ROWS]
    if unknown:
        raise click.BadParameter(f"unknown rows {unknown}; known: {list(ALL_ROWS)}", param_hint="--rows")
    RESULTS.mkdir(exist_ok=True)
    for name in models.split(","):
        path = RESULTS / f"ablation_{name}{tag}.json"
        model, info = get_model(name, train_if_missing=False)
        ds = info["dataset"] if isinstance(info, dict) else info.dataset
        calib = torch.cat(list(calibration_batches(ds, 1024)))
        x, y = load_dataset(ds, "test")
        x, y = x[:samples], y[:samples]
        with torch.no_grad():
            ann_acc = float((model(x).argmax(1) == y).float().mean())
        out = _int_keys(json.loads(path.read_text())) if path.exists() else {}
        if out.get("samples") != samples:  # rows of one file share their test images
            out = {"model": name, "dataset": ds, "T": [], "samples": samples, "rows": {}}
        out["T"] = sorted(set(out["T"]) | set(ts))
        out.update(ann_accuracy=ann_acc, per_t_max=per_t_max)
        for row in names:
            opts, per_t, on_cuba = ALL_ROWS[row]
            row_ts = [T for T in ts if T <= per_t_max] if per_t else ts
            r = float_row(model, calib, x, y, row_ts, opts, per_t)
            if on_cuba and cuba_ts:
                r["cuba"] = cuba_row(model, calib, x, y, [T for T in row_ts if T in cuba_ts], opts, per_t)
            out["rows"][row] = r
            print(name, row, {T: round(a, 4) for T, a in r["accuracy"].items()},
                  "cuba", {T: round(a, 4) for T, a in r.get("cuba", {}).get("accuracy", {}).items()},
                  f"convert {r['convert_s']:.1f}s sim {r['simulate_s']:.1f}s", flush=True)
            path.write_text(json.dumps(out, indent=1))
        plot(out, tag)


def _int_keys(out):
    """JSON turns the T keys into strings; the writers index by int T."""
    for r in out.get("rows", {}).values():
        for part in (r, r.get("cuba", {})):
            for key in ("accuracy", "efficiency", "notes"):
                if key in part:
                    part[key] = {int(k): v for k, v in part[key].items()}
    return out


def _ordered(out):
    """Rows in the order of ALL_ROWS (runs of a model may add rows in any order)."""
    rank = {name: i for i, name in enumerate(ALL_ROWS)}
    return sorted(out["rows"].items(), key=lambda kv: rank.get(kv[0], len(rank)))


def _cells(acc: dict, ts) -> str:
    return " | ".join(f"{100 * acc[T]:.2f}" if T in acc else "–" for T in ts)


def write_md(outs, path):
    lines = ["# Ablation: accuracy (%) vs readout window T", "",
             "Float: the float `if-soft` SNN (reset by subtraction, delay=1 Lava timing). cuba: the "
             "row's recipe with reset-to-zero neurons, quantized to the standard-NetX `cuba` target "
             "and run on the bit-exact emulator (– : not representable on cuba, or not run). "
             "ops/MAC: SNN synaptic operations over ANN MACs (HPC operation ratio); energy: with a "
             "multiply = 4 adds. Convert s: conversion + calibration wall time for one T, 1 thread.", ""]
    for out in outs:
        ts = out["T"]
        last = ts[-1]
        lines += [f"## {out['model']} ({out['dataset']}, first {out['samples']} test images, "
                  f"ANN {100 * out['ann_accuracy']:.2f}%)", "",
                  "| method | " + " | ".join(f"T={T}" for T in ts) + f" | ops/MAC T={EFF_T} | energy T={EFF_T} | convert s |",
                  "|---" * (len(ts) + 4) + "|"]
        for row, r in _ordered(out):
            tail = EFF_T if EFF_T in r["efficiency"] else max(r["efficiency"])
            e = r["efficiency"][tail]
            mark = "" if tail == EFF_T else f" (T={tail})"
            lines.append(f"| {row} | {_cells(r['accuracy'], ts)} | {e['op_ratio']:.3f}{mark} "
                         f"| {e['energy_ratio']:.3f}{mark} | {r['convert_s']:.1f} |")
            if "cuba" in r:
                lines.append(f"| ↳ cuba (emulator) | {_cells(r['cuba']['accuracy'], ts)} | | | |")
        lines.append("")
        if last > out.get("per_t_max", last):
            lines += [f"Per-T rows were converted and run for T ≤ {out['per_t_max']} only.", ""]
    path.write_text("\n".join(lines))


def plot(out, tag):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row, r in _ordered(out):
        ts = sorted(r["accuracy"])
        line, = ax.plot(ts, [100 * r["accuracy"][T] for T in ts], marker="o", label=row)
        cuba = r.get("cuba", {}).get("accuracy", {})
        if cuba:
            cts = sorted(cuba)
            ax.plot(cts, [100 * cuba[T] for T in cts], marker="x", ls=":", color=line.get_color(),
                    label=f"{row} (cuba)")
    ax.axhline(100 * out["ann_accuracy"], color="k", ls="--", lw=0.8, label="ANN")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("readout window T")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{out['model']}: accuracy vs T ({out['samples']} test images)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"ablation_{out['model']}{tag}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
