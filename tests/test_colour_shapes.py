"""The offline CIFAR-shaped set (loihi_conv.app.colour_shapes): deterministic for a seed, balanced,
colour carrying no label, and its .npz and ImageFolder views load to the same tensors."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from loihi_conv.app import colour_shapes, data


def test_generation_is_deterministic_balanced_and_seed_dependent():
    x1, y1 = colour_shapes.generate(60, seed=3)
    x2, y2 = colour_shapes.generate(60, seed=3)
    x3, _ = colour_shapes.generate(60, seed=4)
    assert x1.dtype == np.uint8 and x1.shape == (60, 3, 32, 32)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert np.array_equal(np.bincount(y1), np.full(10, 6))
    assert x1.std() > 20  # not blank: gradients, shapes, noise


def test_colour_is_not_the_label():
    """Mean colour per class stays near the overall mean (class-independent colours)."""
    x, y = colour_shapes.generate(1000, seed=0)
    rgb = x.reshape(len(x), 3, -1).mean(2) / 255
    per_class = np.stack([rgb[y == c].mean(0) for c in range(10)])
    assert np.abs(per_class - rgb.mean(0)).max() < 0.05


def test_npz_and_image_folder_give_the_same_tensors(tmp_path: Path):
    sets = colour_shapes.make(n_train=30, n_test=20, seed=1)
    npz = colour_shapes.write_npz(tmp_path / "cs.npz", sets)
    root = colour_shapes.write_folder(tmp_path / "cs", sets)
    assert not (tmp_path / "cs.partial").exists()
    mean, std = (",".join(f"{v:g}" for v in sets[k]) for k in ("mean", "std"))
    spec = data.dataset_spec(str(root), "32", mean, std)
    info = data.dataset_info(spec)
    assert info.input_shape == (3, 32, 32) and info.num_classes == 10
    assert data.dataset_info(str(npz)).input_shape == (3, 32, 32)
    for split in ("train", "test"):
        xn, yn = data.load_dataset(str(npz), split)
        xf, yf = data.load_dataset(spec, split)
        order = [int(p.stem) for p, _ in data._folder(spec).files[split]]  # files are named by index
        assert sorted(order) == list(range(len(xn)))
        assert np.array_equal(yf.numpy(), yn.numpy()[order])
        assert np.abs(xf.numpy() - xn.numpy()[order]).max() < 1e-6
        assert abs(float(xn.mean())) < 0.5  # normalized with the training set's mean/std
