"""The high-level steps the CLI and notebooks run: calibrate, convert, evaluate."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from loihi_conv.app import data, scaleout
from loihi_conv.app.models import ModelRef
from loihi_conv.convert import Recipe, convert
from loihi_conv.frontend import ir
from loihi_conv.frontend.ops import forward
from loihi_conv.frontend.prepare import prepare
from loihi_conv.snn.simulate import simulate


def calibration_data(dataset: str, recipe: Recipe) -> torch.Tensor:
    """``recipe.calib_size`` training images (never test), seeded."""
    return torch.cat(list(data.calibration_batches(dataset, n=recipe.calib_size, seed=recipe.seed)))


def test_data(dataset: str, samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``samples`` test images (all when None)."""
    if samples is not None and samples <= 0:
        from loihi_conv.base.errors import LoihiConvError
        raise LoihiConvError(f"--samples must be positive, got {samples}", "pass e.g. --samples 1000")
    return data.load_dataset(dataset, "test", limit=samples)  # an image folder decodes only those


def convert_model(ref: ModelRef, recipe: Recipe, device=None) -> tuple[ir.Graph, float]:
    """SNN IR of a resolved model and the wall time conversion took (seconds); calibration on
    ``device`` (None: cpu)."""
    t0 = time.perf_counter()
    snn = convert(ref.module, calibration_data(ref.dataset, recipe), recipe, input_shape=ref.input_shape,
                  **scaleout.device_kw(convert, device))
    return snn, time.perf_counter() - t0


@dataclass
class Evaluation:
    model: str
    dataset: str
    samples: int
    recipe: dict
    ann_accuracy: float
    snn_accuracy: dict[int, float]
    steps_run: dict[int, int]
    convert_seconds: float
    simulate_seconds: float
    extra: dict = field(default_factory=dict)

    def table(self) -> str:
        rows = [f"{'T':>5} {'steps':>6} {'SNN acc':>8} {'ANN - SNN':>10}"]
        for T, acc in self.snn_accuracy.items():
            rows.append(f"{T:>5} {self.steps_run[T]:>6} {100 * acc:>7.2f}% {100 * (self.ann_accuracy - acc):>9.2f}")
        head = (f"{self.model} on {self.dataset} ({self.samples} test images)  ANN {100 * self.ann_accuracy:.2f}%"
                f"  [{self.recipe['normalizer']} p={self.recipe['percentile']} {self.recipe['granularity']}-wise,"
                f" {self.recipe['neuron_model']}]")
        return head + "\n" + "\n".join(rows)


def evaluate(ref: ModelRef, recipe: Recipe, timesteps: tuple[int, ...] | None = None,
             samples: int | None = None, scale: "scaleout.Scale | None" = None) -> Evaluation:
    """ANN accuracy and float-SNN accuracy at every T on the test split; the simulation sharded
    over ``scale``'s workers (``app.scaleout``: the same accuracies as one process)."""
    ts = tuple(timesteps or recipe.timesteps)
    scale = (scale or scaleout.Scale()).check()
    x, y = test_data(ref.dataset, samples)
    ann = prepare(ref.module, ref.input_shape)
    ann_acc = float((forward(ann, x).argmax(1) == y).float().mean())
    snn, t_conv = convert_model(ref, recipe, scale.device)
    t0 = time.perf_counter()
    if scale.executor == "inline":
        res = simulate(snn, x, ts, delay=recipe.delay, record=False, **scaleout.device_kw(simulate, scale.device))
    else:
        res = scaleout.simulate(snn, x, ts, delay=recipe.delay, scale=scale)
    t_sim = time.perf_counter() - t0
    return Evaluation(ref.name, ref.dataset, len(y), recipe.to_dict(), ann_acc, res.accuracy(y),
                      {T: res.steps(T) for T in ts}, t_conv, t_sim)


def quantize_snn(snn: ir.Graph, ref: ModelRef, recipe: Recipe, target: str, timesteps: int,
                 force: bool = False):
    """Fixed-point network for ``target`` at readout window T, scaled on calibration images."""
    from loihi_conv.fixed.quantize import quantize

    calib = calibration_data(ref.dataset, recipe)
    qnet = quantize(snn, target, timesteps=timesteps, calib=calib, force=force)
    return _stamp(qnet, ref, target, timesteps)


def _stamp(qnet, ref: ModelRef, target: str, timesteps: int):
    """What a file says of its origin (``meta``): model, dataset, target, T."""
    qnet.meta.update(model=ref.name, dataset=ref.dataset, target=target, timesteps=int(timesteps))
    return qnet


def search_recipe(ref: ModelRef, target: str, timesteps: int, fixed: dict, **opts):
    """``app.recipe_search.search`` for a resolved model; its ``qnet`` is stamped like ``quantize_snn``'s,
    so the file it makes is the one ``convert --recipe`` rebuilds from the chosen recipe."""
    from loihi_conv.app.recipe_search import search

    result = search(ref.module, ref.dataset, ref.input_shape, target, timesteps, fixed, **opts)
    _stamp(result.qnet, ref, target, timesteps)
    return result


def emulator_accuracy(qnet, dataset: str, timesteps: int, samples: int | None = None,
                      scale: "scaleout.Scale | None" = None) -> tuple[float, float]:
    """Emulator test accuracy at T and the wall seconds it took (sharded over ``scale``'s workers)."""
    x, y = test_data(dataset, samples)
    t0 = time.perf_counter()
    pred = scaleout.emulator_predictions(qnet, x, timesteps, scale=scale)
    return float((torch.as_tensor(pred) == y).float().mean()), time.perf_counter() - t0
