"""`loihi-conv score`: a NetX file's accuracy on a labelled test set, and `--dataset my.npz`
through the commands (convert, evaluate, score) with one clear error for every bad file.

Everything runs on a tiny user model and a small template-digits .npz written here: no zoo
model, no cached dataset.
"""
from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import netx_export
from loihi_conv.app.cli import main
from loihi_conv.emulate import emulator_predictions

MODEL = '''\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.p = nn.AvgPool2d(2)
        self.f = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        return self.f(torch.flatten(self.p(torch.relu(self.c(x))), 1))
'''


def cli(args: str, code: int = 0):
    res = CliRunner(mix_stderr=False).invoke(main, shlex.split(args))
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    return res


@pytest.fixture(scope="module")
def made(tmp_path_factory, template_digits, fit):
    """The .npz dataset, the trained user model's files and NetX files converted on that .npz."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("score")
    x_tr, y_tr = template_digits(400, seed=1, noise=0.6)
    x_te, y_te = template_digits(60, seed=2, noise=0.6)
    npz = d / "digits.npz"
    np.savez(npz, x_train=x_tr.numpy(), y_train=y_tr.numpy(), x_test=x_te.numpy(), y_test=y_te.numpy())
    (d / "net.py").write_text(MODEL)
    ns: dict = {}
    exec(compile(MODEL, str(d / "net.py"), "exec"), ns)
    torch.manual_seed(0)
    model = fit(ns["Net"](), x_tr, y_tr, 60)
    torch.save(model.state_dict(), d / "w.pt")
    nets = {}  # --no-search: the recipe as given (convert would otherwise search one for minutes)
    for target, output in (("if-soft", "potential"), ("cuba", "spikes")):
        nets[target] = d / f"{target}.net"
        cli(f"-q convert --model {d / 'net.py'}:Net --weights {d / 'w.pt'} --dataset {npz} --target {target} "
            f"--output {output} -T 16 --calib-size 64 --no-search --out {nets[target]}")
    return {"dir": d, "npz": npz, "x_test": x_te, "y_test": y_te, "nets": nets}


@pytest.mark.parametrize("target", ["if-soft", "cuba"])
def test_score_equals_the_api_on_the_same_images(made, target, tmp_path):
    net = made["nets"][target]
    qnet = netx_export.load(net)
    assert qnet.meta["dataset"] == str(made["npz"]) and qnet.meta["timesteps"] == 16
    out = tmp_path / "score.json"
    res = cli(f"score {net} --samples 50 --batch-size 16 --json {out}")  # dataset + T from the file
    got = json.loads(out.read_text())
    expect = np.asarray(emulator_predictions(qnet, made["x_test"][:50], 16))
    acc = float((expect == made["y_test"][:50].numpy()).mean())
    assert got["predictions"] == expect.tolist()
    assert got["accuracy"] == acc and got["correct"] == round(50 * acc) and got["samples"] == 50
    assert got["steps"] == 16 + qnet.depth and got["timesteps"] == 16 and got["backend"] == "emulator"
    assert got["readout"] == {"if-soft": "potential", "cuba": "spikes"}[target]
    assert acc > 0.5  # a trained network, so the comparison means something
    assert f"accuracy {100 * acc:.2f}% ({got['correct']}/50)" in res.stdout
    assert f"({got['steps']} steps)" in res.stdout
    # Another T and the whole test split (all 60 images), the dataset given explicitly.
    cli(f"-q score {net} --dataset {made['npz']} -T 8 --json {out}")
    got = json.loads(out.read_text())
    assert got["samples"] == 60 and got["timesteps"] == 8
    assert got["predictions"] == np.asarray(emulator_predictions(qnet, made["x_test"], 8)).tolist()


def test_quiet_score_prints_nothing(made):
    res = cli(f"-q score {made['nets']['if-soft']} -n 5")
    assert res.stdout == "" and res.stderr == ""


def test_evaluate_takes_the_npz_too(made, tmp_path):
    out = tmp_path / "ev.json"
    cli(f"-q evaluate --model {made['dir'] / 'net.py'}:Net --weights {made['dir'] / 'w.pt'} "
        f"--dataset {made['npz']} -T 16 --calib-size 64 --json {out}")
    ev = json.loads(out.read_text())
    assert ev["dataset"] == str(made["npz"]) and ev["samples"] == 60 and ev["ann_accuracy"] > 0.5


@pytest.mark.lava
def test_score_on_lava_agrees_with_the_emulator(made, tmp_path):
    out = tmp_path / "lava.json"
    res = cli(f"score {made['nets']['if-soft']} --backend lava --samples 2 --json {out}")
    got = json.loads(out.read_text())
    assert got["backend"] == "lava" and got["samples"] == 2 and got["agree"] and got["disagreements"] == []
    assert got["predictions"] == got["emulator"]["predictions"]
    assert got["accuracy"] == got["emulator"]["accuracy"]
    assert "predictions agree on 2/2 images" in res.stdout


# --------------------------------------------------------------------------- errors
def _bad_files(d, x, y) -> dict[str, str]:
    """One .npz per rule broken (and two files that are no .npz at all)."""
    good = {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10]}
    variants = {
        "missing_key": {"x_test": None},
        "int_images": {"x_train": (x * 255).astype(np.uint8)},
        "no_channel_axis": {"x_test": x[:10, 0]},
        "float_labels": {"y_train": y.astype(np.float32)},
        "one_hot_labels": {"y_test": np.eye(10, dtype=np.int64)[y[:10]]},
        "n_mismatch": {"y_train": y[:-1]},
        "nan_images": {"x_train": np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x)},
        "inf_images": {"x_test": np.full_like(x[:10], np.inf)},
        "negative_label": {"y_test": np.where(np.arange(10) == 3, -1, y[:10])},
        "unseen_test_label": {"y_test": np.where(np.arange(10) == 3, 10, y[:10])},
        "object_labels": {"y_train": y.astype(object)},
        "split_shapes": {"x_test": x[:10, :, :7, :7]},
        "mnist_shaped": {"x_train": np.zeros((20, 1, 28, 28), np.float32), "y_train": y[:20],
                         "x_test": np.zeros((10, 1, 28, 28), np.float32)},
        "eleven_classes": {"y_train": np.where(np.arange(len(y)) == 0, 10, y)},
    }
    paths = {}
    for name, change in variants.items():
        arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
        paths[name] = str(d / f"{name}.npz")
        np.savez(paths[name], **arrays, allow_pickle=True) if name == "object_labels" else \
            np.savez(paths[name], **arrays)
    paths["not_a_zip"] = str(d / "not_a_zip.npz")
    (d / "not_a_zip.npz").write_bytes(b"just text, no archive\n" * 10)
    paths["npy_file"] = str(d / "npy_file.npz")
    with open(paths["npy_file"], "wb") as f:
        np.save(f, x)
    return paths


@pytest.fixture(scope="module")
def bad(made):
    x = made["x_test"].numpy()[:40]
    return _bad_files(made["dir"], np.concatenate([x, x]), np.tile(np.arange(10), 8))


# (bad file, fragments of the one error message)
BAD = {
    "missing_key": ["has no array(s) x_test", "numpy.savez(path, x_train=..."],
    "int_images": ["x_train has dtype uint8; images must be floating point", "astype(np.float32) / 255"],
    "no_channel_axis": ["x_test has shape (10, 8, 8) (3 axes); images must be (N, C, H, W)", "x_test[:, None]"],
    "float_labels": ["y_train has dtype float32; labels must be integers", "y_train.astype(np.int64)"],
    "one_hot_labels": ["y_test has shape (10, 10); labels must be (N,)", "y_test.argmax(1)"],
    "n_mismatch": ["x_train has 80 images but y_train has 79 labels"],
    "nan_images": ["x_train holds 1 NaN or infinite value(s)", "np.nan_to_num"],
    "inf_images": ["x_test holds 640 NaN or infinite value(s)"],
    "negative_label": ["y_test holds the negative label -1", "class indices 0..K-1"],
    "unseen_test_label": ["y_test holds the label 10, but the training labels run 0..9"],
    "object_labels": ["array y_train in", "holds Python objects", "never loaded", "int64 labels"],
    "split_shapes": ["train images are (1, 8, 8) but test images are (1, 7, 7)"],
    "not_a_zip": ["not_a_zip.npz is not a .npz archive", "numpy.savez"],
    "npy_file": ["npy_file.npz is not a .npz archive"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_npz_is_one_clear_error(made, bad, case):
    res = cli(f"score {made['nets']['if-soft']} --dataset {bad[case]} -n 2", code=2)
    _one_error(res.stderr, BAD[case])


def test_bad_npz_fails_convert_and_evaluate_before_any_work(made, bad):
    model = f"--model {made['dir'] / 'net.py'}:Net --weights {made['dir'] / 'w.pt'}"
    for args in (f"convert {model} --dataset {bad['nan_images']} --out {made['dir'] / 'x.net'}",
                 f"evaluate {model} --dataset {bad['object_labels']} -T 4"):
        _one_error(cli(args, code=2).stderr, ["dataset file" if "nan" in args else "holds Python objects"])
    assert not (made["dir"] / "x.net").exists()


def test_dataset_that_does_not_fit_the_network(made, bad, tmp_path):
    net = made["nets"]["if-soft"]
    _one_error(cli(f"score {net} --dataset {bad['mnist_shaped']}", code=2).stderr,
               ["takes inputs of shape (1, 8, 8)", "mnist_shaped.npz images are (1, 28, 28)",
                f"pass --dataset {made['npz']}"])
    _one_error(cli(f"score {net} --dataset {bad['eleven_classes']}", code=2).stderr,
               ["has 11 classes (labels 0..10)", "has only 10 outputs"])
    _one_error(cli(f"score {net} --dataset {tmp_path / 'gone.npz'}", code=2).stderr,
               ["dataset file", "gone.npz does not exist", "check the path"])
    _one_error(cli(f"score {net} --batch-size 0", code=2).stderr, ["--batch-size must be positive"])
    _one_error(cli(f"score {net} --samples 0", code=2).stderr, ["--samples must be positive"])


def _one_error(err: str, fragments: list[str]) -> None:
    assert err.startswith("error: ") and err.count("error: ") == 1 and "\n  fix: " in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
