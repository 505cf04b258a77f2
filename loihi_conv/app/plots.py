"""Figures for reports and notebooks (matplotlib, Agg; every figure saved as PNG and SVG).

Each function takes plain numbers (dicts of floats, numpy arrays), returns a
``matplotlib.figure.Figure`` built without pyplot (no global state, no display needed), and
``save`` writes it. Inputs are what ``loihi_conv.app.report`` collects, so notebooks can draw the
same figures from their own runs. Array layouts are given per function.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; a notebook shows the saved PNGs

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullLocator  # noqa: E402

FORMATS = ("png", "svg")
# One colour per backend, used the same way in every figure.
COLORS = {"ANN": "#222222", "float SNN": "#1f77b4", "emulator": "#ff7f0e", "Lava": "#2ca02c"}
PAIR_COLORS = {"float vs emulator": "#9467bd", "emulator vs Lava": "#2ca02c", "float vs Lava": "#8c564b"}


def _color(label: str, i: int) -> str:
    for key, c in {**PAIR_COLORS, **COLORS}.items():  # pairs first: "emulator vs Lava" is a pair
        if label.startswith(key):
            return c
    return f"C{i % 10}"


def save(fig: Figure, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``fig`` as ``out_dir/name.png`` (150 dpi) and ``.svg``; returns {format: path}."""
    from loihi_conv.base.files import atomic_write

    out = Path(out_dir)
    paths = {}
    for fmt in FORMATS:  # atomic: a full disk leaves no half-drawn figure
        paths[fmt] = atomic_write(out / f"{name}.{fmt}",
                                  lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=150, bbox_inches="tight"))
    return paths


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _accuracy_axes(ax, xlabel: str, legend_loc: str, title: str, samples: int | None) -> None:
    """Labels, grid, legend and title shared by the accuracy figures."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=8)
    ax.set_title(title + (f" ({samples} test images)" if samples else ""), fontsize=10)


# ---- accuracy vs T ---------------------------------------------------------------------------------
def accuracy_vs_t(curves: Mapping[str, Mapping[int, float]], ann: float | None = None,
                  title: str = "", samples: int | None = None) -> Figure:
    """Top-1 accuracy (%) against the readout window T (log2 axis), one line per backend/option
    (``curves[label][T] = accuracy in [0, 1]``), the ANN as a dashed horizontal line."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    all_t: set[int] = set()
    for i, (label, acc) in enumerate(curves.items()):
        acc = {int(t): float(a) for t, a in acc.items()}  # JSON turns the keys into strings
        ts = sorted(acc)
        all_t.update(ts)
        ax.plot(ts, [100 * acc[t] for t in ts], marker="o", ms=4, label=label, color=_color(label, i))
    if ann is not None:
        ax.axhline(100 * ann, color=COLORS["ANN"], ls="--", lw=1.2, label=f"ANN {100 * ann:.2f}%")
    ax.set_xscale("log", base=2)
    if all_t:
        ax.set_xticks(sorted(all_t), [str(t) for t in sorted(all_t)])
    _accuracy_axes(ax, "readout window T (time steps)", "lower right", title, samples)
    return fig


# ---- accuracy vs steps run (the accuracy-latency frontier) ------------------------------------------
def accuracy_vs_steps(lines: Mapping[str, Sequence[tuple[int, int, float]]], ann: float | None = None,
                      title: str = "", samples: int | None = None,
                      pareto: Sequence[tuple[int, float]] = (), refused: Mapping[str, str] | None = None) -> Figure:
    """Top-1 accuracy (%) against the steps a run takes (T + depth; log2 axis), one line per target
    (``lines[target] = [(T, steps, accuracy in [0, 1]), ...]``), a marker at each T labelled
    "T=..." below the lowest marker at that step count; the ANN as a dashed horizontal line;
    ``pareto``: (steps, accuracy) points optimal over all targets, ringed; ``refused[target]``:
    a target that could not run, listed in the legend with its note."""
    fig = _figure(6.8, 4.4)
    ax = fig.add_subplot()
    lowest: dict[tuple[int, int], float] = {}  # (steps, T) -> lowest accuracy (%) drawn there
    for i, (label, pts) in enumerate(lines.items()):
        pts = sorted((int(t), int(s), 100 * float(a)) for t, s, a in pts)
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", ms=5, label=label, color=f"C{i % 10}")
        for t, s, a in pts:
            lowest[s, t] = min(a, lowest.get((s, t), a))
    for (s, t), a in lowest.items():
        ax.annotate(f"T={t}", (s, a), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=7,
                    color="#555555")
    if pareto:
        ax.plot([int(s) for s, _ in pareto], [100 * float(a) for _, a in pareto], ls="none", marker="o", ms=11,
                mfc="none", mec="#222222", mew=0.9, label="Pareto-optimal (all targets)")
    for label, note in (refused or {}).items():
        ax.plot([], [], ls="none", label=f"{label}: {note}")  # legend text only
    if ann is not None:
        ax.axhline(100 * ann, color=COLORS["ANN"], ls="--", lw=1.2, label=f"ANN {100 * ann:.2f}%")
    ax.set_xscale("log", base=2)
    ticks: list[int] = []
    for s in sorted({s for s, _ in lowest}):  # every step count, unless it would crowd the previous label
        if not ticks or np.log2(s / ticks[-1]) >= 0.15:
            ticks.append(s)
    if ticks:
        ax.set_xticks(ticks, [str(s) for s in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        lo, hi = min(s for s, _ in lowest), max(s for s, _ in lowest)
        ax.set_xlim(lo / 2 ** 0.3, hi * 2 ** 0.3)
    if lowest:  # room below the lowest marker for its T label
        drawn = [a for line in lines.values() for _, _, a in line] + ([ann] if ann is not None else [])
        lo, hi = 100 * min(drawn), 100 * max(drawn)
        span = max(hi - lo, 1.0)
        ax.set_ylim(lo - 0.18 * span, hi + 0.08 * span)
    _accuracy_axes(ax, "steps run (T + network depth): what a user waits for", "best", title, samples)
    return fig


# ---- per-layer relative activation error -----------------------------------------------------------
def layer_error(errors: Mapping[str, Sequence[float]], T: int, title: str = "") -> Figure:
    """Per-layer relative activation error of the SNN against the ANN, one value per channel
    (``errors[layer] = (C,) values``), as in Li et al.'s calibration paper (Fig. 2/5): boxes
    span the quartiles, whiskers the 5th..95th percentile, the line is the median and the
    triangle the mean. Log y axis (errors span decades)."""
    return layer_error_compare({"": errors}, T, title)


def layer_error_compare(errors: Mapping[str, Mapping[str, Sequence[float]]], T: int, title: str = "") -> Figure:
    """``layer_error`` for several conversions side by side (``errors[option][layer]``), one
    colour per option, like the paper's Fig. 5 (baseline vs calibrated)."""
    options = list(errors)
    layers: list[str] = []
    for o in options:
        layers += [lay for lay in errors[o] if lay not in layers]
    fig = _figure(max(4.5, (0.6 + 0.5 * len(options)) * len(layers) + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(options)
    for i, o in enumerate(options):
        color = f"C{i}" if len(options) > 1 else "black"
        data = {lay: np.asarray([v for v in errors[o].get(lay, []) if np.isfinite(v)], dtype=float) for lay in layers}
        keep = [j for j, lay in enumerate(layers) if data[lay].size]
        if not keep:
            continue
        ax.boxplot([np.maximum(data[layers[j]], 1e-6) for j in keep], whis=(5, 95), showmeans=True,
                   showfliers=False, widths=0.8 * width,
                   positions=[j + 1 + (i - (len(options) - 1) / 2) * width for j in keep],
                   boxprops=dict(color=color), whiskerprops=dict(color=color), capprops=dict(color=color),
                   medianprops=dict(color="#ff7f0e"),
                   meanprops=dict(marker="^", markerfacecolor="#2ca02c", markeredgecolor="#2ca02c"))
        if o:
            ax.plot([], [], color=color, label=o)  # legend entry for this option's boxes
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xticks(range(1, len(layers) + 1), layers, rotation=30, ha="right")
    ax.set_xlim(0.5, len(layers) + 0.5)
    ax.set_xlabel("spiking layer (input -> output)")
    ax.set_ylabel(r"relative error $\|x - \bar{s}\|^2 / \|x\|^2$ per channel")
    ax.grid(True, axis="y", alpha=0.3, which="both")
    if any(options):
        ax.legend(fontsize=8, loc="upper left")
    ax.set_title((title + ", " if title else "") + f"T={T} (whiskers 5-95 %, - median, ^ mean)", fontsize=10)
    return fig


# ---- firing rates ----------------------------------------------------------------------------------
def firing_rates(rates: Mapping[str, Mapping[str, Sequence[float]]], T: int, title: str = "") -> Figure:
    """Firing rates per layer. ``rates[backend][layer] = (C,)`` mean spikes per neuron per step
    of each channel (over samples and positions). Left: each backend's layer mean (bars);
    right: the first backend's per-channel distribution (boxes, whiskers 5..95 %)."""
    backends = list(rates)
    layers = list(next(iter(rates.values()))) if rates else []
    fig = _figure(max(8.0, 1.6 * len(layers) + 4), 4.0)
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1])
    x = np.arange(len(layers))
    width = 0.8 / max(len(backends), 1)
    for i, b in enumerate(backends):
        means = [float(np.mean(rates[b][lay])) if lay in rates[b] and len(rates[b][lay]) else np.nan for lay in layers]
        left.bar(x + (i - (len(backends) - 1) / 2) * width, means, width, label=b, color=_color(b, i))
    left.set_xticks(x, layers, rotation=30, ha="right")
    left.set_ylabel("mean rate (spikes / neuron / step)")
    left.set_xlabel("spiking layer")
    left.legend(fontsize=8)
    left.grid(True, axis="y", alpha=0.3)
    left.set_title("layer mean", fontsize=10)
    if backends:
        first = backends[0]
        right.boxplot([np.asarray(rates[first][lay], dtype=float) for lay in layers], whis=(5, 95), showfliers=False)
        right.set_xticks(range(1, len(layers) + 1), layers, rotation=30, ha="right")
        right.set_ylabel("channel rate (spikes / neuron / step)")
        right.set_xlabel("spiking layer")
        right.set_ylim(bottom=0)
        right.grid(True, axis="y", alpha=0.3)
        right.set_title(f"{first}: per channel", fontsize=10)
    fig.suptitle((title + ", " if title else "") + f"T={T}", fontsize=11)
    return fig


# ---- spike raster + membrane trace -----------------------------------------------------------------
def raster(spikes: Mapping[str, np.ndarray], trace: Mapping[str, np.ndarray] | None = None,
           threshold: Mapping[str, float] | None = None, title: str = "", state_label: str = "v",
           trace_spikes: Mapping[str, np.ndarray] | None = None) -> Figure:
    """Spike raster of chosen neurons per layer and membrane traces, for one sample.

    ``spikes[layer]``: (steps, n) 0/1 (or graded, non-zero = a message) for the n chosen
    neurons; ``trace[label]``: (steps,) state of one neuron in integer state units;
    ``threshold[label]``: its firing threshold in the same units (dashed line);
    ``trace_spikes[label]``: (steps,) 0/1 spikes of that neuron (marked on its trace)."""
    layers = list(spikes)
    rows = len(layers) + (1 if trace else 0)
    fig = _figure(8.0, 1.5 * len(layers) + (2.6 if trace else 0) + 0.6)
    axes = fig.subplots(rows, 1, sharex=True, height_ratios=[1] * len(layers) + ([1.8] if trace else []),
                        squeeze=False)[:, 0]
    for ax, name in zip(axes, layers):
        s = np.asarray(spikes[name])
        t, n = np.nonzero(s)
        ax.scatter(t + 1, n, marker="|", s=30, color="#1f77b4", linewidths=1)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_ylabel(f"{name}\nneuron (by rate)", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    if trace:
        ax = axes[-1]
        for i, (label, v) in enumerate(trace.items()):
            steps = np.arange(1, len(v) + 1)
            ax.plot(steps, v, color=f"C{i}", lw=1.2, label=label, drawstyle="steps-post")
            if threshold and label in threshold:
                ax.axhline(threshold[label], color=f"C{i}", ls="--", lw=0.8)
            if trace_spikes and label in trace_spikes:
                t = np.flatnonzero(np.asarray(trace_spikes[label])) + 1
                ax.plot(t, np.asarray(v)[t - 1], ls="none", marker="v", ms=5, color=f"C{i}")
        ax.set_ylabel(f"neuron state {state_label}\n(integer units)", fontsize=8)
        ax.legend(fontsize=7, loc="upper right", title="neuron (dashed: threshold, v: spike)", title_fontsize=7)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("time step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title or "spike raster and membrane potential, one test image", fontsize=11)
    return fig


# ---- backend agreement -----------------------------------------------------------------------------
def agreement(corr: Mapping[str, Mapping[str, float]], title: str = "") -> Figure:
    """Per-layer Pearson correlation of per-neuron spike counts between backends
    (``corr[pair label][layer] = r``; NaN = undefined, e.g. a silent layer). One marker per pair
    and layer (pairs side by side); the y axis zooms in on the values, so 0.99 vs 1.0 shows."""
    pairs = list(corr)
    layers: list[str] = []
    for p in pairs:
        layers += [lay for lay in corr[p] if lay not in layers]
    fig = _figure(max(5.5, 1.3 * len(layers) + 2.5), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    dodge = 0.5 / max(len(pairs), 1)
    finite = []
    for i, p in enumerate(pairs):
        vals = np.array([corr[p].get(lay, np.nan) for lay in layers], dtype=float)
        pos = x + (i - (len(pairs) - 1) / 2) * dodge
        ax.plot(pos, vals, marker="o", ms=7, ls=":", lw=1, label=p, color=_color(p, i))
        for xp, v in zip(pos, vals):
            if np.isfinite(v):
                finite.append(v)
                ax.annotate(f"{v:.4f}", (xp, v), textcoords="offset points", xytext=(0, 7), ha="center",
                            fontsize=6, rotation=90)
    lo = min(finite) if finite else 0.0
    span = max(1.0 - lo, 1e-3)
    ax.set_ylim(max(-1.0, lo - 0.25 * span), 1.0 + 0.35 * span)
    ax.axhline(1.0, color="#888888", lw=0.8, ls="--")
    ax.set_xticks(x, layers, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylabel("Pearson r of spike counts per neuron")
    ax.set_xlabel("spiking layer")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "backend agreement per layer", fontsize=10)
    return fig


__all__ = ["save", "accuracy_vs_t", "accuracy_vs_steps", "layer_error", "layer_error_compare", "firing_rates", "raster", "agreement", "FORMATS", "COLORS"]
