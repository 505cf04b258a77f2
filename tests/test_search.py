"""The recipe search (loihi_conv.app.recipe_search): seeded and deterministic, keeps what the user fixed,
scores on training images held out from calibration and never touches the test split, and the
file it writes is the one its stored recipe rebuilds."""
from __future__ import annotations

import shlex

import pytest
import torch
from click.testing import CliRunner

from loihi_conv.app import data, zoo
from loihi_conv.app import recipe_search as search
from loihi_conv.app.cli import main
from loihi_conv.convert import Recipe
from loihi_conv.fixed.quantize import TARGETS
from loihi_conv.frontend.ops import forward
from loihi_conv.frontend.prepare import prepare

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
KW = dict(heldout=120, budget=None, progress=False)


@pytest.fixture(scope="module")
def digits():
    model, info = zoo.get_model("digits_cnn", progress=False)
    return model, info["dataset"], tuple(info["input_shape"])


def run(digits, **kw):
    model, dataset, shape = digits
    return search.search(model, dataset, shape, **{**KW, **kw})


def test_same_seed_same_search(digits):
    a = run(digits, target="if-soft", timesteps=8, fixed={"calib_size": 256}, trials=5, seed=3)
    b = run(digits, target="if-soft", timesteps=8, fixed={"calib_size": 256}, trials=5, seed=3)
    assert [(t.params, t.accuracy, t.state) for t in a.trials] == [(t.params, t.accuracy, t.state) for t in b.trials]
    assert a.recipe == b.recipe and a.accuracy == b.accuracy
    assert len(a.trials) == 5 and a.trials[0].params  # defaults first, and the space is not empty
    # ... and the search does search: another seed proposes other trials after the start points
    c = run(digits, target="if-soft", timesteps=8, fixed={"calib_size": 256}, trials=5, seed=4)
    assert [t.params for t in c.trials] != [t.params for t in a.trials]


def test_fixed_knobs_are_kept_and_not_searched(digits):
    fixed = {"calib_size": 256, "normalizer": "percentile", "percentile": 99.9, "clip_round": True,
             "neuron_model": "if-soft"}
    res = run(digits, target="cuba", timesteps=16, fixed=fixed, trials=4)
    for t in res.trials:
        assert not set(t.params) & set(fixed), t.params
    for k, v in fixed.items():
        assert getattr(res.recipe, k) == v
    names = {n for n, _, _ in search.space(res.snn, "cuba", fixed)}
    assert names and not names & set(fixed)
    assert names <= {"granularity", "lcp", "max_pool"} | set(TARGETS["cuba"].recipe_knobs)


def test_space_follows_the_target():
    """Targets declare what they keep: no v_init / ACP / clamping on cuba (dropped there), no
    neuron model or spiking method on sdnn (a plain ReLU), graded models on if-soft."""
    from loihi_conv.frontend import ir
    g = ir.Graph({"x": ir.Input("x", (), (1, 4, 4))}, "x")
    soft = {n: dom.values for n, dom, _ in search.space(g, "if-soft", {})}
    cuba = {n for n, _, _ in search.space(g, "cuba", {})}
    sdnn = {n for n, _, _ in search.space(g, "sdnn", {})}
    assert set(soft["neuron_model"]) == {"if-soft", "if-multibit", "if-burst"}
    assert {"v_init", "acp", "clamp_delay"} <= set(soft) and not {"v_init", "acp", "clamp_delay"} & cuba
    assert "neuron_model" not in sdnn and not {"lcp", "clip_round"} & sdnn
    assert "max_pool" not in soft  # the graph has no MaxPool2d


def test_search_never_reads_test_images_and_holds_out_from_calibration(digits, monkeypatch):
    splits = []
    load = data.load_dataset
    monkeypatch.setattr(data, "load_dataset", lambda name, split: splits.append(split) or load(name, split))
    res = run(digits, target="sdnn", timesteps=8, fixed={"calib_size": 256}, trials=2)
    assert splits and set(splits) == {"train"}
    calib = torch.cat(list(data.calibration_batches("digits", n=256, seed=0)))
    ann = prepare(digits[0], digits[2])
    held, _ = search.heldout_data("digits", 256, 120, 0, ann)
    same = (held.flatten(1)[:, None, :] == calib.flatten(1)[None]).all(-1)
    assert held.shape[0] == res.heldout == 120 and not same.any()
    assert res.pool == data.split_size("digits", "train") - 256  # fewer than 10 x 120 left: all of them


def _margin(ann, x):
    logits = forward(ann, x)
    top = logits.topk(2, 1).values
    return (top[:, 0] - top[:, 1]) / logits.std(1)


def test_heldout_images_are_the_ones_the_ann_is_least_sure_of(digits):
    ann = prepare(digits[0], digits[2])
    pool, _ = search.heldout_data("digits", 256, 500, 0)  # the next 500 of the permutation
    hard, _ = search.heldout_data("digits", 256, 50, 0, ann, pool=10)  # the hardest 50 of those 500
    m_pool, m_hard = _margin(ann, pool), _margin(ann, hard)
    assert (m_hard.max() <= m_pool.sort().values[49] + 1e-6) and hard.shape[0] == 50
    member = (hard.flatten(1)[:, None, :] == pool.flatten(1)[None]).all(-1).any(1)
    assert member.all()
    assert m_hard.mean() < 0.75 * m_pool[:50].mean()  # not just the next 50


def test_cli_search_writes_the_file_its_recipe_rebuilds(tmp_path):
    def cli(args):
        res = CliRunner(mix_stderr=False).invoke(main, shlex.split(args))
        assert res.exit_code == 0, res.stderr
        return res
    a, b, r = tmp_path / "a.net", tmp_path / "b.net", tmp_path / "r.toml"
    res = cli(f"convert --model digits_cnn --target if-soft -T 8 --calib-size 256 --trials 3 --heldout 100 --out {a}")
    assert "recipe search (if-soft, T=8): 3 trials" in res.output and "chosen:" in res.output
    cli(f"-q inspect {a} --recipe-out {r}")
    assert Recipe.from_toml(r).calib_size == 256  # the fixed option travelled with the file
    cli(f"-q convert --model digits_cnn --target if-soft -T 8 --recipe {r} --out {b}")
    assert a.read_bytes() == b.read_bytes()
