"""--dataset beyond the built-ins and .npz: an ImageFolder tree (with --input-size/--mean/--std
stored in the dataset spec every file keeps) and pkg.module:function; calibration only from the
training split, decoding only the images drawn."""
from __future__ import annotations

import json
import shlex
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from loihi_conv.app import data
from loihi_conv.app.cli import main
from loihi_conv.base.errors import LoihiConvError

CLASSES = ("cat", "dog", "eel")


@pytest.fixture
def folder(tmp_path):
    """ROOT/{train,test}/<class>/*.png, 20x24 RGB; class k has channel k dimmed, train images are
    darker than test images (so a split mix-up shows)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split, n, hi in (("train", 12, 120), ("test", 4, 255)):
        for k, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, hi, (20, 24, 3)).astype(np.uint8)
                a[..., k] //= 4
                Image.fromarray(a).save(d / f"{i:02d}.png")
    return root


def test_folder_spec_is_canonical_and_the_info_comes_from_the_tree(folder):
    spec = data.dataset_spec(str(folder), "16x12", "0.5,0.4,0.3", "0.2,0.2,0.2")
    assert spec == f"{folder}?size=16x12&mean=0.5,0.4,0.3&std=0.2,0.2,0.2"
    assert data.dataset_spec(spec) == spec and not data.is_npz_path(spec)
    info = data.dataset_info(spec)
    assert info.input_shape == (3, 16, 12) and info.classes == CLASSES and info.num_classes == 3
    assert data.dataset_info(str(folder)).input_shape == (3, 20, 24)  # no resize: the images' size


def test_folder_images_are_decoded_resized_and_normalized_exactly(folder):
    import torchvision.transforms.functional as TF

    spec = data.dataset_spec(str(folder), "10", "0.5,0.4,0.3", "0.2,0.25,0.5")
    x, y = data.load_dataset(spec, "test", limit=6)
    assert x.shape == (6, 3, 10, 10) and y.dtype == torch.int64
    assert len(set(y.tolist())) > 1  # the test order mixes the classes
    path, label = data._folder(spec).files["test"][0]
    assert int(y[0]) == label and path.parent.name == CLASSES[label]
    img = TF.resize(TF.pil_to_tensor(Image.open(path).convert("RGB")).float() / 255, [10, 10], antialias=True)
    want = (img - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / torch.tensor([0.2, 0.25, 0.5])[:, None, None]
    assert torch.allclose(x[0], want, atol=1e-6)


def test_calibration_decodes_only_the_training_images_it_draws(folder, monkeypatch):
    spec = data.dataset_spec(str(folder), "8")
    data.dataset_info(spec)
    opened = []
    real = data._open_image
    monkeypatch.setattr(data, "_open_image", lambda p: opened.append(p) or real(p))
    batches = list(data.calibration_batches(spec, n=10, batch_size=4))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    assert len(opened) == 10 and all(p.parts[-3] == "train" for p in opened)
    assert float(torch.cat(batches).max()) <= 120 / 255 + 1e-6  # train images are the dark ones
    with pytest.raises(LoihiConvError, match="calibration asks for 37 images but .* has 36"):
        next(data.calibration_batches(spec, n=37))


@pytest.mark.parametrize("change, message", [
    ("no-test", "has no test or val subfolder"),
    ("extra-class", "class folder\\(s\\) fox that train lacks"),
    ("mean", "mean has 2 values, the images have 3 channel"),
    ("npz", "--input-size/--mean/--std given with the dataset"),
])
def test_folder_errors_name_the_problem(folder, change, message):
    import shutil

    spec = str(folder)
    if change == "no-test":
        shutil.rmtree(folder / "test")
    elif change == "extra-class":
        (folder / "test" / "fox").mkdir()
    elif change == "mean":
        spec = data.dataset_spec(spec, mean="0.5,0.5")
    with pytest.raises(LoihiConvError, match=message):
        data.dataset_info(spec) if change != "npz" else data.dataset_spec("digits", input_size="8")


@pytest.fixture
def function_pkg(tmp_path, monkeypatch):
    (tmp_path / "userdata_fn.py").write_text(textwrap.dedent("""
        import torch

        def tensors(split):
            n = 40 if split == "train" else 10
            x = torch.full((n, 1, 6, 6), 0.25 if split == "train" else 0.75)
            return x, torch.arange(n) % 3

        class Pairs(torch.utils.data.Dataset):
            def __init__(self, split):
                self.x, self.y = tensors(split)
            def __len__(self):
                return len(self.y)
            def __getitem__(self, i):
                return self.x[i, 0], int(self.y[i])   # (H, W) images: a channel axis is added

        def dataset(split):
            return Pairs(split)

        def broken(split):
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    for key in [k for k in data._MEMO if k[0] in ("function", "function-info")]:
        del data._MEMO[key]
    return "userdata_fn"


@pytest.mark.parametrize("fn", ["tensors", "dataset"])
def test_function_datasets_return_tensors_or_a_dataset(function_pkg, fn):
    spec = f"{function_pkg}:{fn}"
    info = data.dataset_info(spec)
    assert info.input_shape == (1, 6, 6) and info.num_classes == 3
    x, y = data.load_dataset(spec, "test", limit=4)
    assert x.shape == (4, 1, 6, 6) and float(x.mean()) == 0.75 and y.tolist() == [0, 1, 2, 0]
    calib = torch.cat(list(data.calibration_batches(spec, n=16, batch_size=5)))
    assert calib.shape == (16, 1, 6, 6) and bool((calib == 0.25).all())  # training split only


def test_function_returning_nonsense_is_refused(function_pkg):
    with pytest.raises(LoihiConvError, match="the function returned a int"):
        data.dataset_info(f"{function_pkg}:broken")


def test_cli_convert_on_an_image_folder_stores_its_input_encoding_and_score_reuses_it(folder, tmp_path, monkeypatch):
    (tmp_path / "userpkg_folder.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.c = nn.Conv2d(3, 4, 3, stride=2)
                self.fc = nn.Linear(4 * 3 * 3, 3)

            def forward(self, x):
                return self.fc(F.relu(self.c(x)).flatten(1))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    net, rep = tmp_path / "f.net", tmp_path / "s.json"
    runner = CliRunner(mix_stderr=False)
    args = (f"convert --model userpkg_folder:Net --dataset {folder} --input-size 8 --mean 0.3,0.3,0.3 "
            f"--std 0.2,0.2,0.2 --calib-size 24 --no-search -T 8 --target if-soft -o {net}")
    res = runner.invoke(main, shlex.split(args))
    assert res.exit_code == 0, res.stderr + res.stdout
    import netx_export

    spec = f"{folder}?size=8x8&mean=0.3,0.3,0.3&std=0.2,0.2,0.2"
    assert netx_export.load(net).meta["dataset"] == spec
    res = runner.invoke(main, shlex.split(f"score {net} --samples 12 --json {rep}"))
    assert res.exit_code == 0, res.stderr + res.stdout
    out = json.loads(rep.read_text())
    assert out["dataset"] == spec and out["samples"] == 12
    bad = runner.invoke(main, shlex.split(f"evaluate --model userpkg_folder:Net --dataset {folder} --mean 1,2"))
    assert bad.exit_code == 2 and "mean has 2 values" in bad.stderr
