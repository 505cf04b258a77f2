"""Scale-out (loihi_conv.app.scaleout): ``score``, ``evaluate`` and the recipe search sharded over
worker processes or a local Ray instance give the single-process results exactly; ``--device cuda``
without a GPU is one clear input error. Small zoo model (digits_cnn), a few hundred images."""
from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import netx_export
from loihi_conv.app import models, pipeline, scaleout
from loihi_conv.app import recipe_search as search
from loihi_conv.app.cli import main
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.emulate import emulator_predictions
from loihi_conv.frontend.prepare import prepare
from loihi_conv.snn.simulate import simulate

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SAMPLES = 300


def cli(args: str, code: int = 0):
    res = CliRunner(mix_stderr=False).invoke(main, shlex.split(args))
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    return res


@pytest.fixture(scope="module")
def digits():
    ref = models.resolve("digits_cnn", None, None, progress=False)
    recipe = Recipe(calib_size=256)
    snn, _ = pipeline.convert_model(ref, recipe)
    return ref, recipe, snn


@pytest.fixture(scope="module")
def net(digits, tmp_path_factory):
    ref, recipe, snn = digits
    qnet = pipeline.quantize_snn(snn, ref, recipe, "if-soft", 8)
    return qnet, netx_export.save(qnet, tmp_path_factory.mktemp("scale") / "digits.net")


def test_shards_cover_the_images_in_order_on_batch_boundaries():
    for n, parts, align in ((1000, 4, 256), (10, 3, 1), (5, 8, 2), (256, 2, 256), (1, 2, 500)):
        b = scaleout.shard_bounds(n, parts, align)
        assert b[0][0] == 0 and b[-1][1] == n and len(b) <= parts
        assert all(stop == start for (_, stop), (start, _) in zip(b, b[1:]))
        assert all(start % align == 0 and stop > start for start, stop in b)
    assert scaleout.shard_bounds(1000, 4, 256) == [(0, 256), (256, 512), (512, 768), (768, 1000)]


def test_score_with_two_workers_predicts_what_one_process_does(net, tmp_path):
    qnet, path = net
    for workers in (1, 2):
        cli(f"--quiet score {path} --samples {SAMPLES} --batch-size 64 --workers {workers} "
            f"--json {tmp_path}/w{workers}.json")
    one, two = (json.loads((tmp_path / f"w{w}.json").read_text()) for w in (1, 2))
    assert two["scale"]["workers"] == 2 and len(two["predictions"]) == SAMPLES
    assert one["predictions"] == two["predictions"] and one["accuracy"] == two["accuracy"]
    x, _ = pipeline.test_data("digits", SAMPLES)  # ... and what the emulator says in one call
    assert one["predictions"] == np.asarray(emulator_predictions(qnet, x, 8)).tolist()


def test_float_simulation_sharded_over_two_workers_is_bit_identical(digits):
    ref, recipe, snn = digits
    x, y = pipeline.test_data(ref.dataset, SAMPLES)
    ts = (4, 16, 32)
    one = simulate(snn, x, ts, record=False, batch_size=64)
    two = scaleout.simulate(snn, x, ts, batch_size=64, scale=scaleout.Scale(workers=2))
    for T in ts:
        assert torch.equal(one.output[T], two.output[T])
    assert one.accuracy(y) == two.accuracy(y) and two.steps(32) == one.steps(32)


def test_evaluate_over_a_T_grid_with_two_workers_gives_the_same_accuracies(tmp_path):
    for workers in (1, 2):
        cli(f"--quiet evaluate -m digits_cnn --calib-size 256 -T 4,16 -n {SAMPLES} --workers {workers} "
            f"--json {tmp_path}/e{workers}.json")
    one, two = (json.loads((tmp_path / f"e{w}.json").read_text()) for w in (1, 2))
    assert one["snn_accuracy"] == two["snn_accuracy"] and one["samples"] == two["samples"] == SAMPLES


def test_ray_local_instance_scores_like_one_process(net, tmp_path):
    pytest.importorskip("ray")
    qnet, path = net
    res = cli(f"score {path} --samples {SAMPLES} --batch-size 64 --ray local --workers 2 --json {tmp_path}/r.json")
    got = json.loads((tmp_path / "r.json").read_text())
    x, _ = pipeline.test_data("digits", SAMPLES)
    assert got["predictions"] == np.asarray(emulator_predictions(qnet, x, 8)).tolist()
    assert got["scale"] == {"workers": 2, "ray": "local", "device": "cpu"} and "accuracy" in res.stdout


def test_parallel_search_keeps_fixed_knobs_and_returns_its_best_trial():
    model = models.resolve("digits_cnn", None, None, progress=False).module
    fixed = {"calib_size": 256, "normalizer": "percentile", "clip_round": True}
    kw = dict(heldout=120, budget=None, progress=False, target="if-soft", timesteps=8, fixed=fixed, trials=4, seed=2)
    res = search.search(model, "digits", (1, 8, 8), scale=scaleout.Scale(workers=2), **kw)
    assert len(res.trials) == 4 and [t.number for t in res.trials] == list(range(4))
    for t in res.trials:
        assert not set(t.params) & set(fixed), t.params
    for k, v in fixed.items():
        assert getattr(res.recipe, k) == v
    done = [t for t in res.trials if t.state == "complete"]
    assert done and res.accuracy == max(t.accuracy for t in done)
    # the network returned is the chosen recipe's: it scores the reported held-out accuracy
    x, y = search.heldout_data("digits", 256, 120, 0, prepare(model, (1, 8, 8)))
    acc = float((torch.as_tensor(emulator_predictions(res.qnet, x, 8)) == y).float().mean())
    assert acc == pytest.approx(res.accuracy)
    # trials are asked in rounds before any is told: reproducible for a seed and worker count
    again = search.search(model, "digits", (1, 8, 8), scale=scaleout.Scale(workers=2), **kw)
    assert [(t.params, t.accuracy) for t in again.trials] == [(t.params, t.accuracy) for t in res.trials]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
@pytest.mark.parametrize("args", ["score {net} --device cuda", "evaluate -m digits_cnn -T 8 --device cuda",
                                  "convert -m digits_cnn --no-search --device cuda -o {out}"])
def test_device_cuda_without_a_gpu_is_an_input_error(args, net, tmp_path):
    res = cli(args.format(net=net[1], out=tmp_path / "x.net"), code=2)
    assert "no CUDA GPU" in res.stderr and "--device cpu" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.net").exists()


def test_device_reaches_engines_that_take_it_and_cpu_only_engines_refuse_others(monkeypatch):
    def takes(x, device=None):
        return device

    def plain(x):
        return x

    assert scaleout.device_kw(takes, "cpu") == {"device": torch.device("cpu")}
    assert scaleout.device_kw(plain, "cpu") == {}
    monkeypatch.setattr(scaleout.devices, "resolve", lambda name: torch.device(name))  # as if a GPU were there
    with pytest.raises(LoihiConvError, match="runs on the cpu only"):
        scaleout.device_kw(plain, "cuda")
    with pytest.raises(LoihiConvError, match="--workers must be at least 1"):
        scaleout.Scale(workers=0).check()


def test_ray_is_imported_only_when_asked():
    import subprocess
    import sys

    code = ("import sys; from loihi_conv.app import cli, pipeline, recipe_search, scaleout; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
