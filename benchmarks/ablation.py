"""Ablation of the seed papers' accuracy-at-low-latency methods on zoo models (float if-soft SNN).

Rows are Recipes (loihi_conv.methods); rows marked per-T are converted once per readout window
(MMSE thresholds, ClipRound bias and calibration optimise for a given T). Writes
benchmarks/results/ablation.{json,md} and ablation_<model>.png (accuracy vs T).

    .venv/bin/python benchmarks/ablation.py --models mnist_cnn,fmnist_vgg --T 4,8,16,32,64 --samples 2000
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from loihi_conv.convert import convert
from loihi_conv.data import calibration_batches, load_dataset
from loihi_conv.methods import efficiency
from loihi_conv.recipe import Recipe
from loihi_conv.simulate import simulate
from loihi_conv.zoo import get_model

RESULTS = Path(__file__).parent / "results"
BASE = dict(calib_size=1024, mmse_samples=128, calib_sim_size=256)
PCT = dict(normalizer="percentile", percentile=99.99)
MMSE = dict(normalizer="mmse", granularity="channel", clip_round=True)
# name -> (recipe options, converted per T?)
ROWS: dict[str, tuple[dict, bool]] = {
    "max norm (layer)": (dict(normalizer="max", granularity="layer"), False),
    "+percentile 99.99": (dict(PCT, granularity="layer"), False),
    "+channel-wise": (dict(PCT, granularity="channel"), False),
    "+unbiased v(0)=θ/2": (dict(PCT, granularity="channel", v_init=0.5), False),
    "+clamping d=1 (= RetinaNet extended)": (dict(PCT, granularity="channel", v_init=0.5, clamp_delay=1), False),
    "ClipRound bias (θ/2T)": (dict(PCT, granularity="channel", clip_round=True), True),
    "MMSE* + ClipRound": (MMSE, True),
    "MMSE* +LCP": (dict(MMSE, lcp=True), True),
    "MMSE* +ACP (potential)": (dict(MMSE, acp=True), True),
    "calibration best (MMSE*+LCP+ACP)": (dict(MMSE, lcp=True, acp=True), True),
}


def run_row(model, calib, x, y, ts, opts, per_t):
    recipes = {T: Recipe(**BASE, **opts, calib_timesteps=T) for T in ts} if per_t else {None: Recipe(**BASE, **opts)}
    acc, eff, conv_s, sim_s = {}, {}, 0.0, 0.0
    for key, recipe in recipes.items():
        t0 = time.time()
        snn = convert(model, calib, recipe)
        t1 = time.time()
        run_ts = [key] if per_t else list(ts)
        res = simulate(snn, x, run_ts, delay=recipe.delay, record="neuron", batch_size=250)
        sim_s += time.time() - t1
        conv_s += t1 - t0
        for T in run_ts:
            acc[T] = res.accuracy(y)[T]
            e = efficiency(snn, res, T)
            eff[T] = {"op_ratio": e.op_ratio, "energy_ratio": e.energy_ratio,
                      "mean_rate": sum(e.firing_rates.values()) / len(e.firing_rates),
                      "firing_rates": e.firing_rates}
    return {"accuracy": acc, "efficiency": eff, "convert_s": conv_s, "simulate_s": sim_s}


@click.command()
@click.option("--models", default="mnist_cnn,fmnist_vgg")
@click.option("--T", "ts", default="4,8,16,32,64")
@click.option("--samples", default=2000, type=int)
@click.option("--rows", default="", help="comma-separated row names (default: all)")
@click.option("--tag", default="", help="suffix for the output files")
@click.option("--render", type=click.Path(exists=True, dir_okay=False), default=None,
              help="only write the table and plot of an existing (possibly partial) results JSON")
def main(models, ts, samples, rows, tag, render):
    if render:
        out = _int_keys(json.loads(Path(render).read_text()))
        write_md(out, RESULTS / f"ablation{tag}.md")
        plot(out, tag)
        return
    torch.set_num_threads(1)
    ts = [int(t) for t in ts.split(",")]
    names = [r for r in ROWS if not rows or r in rows.split(",")]
    RESULTS.mkdir(exist_ok=True)
    out = {"T": ts, "samples": samples, "models": {}}
    for name in models.split(","):
        model, info = get_model(name, train_if_missing=False)
        ds = info["dataset"] if isinstance(info, dict) else info.dataset
        calib = torch.cat(list(calibration_batches(ds, 1024)))
        x, y = load_dataset(ds, "test")
        x, y = x[:samples], y[:samples]
        with torch.no_grad():
            ann_acc = float((model(x).argmax(1) == y).float().mean())
        out["models"][name] = {"ann_accuracy": ann_acc, "rows": {}}
        for row in names:
            opts, per_t = ROWS[row]
            r = run_row(model, calib, x, y, ts, opts, per_t)
            out["models"][name]["rows"][row] = r
            print(name, row, {T: round(a, 4) for T, a in r["accuracy"].items()},
                  f"convert {r['convert_s']:.1f}s sim {r['simulate_s']:.1f}s", flush=True)
            (RESULTS / f"ablation{tag}.json").write_text(json.dumps(out, indent=1))
    write_md(out, RESULTS / f"ablation{tag}.md")
    plot(out, tag)


def _int_keys(out):
    """JSON turns the T keys into strings; the writers index by int T."""
    for m in out["models"].values():
        for r in m["rows"].values():
            r["accuracy"] = {int(k): v for k, v in r["accuracy"].items()}
            r["efficiency"] = {int(k): v for k, v in r["efficiency"].items()}
    return out


def write_md(out, path):
    ts = out["T"]
    lines = [f"# Ablation (float if-soft SNN, delay=1, {out['samples']} test images)", ""]
    for name, m in out["models"].items():
        lines += [f"## {name} (ANN {100 * m['ann_accuracy']:.2f}%)", "",
                  "| method | " + " | ".join(f"T={T}" for T in ts) + f" | ops/MAC T={ts[-1]} | energy T={ts[-1]} | convert s | sim s |",
                  "|---" * (len(ts) + 5) + "|"]
        for row, r in m["rows"].items():
            e = r["efficiency"][ts[-1]]
            lines.append(f"| {row} | " + " | ".join(f"{100 * r['accuracy'][T]:.2f}" for T in ts)
                         + f" | {e['op_ratio']:.3f} | {e['energy_ratio']:.3f} | {r['convert_s']:.1f} | {r['simulate_s']:.1f} |")
        lines.append("")
    path.write_text("\n".join(lines))


def plot(out, tag):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, m in out["models"].items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for row, r in m["rows"].items():
            ax.plot(out["T"], [100 * r["accuracy"][T] for T in out["T"]], marker="o", label=row)
        ax.axhline(100 * m["ann_accuracy"], color="k", ls="--", lw=0.8, label="ANN")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("readout window T")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{name}: accuracy vs T")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / f"ablation_{name}{tag}.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
