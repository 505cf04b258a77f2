"""A CIFAR-shaped colour image set made offline: 10 classes of procedurally drawn shapes and textures.

No colour image dataset can be fetched here, so this stands in for CIFAR-10 (3x32x32, 10 classes,
uint8 pixels): disk, square, triangle, plus, ring, horizontal stripes, vertical stripes,
checkerboard, diamond, diagonal cross. Each image draws its shape at a random position, scale
(radius 5.5-11 px) and rotation (+-20 degrees), with a class-independent random colour partly
blended (contrast 0.6-1) over a random two-colour gradient background, plus a random distractor
blob and Gaussian pixel noise. Colour carries no label information, so a network must learn shape
and texture; small, faint, noisy shapes make the task hard enough that a small CNN stays well
below 100 %.

Deterministic for a seed. Written as a ``.npz`` (float32, normalized with the training set's
rounded per-channel mean/std, the CLI's ``.npz`` layout) and as an ImageFolder tree of PNGs
(``ROOT/train/<k>_<class>/<index>.png``, ``ROOT/test/...``; the ``k_`` prefix makes the folder's
sorted class order the label order) whose decoding with ``--input-size 32
--mean M --std S`` gives the same tensors.

    python -m loihi_conv.app.colour_shapes --out DIR [--train 10000] [--test 2000] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from loihi_conv.base.files import atomic_write

CLASSES = ("disk", "square", "triangle", "plus", "ring", "hstripes", "vstripes", "checker",
           "diamond", "xcross")
SIZE = 32


def _masks(u: np.ndarray, v: np.ndarray, freq: np.ndarray) -> list[np.ndarray]:
    """Inside-the-shape masks for every class on shape-local coordinates (1 = the radius)."""
    box = np.maximum(np.abs(u), np.abs(v))
    r = np.hypot(u, v)
    d1, d2 = (u + v) / np.sqrt(2), (u - v) / np.sqrt(2)
    bar = lambda a, b: ((np.abs(a) <= 0.3) & (np.abs(b) <= 1)) | ((np.abs(b) <= 0.3) & (np.abs(a) <= 1))  # noqa: E731
    return [r <= 1,
            box <= 0.85,
            (v <= 0.8) & (np.abs(u) <= (v + 0.9) / 1.9),
            bar(u, v),
            (r >= 0.55) & (r <= 1),
            (box <= 1) & (np.sin(v * np.pi * freq) > 0),
            (box <= 1) & (np.sin(u * np.pi * freq) > 0),
            (box <= 1) & (np.sin(u * np.pi * freq) * np.sin(v * np.pi * freq) > 0),
            np.abs(u) + np.abs(v) <= 1.15,
            bar(d1, d2)]


def generate(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images uint8 (n, 3, 32, 32) and labels int64 (n,), balanced classes in random order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    col = lambda k: rng.random((n, 3, 1, 1) if k == 3 else (n, 1, 1))  # noqa: E731
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    # background: a linear gradient between two random colours in a random direction
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    ramp = ((xx - 16) * np.cos(angle) + (yy - 16) * np.sin(angle)) / 32 + 0.5
    c0, c1 = col(3), col(3)
    img = c0 + (c1 - c0) * ramp[:, None]
    # distractor: a small blob of another random colour
    by, bx, br = rng.uniform(0, SIZE, (n, 1, 1)), rng.uniform(0, SIZE, (n, 1, 1)), rng.uniform(1.5, 3, (n, 1, 1))
    blob = ((yy - by) ** 2 + (xx - bx) ** 2 <= br ** 2)[:, None]
    img = np.where(blob, col(3), img)
    # the shape: random scale, centre (kept mostly inside), rotation, colour and contrast
    scale = rng.uniform(5.5, 11, (n, 1, 1))
    cy, cx = (rng.uniform(scale * 0.8, SIZE - scale * 0.8) for _ in range(2))
    rot = rng.uniform(-np.pi / 9, np.pi / 9, (n, 1, 1))
    dy, dx = (yy - cy) / scale, (xx - cx) / scale
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    freq = rng.integers(2, 4, (n, 1, 1)).astype(np.float64)
    masks = np.stack(_masks(u, v, freq))               # (classes, n, H, W)
    inside = masks[labels, np.arange(n)][:, None]      # (n, 1, H, W)
    alpha = rng.uniform(0.6, 1, (n, 1, 1, 1))
    img = np.where(inside, (1 - alpha) * img + alpha * col(3), img)
    img = img + rng.normal(0, 1, img.shape) * rng.uniform(0.02, 0.08, (n, 1, 1, 1))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), labels.astype(np.int64)


def make(n_train: int = 10000, n_test: int = 2000, seed: int = 0) -> dict:
    """Both splits (uint8) and the training set's per-channel mean/std rounded to 3 decimals."""
    x_train, y_train = generate(n_train, seed)
    x_test, y_test = generate(n_test, seed + 1)
    x = x_train.astype(np.float64) / 255
    mean = tuple(round(float(m), 3) for m in x.mean((0, 2, 3)))
    std = tuple(round(float(s), 3) for s in x.std((0, 2, 3)))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "mean": mean, "std": std}


def normalize(x_u8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 images -> float32 ``(x/255 - mean) / std``, the same float32 steps as the folder decoder."""
    x = x_u8.astype(np.float32) / np.float32(255.0)
    x -= np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    x /= np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return x


def write_npz(path: Path, sets: dict) -> Path:
    arrays = {f"x_{s}": normalize(sets[f"x_{s}"], sets["mean"], sets["std"]) for s in ("train", "test")}
    arrays.update({f"y_{s}": sets[f"y_{s}"] for s in ("train", "test")})
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to the temporary name
            np.savez(f, **arrays)

    return atomic_write(Path(path), write)


def folder_classes() -> tuple[str, ...]:
    """Class folder names, sorted as their labels: ImageFolder labels classes in sorted order."""
    return tuple(f"{k}_{c}" for k, c in enumerate(CLASSES))


def write_folder(root: Path, sets: dict) -> Path:
    """PNG tree ROOT/{train,test}/<k>_<class>/<index>.png, written beside and renamed into place."""
    from PIL import Image

    root = Path(root)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in ("train", "test"):
        for c in folder_classes():
            (tmp / split / c).mkdir(parents=True)
        for i, (img, label) in enumerate(zip(sets[f"x_{split}"], sets[f"y_{split}"])):
            Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(
                tmp / split / folder_classes()[label] / f"{i:05d}.png")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory: writes colour_shapes.npz, colour_shapes/ and .json")
    ap.add_argument("--train", type=int, default=10000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = make(args.train, args.test, args.seed)
    write_npz(out / "colour_shapes.npz", sets)
    write_folder(out / "colour_shapes", sets)
    meta = {"classes": CLASSES, "train": args.train, "test": args.test, "seed": args.seed,
            "mean": sets["mean"], "std": sets["std"]}
    (out / "colour_shapes.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
