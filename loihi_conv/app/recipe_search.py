"""Recipe search: the conversion recipe with the best fixed-point accuracy for a target and T.

The objective is what runs on Loihi: convert with a candidate recipe, quantize for the target,
and score the emulator (bit-exact with Lava) on training images held out from the calibration
images -- never test images. Optuna's TPE proposes the candidates (seeded, so the sequence of
proposals is reproducible); every trial is scored chunk by chunk and a median pruner stops the
weak ones early; the user's time budget bounds the study (``trials`` bounds it exactly).

The space is declared by the units themselves: each normalizer its ``knobs``, each neuron model
its params' ``knobs``, the conversion methods their switches (``convert.methods.METHOD_KNOBS``),
and each target which neuron models and method switches it keeps
(``fixed.quantize.register_target``). A knob the caller fixed is not searched. The first trials
are the target's own start points, the calibration paper's recipe and today's defaults (in that
order: a tight budget may allow only one or two), so with a budget for them the search never
returns worse than those on the held-out images.

Data: calibration = the recipe's seeded ``calib_size`` training images (``data.calibration_batches``);
held-out = images from the next ``HARD_POOL * heldout`` of the same seeded permutation, so the two
never overlap: the ``heldout`` of them with the smallest ANN logit margin. A conversion changes
the class of an image only where the ANN's top two logits are close, so the easy images score
the same under every recipe and only add noise: on fmnist_cnn (if-soft, T=32), 1000 random
held-out images ranked the recipe 0.27 points worse on test first, the 1000 hardest of 10000
ranked the two the way the test set does, on two disjoint pools.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from loihi_conv.app import data
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.knobs import Choice
from loihi_conv.convert import Recipe, convert
from loihi_conv.convert.methods.apply import METHOD_KNOBS
from loihi_conv.convert.normalize import NORMALIZERS
from loihi_conv.emulate import emulator_predictions
from loihi_conv.fixed import qir
from loihi_conv.fixed.quantize import TARGETS, quantize
from loihi_conv.fixed.quantize.rounding import QUANTIZE_KNOBS
from loihi_conv.frontend import ir
from loihi_conv.frontend.ops import forward
from loihi_conv.frontend.prepare import prepare
from loihi_conv.snn.neurons import NEURON_MODELS

KNOBS = {**METHOD_KNOBS, **QUANTIZE_KNOBS}  # what a target's ``recipe_knobs`` may name
DEFAULT_BUDGET = 240.0  # seconds; the bound is 5 minutes per (model, target, T)
DEFAULT_HELDOUT = 1000
HARD_POOL = 10  # held-out images are the hardest ``heldout`` of this many times as many
CHUNKS = 4  # held-out images are scored in this many chunks; the pruner looks after each
PRUNE_AFTER = 4  # completed trials before the median pruner stops weak ones
# Starting points, tried first (in this order, after the target's own, ``register_target(starts=)``)
# as far as the space allows (knobs it lacks are dropped, knobs a point does not name take the
# Recipe default; tried after the others): the defaults; the calibration
# paper's recipe (MMSE thresholds, ClipRound, LCP + ACP); that with multi-bit spikes and
# voltage clamping (the best T=8 recipe of benchmarks/results/low_latency.md); the RetinaNet
# paper's unbiased quantization with clamping.
CALIBRATION = {"normalizer": "mmse", "mmse_rounding": "round", "clip_round": True, "lcp": True, "acp": True}
STARTS = ({}, CALIBRATION, {**CALIBRATION, "neuron_model": "if-multibit", "clamp_delay": 1},
          {"v_init": 0.5, "clamp_delay": 1})


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    accuracy: float | None  # held-out accuracy (partial when pruned), None when refused
    seconds: float
    state: str  # "complete" | "pruned" | "refused"
    note: str = ""


@dataclass
class SearchResult:
    """The chosen recipe, its quantized network and held-out accuracy, and every trial."""
    recipe: Recipe
    qnet: qir.QNetwork
    snn: ir.Graph
    accuracy: float
    ann_accuracy: float
    target: str
    timesteps: int
    heldout: int
    seconds: float
    trials: list[TrialRecord] = field(default_factory=list)
    pool: int = 0  # the held-out images are the hardest ``heldout`` of this many (module doc)

    def summary(self) -> str:
        done = sum(t.state == "complete" for t in self.trials)
        pruned = sum(t.state == "pruned" for t in self.trials)
        return (f"recipe search ({self.target}, T={self.timesteps}): {len(self.trials)} trials "
                f"({done} complete, {pruned} pruned) in {self.seconds:.0f} s; held-out accuracy "
                f"{100 * self.accuracy:.2f}% on the {self.heldout} hardest for the ANN of {self.pool} training "
                f"images not used for calibration (ANN {100 * self.ann_accuracy:.2f}% on them)\nchosen: {describe(self.recipe)}")

    def to_dict(self) -> dict:
        return {"target": self.target, "timesteps": self.timesteps, "heldout": self.heldout, "pool": self.pool,
                "accuracy": self.accuracy, "ann_accuracy": self.ann_accuracy, "seconds": self.seconds,
                "recipe": self.recipe.to_dict(),
                "trials": [t.__dict__ for t in self.trials]}


def describe(recipe: Recipe) -> str:
    """The recipe options that differ from the defaults, as ``key=value`` words."""
    base = Recipe().to_dict()
    return " ".join(f"{k}={v}" for k, v in recipe.to_dict().items() if v != base[k]) or "defaults"


def heldout_data(dataset: str, calib_size: int, n: int, seed: int, ann: ir.Graph | None = None,
                 pool: int = HARD_POOL) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training images and labels from right after the ``calib_size`` calibration images in
    the seeded permutation ``data.calibration_batches`` draws from: disjoint from them by
    construction. With ``ann``: the ``n`` whose ANN logit margin (top-1 minus top-2, over the
    image's logit spread) is smallest among the next ``pool * n`` (as many as the split has),
    in permutation order; without, the next ``n``."""
    total = data.split_size(dataset, "train")
    m = _pool_size(total, calib_size, n, pool if ann is not None else 1)
    if m < 50:
        raise LoihiConvError(f"{dataset} has {total} training images: too few to hold out images for the "
                             f"recipe search after {calib_size} calibration images",
                             "lower --calib-size, or pass --no-search and choose the recipe yourself")
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[calib_size:calib_size + m]
    if ann is not None and m > n:
        idx = idx[_margins(ann, dataset, idx).argsort(stable=True)[:n].sort().values]
    return data.take(dataset, "train", idx)


def _pool_size(total: int, calib_size: int, n: int, pool: int) -> int:
    return min(n * pool, total - calib_size)


def _margins(ann: ir.Graph, dataset: str, idx: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The ANN's top-1 minus top-2 logit per image, over the standard deviation of its logits
    (batched: a large pool is never in memory at once)."""
    out = []
    with torch.no_grad():
        for part in idx.split(batch):
            logits = forward(ann, data.take(dataset, "train", part)[0]).flatten(1)
            top = logits.topk(2, 1).values
            out.append((top[:, 0] - top[:, 1]) / logits.std(1).clamp_min(1e-12))
    return torch.cat(out)


def space(graph: ir.Graph, target: str, fixed: dict[str, Any]) -> list[tuple[str, Choice, Any]]:
    """The knobs of ``target`` the caller did not fix, as (name, domain, condition) in
    suggestion order; a condition ``(knob, values)`` makes a knob exist only when an earlier one
    took one of ``values`` (e.g. ``percentile`` only for the percentile normalizer)."""
    profile = TARGETS[target]
    out: list[tuple[str, Choice, Any]] = []

    def add(name: str, dom: Choice, cond=None) -> None:
        if name not in fixed and len(dom.values) > 1:
            out.append((name, dom, cond))

    norms = tuple(n for n, cls in NORMALIZERS.items() if cls.knobs is not None)
    add("normalizer", Choice(norms))
    chosen_norms = (fixed["normalizer"],) if "normalizer" in fixed else norms
    for norm in chosen_norms:
        for knob, dom in (NORMALIZERS[norm].knobs or {}).items():
            if not any(knob == k for k, _, _ in out):
                users = tuple(n for n in chosen_norms if knob in (NORMALIZERS[n].knobs or {}))
                add(knob, dom, None if len(users) == len(norms) else ("normalizer", users))
    models = (fixed["neuron_model"],) if "neuron_model" in fixed else profile.neuron_models
    add("neuron_model", Choice(tuple(models)))
    if "neuron_params" not in fixed:
        for model in models:
            for knob, dom in NEURON_MODELS[model].knobs.items():
                add(f"neuron_params.{knob}", dom, ("neuron_model", (model,)))
    for knob in profile.recipe_knobs:
        dom = KNOBS[knob]
        if dom.only_for is not None and not graph.of_type(dom.only_for):
            continue  # e.g. no MaxPool2d: the max-pool scheme changes nothing
        if dom.requires is None:
            add(knob, dom)
        elif dom.requires[0] not in fixed:
            add(knob, dom, (dom.requires[0], (dom.requires[1],)))
        elif fixed[dom.requires[0]] == dom.requires[1]:
            add(knob, dom)
    return out


def _suggest(trial, knobs) -> dict[str, Any]:
    """Suggest every knob whose condition holds; returns recipe overrides."""
    chosen: dict[str, Any] = {}
    for name, dom, cond in knobs:
        if cond is not None and cond[0] in chosen and chosen[cond[0]] not in cond[1]:
            continue
        chosen[name] = trial.suggest_categorical(name, list(dom.values))
    params = {k.split(".", 1)[1]: v for k, v in chosen.items() if k.startswith("neuron_params.")}
    out = {k: v for k, v in chosen.items() if not k.startswith("neuron_params.")}
    if params:
        out["neuron_params"] = params
    return out


def _start_points(knobs, target: str) -> list[dict[str, Any]]:
    """The target's own ``starts``, then ``STARTS`` with the defaults last (a tight budget may
    allow only a trial or two: the known-strong recipes go first), in the space: a value the space
    cannot take, or a knob a start does not name, becomes the Recipe default (the first choice
    where the default is not one)."""
    defaults = Recipe().to_dict()

    def value(name: str, dom: Choice, start: dict[str, Any]) -> Any:
        for v in (start.get(name), defaults.get(name)):
            if v is not None and v in dom.values:
                return v
        return dom.values[0]

    points = []
    for start in (*TARGETS[target].starts, *STARTS[1:], STARTS[0]):  # strongest first: budgets can be tight
        point = {n: value(n, dom, start) for n, dom, _ in knobs}
        if point not in points:
            points.append(point)
    return points


@dataclass
class _Job:
    """What every trial needs, shipped to each worker once (``app.scaleout``)."""
    ann: ir.Graph
    calib: torch.Tensor
    chunks: list[tuple[torch.Tensor, torch.Tensor]]
    base: Recipe
    target: str
    timesteps: int
    device: str = "cpu"


@dataclass
class _Outcome:
    state: str  # "complete" | "pruned" | "refused"
    accuracy: float | None
    values: list[float]  # held-out accuracy after each chunk (what the trial reports)
    seconds: float
    note: str = ""
    snn: ir.Graph | None = None  # complete trials only
    qnet: qir.QNetwork | None = None


def _trial(ctx: dict, overrides: dict[str, Any], thresholds: list[float | None], late_at: float | None) -> _Outcome:
    """Convert, quantize and score one candidate chunk by chunk; stop early when its best
    accuracy so far is below ``thresholds[k]`` (the median pruner's, fixed when the round was
    asked) or, after a chunk, the wall clock passed ``late_at`` (the budget, once a best exists)."""
    from loihi_conv.app.scaleout import device_kw

    job: _Job = ctx["job"]
    t0 = time.perf_counter()
    try:
        recipe = job.base.replace(**overrides)
        snn = convert(job.ann, job.calib, recipe, **device_kw(convert, job.device))
        qnet = quantize(snn, job.target, job.timesteps, calib=job.calib)
    except LoihiConvError as e:  # a combination the target cannot hold: not a candidate
        return _Outcome("refused", None, [], time.perf_counter() - t0, e.problem)
    correct = seen = 0
    values: list[float] = []
    for k, (xc, yc) in enumerate(job.chunks):
        pred = emulator_predictions(qnet, xc, job.timesteps, **device_kw(emulator_predictions, job.device))
        correct += int((torch.as_tensor(pred) == yc).sum())
        seen += len(yc)
        values.append(correct / seen)
        late = late_at is not None and time.time() > late_at
        weak = thresholds[k] is not None and max(values) < thresholds[k]
        if k + 1 < len(job.chunks) and (weak or late):
            return _Outcome("pruned", correct / seen, values, time.perf_counter() - t0, "over budget" if late else "")
    return _Outcome("complete", correct / seen, values, time.perf_counter() - t0, snn=snn, qnet=qnet)


def _thresholds(study, steps: int) -> list[float | None]:
    """Optuna's MedianPruner(n_startup_trials=PRUNE_AFTER, n_warmup_steps=0) rule, as a number per
    step: the median accuracy the completed trials had after that chunk (None: do not prune)."""
    import numpy as np
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < PRUNE_AFTER:
        return [None] * steps
    out: list[float | None] = []
    for k in range(steps):
        vals = [t.intermediate_values[k] for t in done if k in t.intermediate_values]
        out.append(float(np.nanpercentile(np.asarray(vals, dtype=float), 50)) if vals else None)
    return out


def search(module: torch.nn.Module, dataset: str, input_shape: tuple[int, ...], target: str, timesteps: int,
           fixed: dict[str, Any] | None = None, budget: float | None = DEFAULT_BUDGET, trials: int | None = None,
           seed: int = 0, heldout: int = DEFAULT_HELDOUT, progress: bool = True, scale=None) -> SearchResult:
    """Search the recipe for ``target`` at readout window ``timesteps`` (module doc).

    ``fixed``: recipe fields the caller chose (``Recipe`` field names; ``neuron_params`` as a
    dict); they are never searched. ``budget``: seconds for the whole study (None: no limit);
    ``trials``: at most this many trials (None: until the budget) -- with ``trials`` and no
    budget the result is a function of ``seed`` and the number of workers alone. Returns the best
    recipe with its quantized network (the one to export) and the trial log.

    ``scale`` (``app.scaleout.Scale``): trials run in rounds of one per worker, each round's
    candidates asked from the study before any of them is scored (``study.ask``) and told back in
    trial order (``study.tell``); with one worker that is exactly the one-at-a-time search.
    """
    import optuna
    from optuna.trial import TrialState

    from loihi_conv.app.scaleout import Scale, open_pool

    if target not in TARGETS:
        raise LoihiConvError(f"unknown quantization target {target!r}", f"use one of: {', '.join(sorted(TARGETS))}")
    if budget is None and trials is None:
        raise LoihiConvError("the recipe search needs a time budget or a number of trials",
                             "pass --budget SECONDS or --trials N")
    scale = (scale or Scale()).check()
    t_start = time.perf_counter()
    fixed = {**TARGETS[target].recipe_fixed, **dict(fixed or {})}
    base = Recipe(**fixed).replace(calib_timesteps=fixed.get("calib_timesteps", int(timesteps)),
                                   timesteps=(int(timesteps),))
    ann = prepare(module, tuple(input_shape))
    calib = torch.cat(list(data.calibration_batches(dataset, n=base.calib_size, seed=base.seed)))
    x, y = heldout_data(dataset, base.calib_size, heldout, base.seed, ann)
    ann_acc = float((forward(ann, x).argmax(1) == y).float().mean())
    knobs = space(ann, target, fixed)
    job = _Job(ann, calib, list(zip(x.tensor_split(CHUNKS), y.tensor_split(CHUNKS))), base, target,
               int(timesteps), scale.device)
    records: list[TrialRecord] = []
    best: dict[str, Any] = {}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # group=True is "experimental" in Optuna 5; it is what conditional knobs need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(STARTS) + 3, multivariate=True,
                                             group=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for point in _start_points(knobs, target):
        study.enqueue_trial(point, skip_if_exists=True)
    bar = tqdm(total=trials, desc=f"recipe search {target} T={timesteps}", unit="trial", disable=not progress)
    try:
        with open_pool(scale, {"job": job}) as pool, warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            t_opt = time.perf_counter()
            while trials is None or len(records) < trials:
                if budget is not None and time.perf_counter() - t_opt >= budget:
                    break
                n = pool.workers if trials is None else min(pool.workers, trials - len(records))
                asked = []
                for _ in range(n):  # asked one after another: the sampler's draws follow its seed
                    trial = study.ask()
                    asked.append((trial, _suggest(trial, knobs)))
                late_at = time.time() + budget - (time.perf_counter() - t_start) if budget is not None and best \
                    else None
                limits = _thresholds(study, CHUNKS)
                outcomes = pool.map(_trial, [(overrides, limits, late_at) for _, overrides in asked])
                for (trial, overrides), out in zip(asked, outcomes):
                    for k, v in enumerate(out.values):
                        trial.report(v, k)
                    records.append(TrialRecord(trial.number, overrides, out.accuracy, out.seconds, out.state,
                                               out.note))
                    if out.state != "complete":
                        study.tell(trial, state=TrialState.PRUNED)
                    else:
                        study.tell(trial, out.accuracy)
                        if out.accuracy > best.get("accuracy", -1.0):
                            best.update(accuracy=out.accuracy, recipe=base.replace(**overrides), snn=out.snn,
                                        qnet=out.qnet)
                    bar.update(1)
                    if best:
                        bar.set_postfix(best=f"{100 * best['accuracy']:.2f}%", refresh=False)
    finally:
        bar.close()
    if not best:
        raise LoihiConvError(f"no recipe the search tried could be quantized for {target!r} "
                             f"({records[-1].note if records else 'no trial finished within the budget'})",
                             "raise --budget, or pass --no-search with a recipe the target runs")
    return SearchResult(best["recipe"], best["qnet"], best["snn"], best["accuracy"], ann_acc, target,
                        int(timesteps), len(y), time.perf_counter() - t_start, records,
                        _pool_size(data.split_size(dataset, "train"), base.calib_size, heldout, HARD_POOL))


def fixed_from(recipe_file: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The knobs a user fixed: every key of a recipe file, then every option given on the
    command line (None = not given)."""
    out: dict[str, Any] = {}
    if recipe_file:
        out.update(Recipe.from_toml(recipe_file).to_dict())
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


__all__ = ["DEFAULT_BUDGET", "SearchResult", "TrialRecord", "describe", "fixed_from", "heldout_data", "search",
           "space"]
