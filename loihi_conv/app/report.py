"""The conversion report: accuracy vs T, per-layer activation error, firing rates, one sample's
spikes and membrane potentials, and how well float SNN, emulator and Lava agree -- as numbers
(``ReportData``, JSON) and as a markdown or HTML page with figures (``loihi_conv.app.plots``).

``collect(...)`` runs everything on a few test images; ``write(data, out_dir)`` draws and writes.
Each quantity is computed once, here, and plotted and tabulated from the same arrays.

Definitions (all on the first ``samples`` test images):
* accuracy: ANN (``ops.forward``), float SNN (``simulate``) at every T, and the emulator on the
  network quantized for that T (``pipeline.quantize_snn`` + ``readout.emulator_predictions``),
  i.e. what ``loihi-conv convert -T T`` would give;
* accuracy-latency frontier: the same emulator accuracy for every target of ``frontier_targets``
  at every T, against the steps a run takes (``decode.steps_for``: T + depth, the input needs
  depth steps to reach the output), with the wall seconds quantizing and emulating took; a point
  is Pareto-optimal when no other point (any target) is at least as accurate in at most as many
  steps and better in one of the two. A target whose quantizer refuses the network is recorded
  with the reason and skipped. Points of the report's own target are the emulator curve's;
* relative activation error of layer l, channel c, at the detail window T (Li et al.,
  parameter-calibration paper, Fig. 2/5): ``||x_c - s_c||^2 / ||x_c||^2`` over samples and
  positions, x the ANN ReLU output, s the SNN estimate ``rate * threshold``
  (``SimResult.activations``); channels silent in the ANN are left out;
* firing rate: spikes (non-zero messages) per neuron per step over the steps on which the
  population receives input (T + L - h; ``SimResult.window``), per channel;
* agreement: Pearson r of per-neuron spike counts over (sample, neuron) pairs, per layer.
Layouts: images (N, C, H, W); counts (N, *block shape); traces (steps,) per neuron.
"""
from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import singledispatch
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.fixed import qir

Progress = Callable[[str], None]


@dataclass
class ReportData:
    """Every number a report shows (JSON-serialisable through ``to_dict``)."""
    model: str
    dataset: str
    target: str
    recipe: dict
    samples: int
    timesteps: list[int]
    detail_t: int
    steps_run: int
    ann_accuracy: float
    snn_accuracy: dict[int, float]
    emulator_accuracy: dict[int, float]
    layer_error: dict[str, list[float]]  # per channel, NaN-free
    rates: dict[str, dict[str, list[float]]]  # backend -> layer -> per-channel rate
    agreement: dict[str, dict[str, float]]  # pair -> layer -> Pearson r
    agreement_samples: dict[str, int]
    exact_match: dict[str, float]  # layer -> fraction of equal emulator/Lava counts
    lava: dict[str, Any]
    raster: dict[str, Any]
    resources: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # {"targets": [asked, in order], "points": [{"target", "T", "steps", "accuracy", "seconds", "pareto"}],
    #  "refused": {target: {"T": T, "reason": one line}}}; empty lists/dict when skipped
    frontier: dict[str, Any] = field(default_factory=lambda: {"targets": [], "points": [], "refused": {}})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=_json_default))


def _json_default(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


# ---- small numeric helpers ----------------------------------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two equally shaped arrays; 1.0 if identical, NaN if one is constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def channel_relative_error(x: torch.Tensor, s: torch.Tensor) -> np.ndarray:
    """Per channel ``sum (x - s)^2 / sum x^2`` over samples and positions; x, s (N, C, ...).
    Channels with ``sum x^2 == 0`` (silent in the ANN) are dropped."""
    dims = [0] + list(range(2, x.dim()))
    num = ((x.double() - s.double()) ** 2).sum(dim=dims)
    den = (x.double() ** 2).sum(dim=dims)
    keep = den > 0
    return (num[keep] / den[keep]).numpy()


def channel_mean(a: np.ndarray) -> np.ndarray:
    """(N, C, ...) -> (C,) mean over samples and positions."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], a.shape[1], -1).mean(axis=(0, 2)) if a.ndim > 2 else a.mean(axis=0)


def pareto(steps: Sequence[int], accuracy: Sequence[float]) -> list[bool]:
    """Per point: True unless another point has ``steps <=`` and ``accuracy >=`` with one strict
    (equal points are both optimal)."""
    pts = list(zip(steps, accuracy))
    return [not any(s2 <= s and a2 >= a and (s2 < s or a2 > a) for s2, a2 in pts) for s, a in pts]


def block_levels(qnet: qir.QNetwork) -> dict[str, int]:
    """Synapse hops from the input to every block (longest path), as ``QNetwork.depth``."""
    hops: dict[str, int] = {}
    for b in qnet.blocks:
        hops[b.name] = max((hops[s.source] + 1 for s in b.synapses), default=0)
    return hops


# ---- membrane trace per neuron type ---------------------------------------------------------------
@singledispatch
def trace_spec(neuron, channel: int) -> tuple[str, float | None]:
    """(recorded state to plot, firing threshold in the same integer units or None)."""
    return ("v", None)


@trace_spec.register
def _(neuron: qir.Cuba, channel):
    return ("v", float(int(neuron.vth) << 6))  # Lava LIF: spike when v > vth << 6


@trace_spec.register
def _(neuron: qir.SoftIF, channel):
    return ("v", float(int(np.asarray(neuron.vth)[channel]) << 6))  # spike when v >= vth << 6


@trace_spec.register
def _(neuron: qir.SigmaDelta, channel):
    return ("sigma", None)  # graded: sends changes of act beyond vth, no spike threshold on sigma


# ---- Lava: per-block spike counts -----------------------------------------------------------------
def lava_counts(qnet: qir.QNetwork, x_int: np.ndarray, steps: int,
                progress: Progress | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Run integer inputs ``x_int`` (K, *input shape) through Lava's CPU simulator one at a
    time and count every hidden block's out-port messages (non-zero values).

    Returns ({block: (K, *shape) counts}, predicted classes (K,), simulated seconds). The
    recorders are ``netx_export``'s memory-mapped PortRecorders, attached to the built network
    before ``LavaRunner`` compiles it (the runner records only the output block's port).
    """
    from loihi_conv.base.layout import monitor_to_torch
    from loihi_conv.fixed.decode import predictions
    from netx_export.build import build
    from netx_export.procs.mmapio import PortRecorder, open_file
    from netx_export.runner import LavaRunner

    net = build(qnet)
    workdir = Path(tempfile.mkdtemp(prefix="loihi_conv_report_"))
    files: dict[str, np.memmap] = {}
    for lb in net.blocks[:-1]:
        if lb.neuron is None:
            continue
        whc = tuple(int(s) for s in lb.shape[::-1])
        path = str(workdir / f"{len(files)}.i64")
        files[lb.name] = open_file(path, steps, whc, "w+")
        lb.neuron.s_out.connect(PortRecorder(shape=whc, rows=steps, path=path).a_in)
    counts = {name: np.zeros((len(x_int), *qnet[name].shape), np.int64) for name in files}
    preds = []
    try:
        with LavaRunner(net) as runner:
            for i in range(len(x_int)):
                if progress:
                    progress(f"Lava sample {i + 1}/{len(x_int)}")
                res = runner.run(x_int[i], steps)
                for name, mm in files.items():
                    counts[name][i] = (monitor_to_torch(np.array(mm)) != 0).sum(axis=0)
                preds.append(int(predictions(qnet, res)[0]))
            seconds = float(runner.timing["run_s"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return counts, np.asarray(preds), seconds


# ---- collect --------------------------------------------------------------------------------------
def collect(model: str = "mnist_cnn", target: str = "if-soft", timesteps: tuple[int, ...] = (4, 8, 16, 32),
            detail_t: int | None = None, samples: int = 100, lava_samples: int = 2,
            recipe: Recipe | None = None, weights: str | None = None, dataset: str | None = None,
            emulator_curve: bool = True, raster_neurons: int = 24,
            frontier_targets: Sequence[str] | None = None,
            progress: Progress | None = None) -> ReportData:
    """Run the report's measurements (module doc) for ``model`` on ``samples`` test images.

    ``timesteps``: readout windows for the accuracy curves; ``detail_t`` (default: the largest)
    the window for errors, rates, raster and the Lava run (``lava_samples`` images; 0 skips
    Lava); ``emulator_curve=False`` quantizes and emulates ``target`` at ``detail_t`` only (and
    at the other T only if the frontier measures ``target``). ``frontier_targets``: targets of the
    accuracy-latency frontier at every T (None: every registered target; empty: no frontier).
    """
    from loihi_conv.app import models, pipeline
    from loihi_conv.app.resources import inspect_network
    from loihi_conv.emulate import emulate
    from loihi_conv.fixed.decode import encode, predictions, steps_for
    from loihi_conv.fixed.quantize import TARGETS
    from loihi_conv.frontend.ops import forward
    from loihi_conv.frontend.prepare import prepare
    from loihi_conv.snn.simulate import simulate

    say = progress or (lambda msg: None)
    recipe = recipe or Recipe()
    ts = sorted({int(t) for t in timesteps})
    if not ts or ts[0] <= 0:
        raise LoihiConvError(f"timesteps {timesteps} must be positive integers", "pass e.g. --timesteps 8,16,32")
    detail_t = ts[-1] if detail_t is None else int(detail_t)
    if detail_t <= 0:
        raise LoihiConvError(f"--detail-T {detail_t} must be positive", "pass e.g. --detail-T 32")
    if lava_samples < 0 or lava_samples > samples:
        raise LoihiConvError(f"--lava-samples {lava_samples} must be between 0 and --samples {samples}",
                             "pass e.g. --lava-samples 2")
    f_targets = list(TARGETS) if frontier_targets is None else list(dict.fromkeys(frontier_targets))
    unknown = [t for t in f_targets if t not in TARGETS]
    if unknown:
        raise LoihiConvError(f"--frontier-targets: unknown target(s) {', '.join(unknown)}",
                             f"use some of {', '.join(TARGETS)} (comma-separated), or none")
    secs: dict[str, float] = {}
    clock = time.perf_counter

    say(f"model {model}")
    ref = models.resolve(model, weights, dataset, progress=False)
    x, y = pipeline.test_data(ref.dataset, samples)

    say("ANN forward")
    ann_out, ann_acts = forward(prepare(ref.module, ref.input_shape), x, record=True)
    ann_acc = float((ann_out.argmax(1) == y).float().mean())
    say("convert")
    snn, secs["convert"] = pipeline.convert_model(ref, recipe)
    say(f"float SNN at T={ts + ([detail_t] if detail_t not in ts else [])}")
    t0 = clock()
    sim = simulate(snn, x, sorted(set(ts) | {detail_t}), delay=recipe.delay, record="neuron")
    secs["simulate"] = clock() - t0
    snn_acc = {T: a for T, a in sim.accuracy(y).items() if T in ts}
    acts = sim.activations(detail_t)
    layer_err = {name: channel_relative_error(ann_acts[name], s).tolist()
                 for name, s in acts.items() if name in ann_acts}  # spiking layers that replace a ReLU

    say(f"quantize for {target} and emulate")
    t0 = clock()
    points: dict[tuple[str, int], dict] = {}  # (target, T) -> frontier point; each measured once
    for T in (ts if emulator_curve else []):
        if T != detail_t:
            points[target, T] = _emulator_point(snn, ref, recipe, target, T, x, y)
    t1 = clock()
    qnet = pipeline.quantize_snn(snn, ref, recipe, target, detail_t)
    steps = steps_for(qnet, detail_t)
    x_int = encode(qnet, x)
    emu = emulate(qnet, x_int, steps)
    emu_pred = predictions(qnet, emu)
    if detail_t in ts:
        points[target, detail_t] = _point(target, detail_t, steps, float((emu_pred == y.numpy()).mean()),
                                          clock() - t1)
    secs["quantize+emulate"] = clock() - t0

    t0 = clock()
    refused: dict[str, dict] = {}
    for tg in f_targets:
        for T in ts:
            if (tg, T) in points:
                continue
            say(f"frontier: {tg} at T={T}")
            try:
                points[tg, T] = _emulator_point(snn, ref, recipe, tg, T, x, y)
            except LoihiConvError as e:  # this target cannot run the network: say why, go on
                refused[tg] = {"T": T, "reason": " ".join(e.problem.split())}
                break
    if f_targets:
        secs["frontier"] = clock() - t0
    emu_acc = {T: p["accuracy"] for (tg, T), p in sorted(points.items(), key=lambda kv: kv[0][1])
               if tg == target}
    front = [points[tg, T] for tg in f_targets for T in ts if (tg, T) in points]
    for p, best in zip(front, pareto([p["steps"] for p in front], [p["accuracy"] for p in front])):
        p["pareto"] = best
    frontier = {"targets": f_targets, "points": front, "refused": refused}

    levels = block_levels(qnet)
    names = [n for n in acts if n in emu.spike_counts]  # spiking layers present in both
    counts = {"float SNN": {n: sim.counts[detail_t][n].numpy() for n in names},
              "emulator": {n: emu.spike_counts[n] for n in names}}
    rates = {"float SNN": {n: channel_mean(sim.rates(detail_t)[n].numpy()).tolist() for n in names},
             "emulator": {n: channel_mean(emu.spike_counts[n] / (steps - levels[n])).tolist() for n in names}}
    agreement = {"float vs emulator": {n: pearson(counts["float SNN"][n], counts["emulator"][n]) for n in names}}
    agree_n = {"float vs emulator": len(y)}
    exact, lava = {}, {"samples": 0}
    if lava_samples:
        say(f"Lava CPU simulator on {_images(lava_samples)}")
        t0 = clock()
        k = lava_samples
        l_counts, l_pred, l_secs = lava_counts(qnet, x_int[:k], steps, progress)
        secs["lava"] = clock() - t0
        rates[f"Lava ({_images(k)})"] = {n: channel_mean(l_counts[n] / (steps - levels[n])).tolist() for n in names}
        for a in ("emulator", "float SNN"):
            pair = f"{a.split()[0]} vs Lava"
            agreement[pair] = {n: pearson(counts[a][n][:k], l_counts[n]) for n in names}
            agree_n[pair] = k
        exact = {n: float((emu.spike_counts[n][:k] == l_counts[n]).mean()) for n in names}
        lava = {"samples": k, "accuracy": float((l_pred == y.numpy()[:k]).mean()),
                "predictions": l_pred.tolist(), "emulator_predictions": emu_pred[:k].tolist(),
                "predictions_agree": bool((l_pred == emu_pred[:k]).all()), "simulated_seconds": l_secs,
                "seconds_per_step": l_secs / (k * steps)}

    say("raster")
    raster = _raster(qnet, x_int[:1], steps, names, raster_neurons)
    resources = inspect_network(qnet).to_dict()
    from netx_export.schema import tool_versions

    versions = {**tool_versions(), "python": platform.python_version()}
    return ReportData(ref.name, ref.dataset, target, recipe.to_dict(), len(y), ts, detail_t, steps, ann_acc,
                      snn_acc, emu_acc, layer_err, rates, agreement, agree_n, exact, lava, raster,
                      {"totals": resources["totals"], "warnings": resources["warnings"],
                       "layers": [{k: lr[k] for k in ("name", "kind", "shape", "neuron", "synapse_count",
                                                      "memory_bytes", "cores")} for lr in resources["layers"]]},
                      secs, versions, frontier)


def _point(target: str, T: int, steps: int, accuracy: float, seconds: float) -> dict:
    return {"target": target, "T": int(T), "steps": int(steps), "accuracy": accuracy, "seconds": seconds}


def _emulator_point(snn, ref, recipe: Recipe, target: str, T: int, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Quantize ``snn`` for ``target`` at T, as ``loihi-conv convert -T T`` would, and score the
    emulator on (x, y); the frontier point, timed (quantize + emulate)."""
    from loihi_conv.app import pipeline
    from loihi_conv.emulate import emulator_predictions
    from loihi_conv.fixed.decode import steps_for

    t0 = time.perf_counter()
    q = pipeline.quantize_snn(snn, ref, recipe, target, T)
    acc = float((emulator_predictions(q, x, T) == y.numpy()).mean())
    return _point(target, T, steps_for(q, T), acc, time.perf_counter() - t0)


def frontier_lines(frontier: dict) -> dict[str, list[dict]]:
    """The frontier's points grouped per target (asked order, refused targets without points
    left out), each list in T order."""
    out: dict[str, list[dict]] = {}
    for p in frontier["points"]:
        out.setdefault(p["target"], []).append(p)
    return {t: sorted(out[t], key=lambda p: p["T"]) for t in frontier["targets"] if t in out}


def frontier_summary(data: ReportData) -> list[str]:
    """One line per frontier target: accuracy at each T with the steps run, or why it was refused."""
    lines = []
    fr = data.frontier
    by_target = frontier_lines(fr)
    for t in fr["targets"]:
        parts = [f"T={p['T']} ({p['steps']} steps) {_pct(p['accuracy'])}" for p in by_target.get(t, [])]
        if t in fr["refused"]:
            parts.append(f"refused at T={fr['refused'][t]['T']}: {fr['refused'][t]['reason']}")
        secs = sum(p["seconds"] for p in by_target.get(t, []))
        lines.append(f"{t}: " + ", ".join(parts) + (f" [{secs:.1f} s]" if t in by_target else ""))
    return lines


def _spread(counts: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to ``k`` neurons evenly spread over the ones that fire, ordered by spike
    count (all of the first ``k`` when none fires)."""
    active = np.flatnonzero(counts)
    if not active.size:
        return np.arange(min(k, counts.size))
    active = active[np.argsort(counts[active], kind="stable")]
    return active[np.unique(np.linspace(0, active.size - 1, min(k, active.size)).round().astype(int))]


def _raster(qnet: qir.QNetwork, x_int: np.ndarray, steps: int, names: list[str], per_layer: int) -> dict:
    """One sample's spikes of chosen neurons per layer, and the traces of three neurons of the first
    spiking layer (the most, median and least active of the chosen ones). Arrays: (steps, n)."""
    from loihi_conv.emulate import emulate

    res = emulate(qnet, x_int, steps, record=names)
    flat = {n: {k: v[0].reshape(steps, -1) for k, v in res.states[n].items()} for n in names}  # (steps, neurons)
    chosen = {n: _spread((flat[n]["s"] != 0).sum(axis=0), per_layer) for n in names}
    out = {"sample": 0, "steps": steps, "neurons": {n: c.tolist() for n, c in chosen.items()},
           "spikes": {n: (flat[n]["s"][:, chosen[n]] != 0).astype(np.int8).tolist() for n in names},
           "trace": {}, "threshold": {}, "trace_spikes": {}, "state": "v"}
    if not names:
        return out
    first, pick = qnet[names[0]], chosen[names[0]]
    per_channel = int(np.prod(first.shape[1:]))  # neurons per channel (1 for a vector block)
    for idx in dict.fromkeys(int(i) for i in (pick[-1], pick[len(pick) // 2], pick[0])):
        state, th = trace_spec(first.neuron, idx // per_channel)
        spikes = (flat[names[0]]["s"][:, idx] != 0).astype(int)
        label = f"{names[0]}[{_unravel(idx, first.shape)}] ({int(spikes.sum())} spikes)"
        out["state"] = state
        out["trace"][label] = flat[names[0]][state][:, idx].astype(float).tolist()
        out["trace_spikes"][label] = spikes.tolist()
        if th is not None:
            out["threshold"][label] = th
    return out


def _unravel(idx: int, shape) -> str:
    return ",".join(str(int(i)) for i in np.unravel_index(int(idx), tuple(shape)))


# ---- write ----------------------------------------------------------------------------------------
@dataclass
class Section:
    """One part of the page: heading, paragraphs, an optional table, an optional figure."""
    title: str
    text: list[str] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] | None = None
    figure: str | None = None


def _images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def _pct(v) -> str:
    return "" if v is None or not np.isfinite(v) else f"{100 * v:.2f}%"


def _num(v, fmt="{:.3g}") -> str:
    return "" if v is None or not np.isfinite(v) else fmt.format(v)


def draw(data: ReportData, fig_dir: Path) -> dict[str, dict[str, Path]]:
    """Draw every figure into ``fig_dir`` (PNG + SVG); returns {figure name: {format: path}}."""
    from loihi_conv.app import plots

    title = f"{data.model} -> {data.target}"
    curves = {"float SNN": data.snn_accuracy}
    if data.emulator_accuracy:
        curves[f"emulator ({data.target}, quantized per T)"] = data.emulator_accuracy
    figs = {
        "accuracy": plots.accuracy_vs_t(curves, data.ann_accuracy, title, data.samples),
        "layer_error": plots.layer_error(data.layer_error, data.detail_t, f"{data.model}, float SNN vs ANN"),
        "firing_rates": plots.firing_rates(data.rates, data.detail_t, title),
        "raster": plots.raster({n: np.asarray(s) for n, s in data.raster["spikes"].items()},
                               {k: np.asarray(v) for k, v in data.raster["trace"].items()},
                               data.raster["threshold"],
                               f"{title}: test image {data.raster['sample']}, emulator, T={data.detail_t} "
                               f"({data.steps_run} steps)", data.raster["state"],
                               {k: np.asarray(v) for k, v in data.raster["trace_spikes"].items()}),
        "agreement": plots.agreement({f"{p} ({_images(data.agreement_samples[p])})": v
                                      for p, v in data.agreement.items()},
                                     f"{title}: spike-count agreement per layer, T={data.detail_t}"),
    }
    fr = data.frontier
    if fr["points"]:
        figs["frontier"] = plots.accuracy_vs_steps(
            {t: [(p["T"], p["steps"], p["accuracy"]) for p in pts] for t, pts in frontier_lines(fr).items()},
            data.ann_accuracy, f"{data.model}: emulator accuracy vs steps run, per target", data.samples,
            [(p["steps"], p["accuracy"]) for p in fr["points"] if p["pareto"]],
            {t: f"refused at T={r['T']}" for t, r in fr["refused"].items()})
    return {name: plots.save(fig, fig_dir, name) for name, fig in figs.items()}


def sections(data: ReportData) -> list[Section]:
    """The report's content, independent of the output format."""
    r = data.recipe
    out = [Section("Settings", [
        f"Model **{data.model}** on **{data.dataset}** ({data.samples} test images), target **{data.target}**; "
        f"recipe: {r['normalizer']} (p={r['percentile']}), {r['granularity']}-wise, {r['neuron_model']}, "
        f"v_init={r['v_init']}, delay={r['delay']}, {r['calib_size']} calibration images.",
        f"Detail window T={data.detail_t} ({data.steps_run} steps run on the emulator and Lava). "
        "Tool versions: " + ", ".join(f"{k} {v}" for k, v in data.versions.items()) + "."])]
    rows = [[str(T), _pct(data.snn_accuracy.get(T)), _pct(data.emulator_accuracy.get(T)),
             _num(100 * (data.ann_accuracy - data.snn_accuracy[T]), "{:.2f}")] for T in data.timesteps]
    out.append(Section("Accuracy vs T", [
        f"ANN: {_pct(data.ann_accuracy)}. Float SNN from one simulation; emulator on the network quantized "
        f"for each T ({data.target}), as `loihi-conv convert -T T` would produce it."],
        (["T", "float SNN", "emulator", "ANN - SNN (points)"], rows), "accuracy"))
    fr = data.frontier
    if fr["targets"]:
        rows = [[t, str(p["T"]), str(p["steps"]), _pct(p["accuracy"]),
                 _num(100 * (data.ann_accuracy - p["accuracy"]), "{:.2f}"), "yes" if p["pareto"] else "",
                 _num(p["seconds"], "{:.2f}")] for t, pts in frontier_lines(fr).items() for p in pts]
        text = [f"Emulator accuracy of the network quantized for each target at each T (as `loihi-conv convert "
                f"--target TARGET -T T` makes it) against the steps a run takes: T + the network's depth, since the "
                f"input needs one step per synapse hop to reach the output. ANN: {_pct(data.ann_accuracy)}. "
                "Pareto: no other point is as accurate in as few steps. Seconds: quantize + emulate "
                f"{_images(data.samples)} on this machine."]
        text += [f"Refused: **{t}** (at T={r['T']}): {r['reason']}" for t, r in fr["refused"].items()]
        out.append(Section("Accuracy-latency frontier", text,
                           (["target", "T", "steps run", "emulator", "ANN - emulator (points)", "Pareto", "seconds"],
                            rows), "frontier" if fr["points"] else None))
    rows = []
    for n, e in data.layer_error.items():
        e = np.asarray(e)
        rows.append([n, str(e.size)] + ([_num(np.median(e)), _num(e.mean()), _num(np.percentile(e, 95))]
                                        if e.size else ["", "", ""]))
    out.append(Section("Per-layer relative activation error", [
        f"Per channel ||x - s||² / ||x||² between the ANN ReLU output x and the float SNN estimate s = rate × "
        f"threshold at T={data.detail_t}, over samples and positions (Li et al., parameter calibration, Fig. 2/5). "
        "Channels silent in the ANN are left out."],
        (["layer", "channels", "median", "mean", "95th pct"], rows), "layer_error"))
    backends = list(data.rates)
    rows = [[n] + [_num(float(np.mean(data.rates[b][n])), "{:.4f}") for b in backends] for n in data.rates[backends[0]]]
    out.append(Section("Firing rates", [
        "Mean spikes (non-zero out-port messages: graded ones for sdnn) per neuron per step, over the steps "
        "each layer receives input (T + depth - level)."],
        (["layer"] + backends, rows), "firing_rates"))
    ras = data.raster
    out.append(Section("Spike raster and membrane potential", [
        f"Emulator, test image {ras['sample']}: spikes of up to "
        f"{max((len(v) for v in ras['neurons'].values()), default=0)} "
        "neurons per layer (evenly spread over the active neurons, sorted by spike count); membrane "
        f"`{ras['state']}` of three neurons of the first layer in integer state units with their thresholds."],
        None, "raster"))
    pairs = list(data.agreement)
    rows = [[n] + [_num(data.agreement[p].get(n), "{:.4f}") for p in pairs]
            + ([f"{100 * data.exact_match[n]:.2f}%"] if data.exact_match else []) for n in data.rates[backends[0]]]
    text = ["Pearson r of per-neuron spike counts over (image, neuron) pairs; "
            + ", ".join(f"{p}: {_images(data.agreement_samples[p])}" for p in pairs) + "."]
    if data.lava.get("samples"):
        lv = data.lava
        text.append(f"Lava CPU simulator: accuracy {_pct(lv['accuracy'])} on {_images(lv['samples'])}, predictions "
                    f"{'agree' if lv['predictions_agree'] else 'DIFFER'} with the emulator, "
                    f"{1e3 * lv['seconds_per_step']:.1f} ms per step.")
    else:
        text.append("Lava was not run (--lava-samples 0).")
    head = ["layer"] + pairs + (["emulator = Lava counts"] if data.exact_match else [])
    out.append(Section("Backend agreement", text, (head, rows), "agreement"))
    tot = data.resources["totals"]
    rows = [[lr["name"], lr["kind"], "x".join(map(str, lr["shape"])), lr["neuron"], f"{lr['synapse_count']:,}",
             f"{lr['memory_bytes'] / 1024:.1f}", "host" if not lr["cores"][1] else
             (str(lr["cores"][0]) if lr["cores"][0] == lr["cores"][1] else f"{lr['cores'][0]}..{lr['cores'][1]}")]
            for lr in data.resources["layers"]]
    out.append(Section("Loihi 2 resources (estimate)", [
        f"{tot['neurons']:,} neurons, {tot['synapses']:,} synapses, {tot['memory_bytes'] / 1024:.1f} KiB synaptic "
        f"memory, {tot['cores'][0]}..{tot['cores'][1]} neurocores (see `loihi-conv inspect` for the limits and "
        "their sources)."] + [f"Warning: {w}" for w in data.resources["warnings"]],
        (["block", "type", "shape", "neuron", "synapses", "KiB", "cores"], rows)))
    out.append(Section("Run time", [", ".join(f"{k} {v:.1f} s" for k, v in data.seconds.items()) + "."]))
    return out


def _md(secs: list[Section], title: str, figs: dict[str, dict[str, Path]], root: Path) -> str:
    lines = [f"# {title}", ""]
    for s in secs:
        lines += [f"## {s.title}", ""] + [t + "\n" for t in s.text]
        if s.table:
            head, rows = s.table
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        if s.figure:
            png = figs[s.figure]["png"].relative_to(root).as_posix()
            svg = figs[s.figure]["svg"].relative_to(root).as_posix()
            lines += [f"![{s.title}]({png})", "", f"([SVG]({svg}))", ""]
    return "\n".join(lines)


def _html(secs: list[Section], title: str, figs: dict[str, dict[str, Path]], root: Path) -> str:
    import html
    import re

    def inline(t: str) -> str:  # the markdown we use: **bold** and `code`
        t = html.escape(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in secs:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{inline(t)}</p>" for t in s.text]
        if s.table:
            head, rows = s.table
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
            body.append("</table>")
        if s.figure:
            png = figs[s.figure]["png"].relative_to(root).as_posix()
            body.append(f'<p><img src="{png}" alt="{html.escape(s.title)}" style="max-width:100%"></p>')
    style = ("body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(body) + "</body></html>")


RENDERERS = {"md": _md, "html": _html}


def write(data: ReportData, out_dir: str | Path, fmt: str = "md") -> dict[str, Path]:
    """Write ``report.md`` (or ``.html``), ``report.json`` and ``figures/*.png|svg`` into
    ``out_dir``; returns {"report": path, "json": path, <figure>_<format>: path, ...}."""
    from loihi_conv.base.files import atomic_write_text

    if fmt not in RENDERERS:
        raise LoihiConvError(f"unknown report format {fmt!r}", f"use one of {', '.join(RENDERERS)}")
    root = Path(out_dir)
    figs = draw(data, root / "figures")
    title = f"loihi-conv report: {data.model} -> {data.target}"
    report = atomic_write_text(root / f"report.{fmt}", RENDERERS[fmt](sections(data), title, figs, root))
    js = atomic_write_text(root / "report.json", json.dumps(data.to_dict(), indent=2))
    paths = {"report": report, "json": js}
    for name, by_fmt in figs.items():
        paths.update({f"{name}_{f}": p for f, p in by_fmt.items()})
    return paths


__all__ = ["ReportData", "Section", "collect", "write", "draw", "sections", "pearson", "pareto",
           "frontier_lines", "frontier_summary",
           "channel_relative_error", "channel_mean", "lava_counts", "trace_spec", "block_levels"]
