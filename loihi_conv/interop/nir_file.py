"""NIR files on disk: a guarded reader and an atomic writer.

``nir.read`` loads every dataset of the HDF5 file into memory and builds nodes with asserts, so a
hostile or broken file could ask for gigabytes (a "shape bomb": a tiny compressed dataset that
declares a huge shape), or fail deep inside nir/h5py. ``read`` first walks the file's structure
without reading any data -- HDF5 signature, no links leaving the file, no external storage,
numeric or string datasets only, bounded sizes and nesting -- and only then hands it to
``nir.read``; every failure becomes one ``NIRFormatError``. HDF5 holds no code and nothing
here unpickles, so reading executes nothing from the file.
"""
from __future__ import annotations

from pathlib import Path

from loihi_conv.base.errors import LoihiConvError
from loihi_conv.base.files import atomic_path

MAX_ELEMENTS = 50_000_000  # all datasets together (float64: 400 MB), far above any Loihi 2 network
MAX_DATASET_ELEMENTS = 20_000_000
MAX_OBJECTS = 100_000
MAX_DEPTH = 32
NUMERIC_FIELDS = {"weight", "bias", "r", "tau", "tau_mem", "tau_syn", "v_leak", "v_threshold", "v_reset", "w_in",
                  "threshold", "scale", "delay", "kernel_size", "stride", "dilation", "groups", "shape",
                  "start_dim", "end_dim", "input_shape", "input_type"}  # NIR 1.0 node fields that hold numbers
FIX = "pass a NIR graph written by nir.write (NIR 1.0.x), e.g. from snnTorch, Norse, Sinabs or `convert --nir`"


class NIRFormatError(LoihiConvError):
    """A NIR file that is not HDF5, not a NIR graph, or over the reader's limits."""

    exit_code = 3


def read(path: str | Path):
    """The ``nir.NIRGraph`` in ``path``, after the structural checks of the module doc."""
    import h5py
    import nir

    path = Path(path)
    if not path.is_file():
        raise LoihiConvError(f"NIR file {path} does not exist", "check the path")
    try:
        hdf5 = h5py.is_hdf5(str(path))
    except OSError as e:
        raise NIRFormatError(f"cannot open {path}: {e}", "check the file's permissions") from None
    if not hdf5:
        raise NIRFormatError(f"{path} is not an HDF5 file, so not a NIR graph", FIX)
    try:
        with h5py.File(path, "r") as f:
            _check_structure(f, path)
    except NIRFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises many types on a corrupt file
        raise NIRFormatError(f"{path} is a damaged HDF5 file ({type(e).__name__}: {e})", FIX) from None
    try:
        graph = _nir_read(nir, path)
    except Exception as e:  # noqa: BLE001 - nir raises KeyError/AssertionError/ValueError/... on bad fields
        raise NIRFormatError(f"{path} is not a valid NIR graph: {_describe(e)}", FIX) from None
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFormatError(f"{path} holds a single NIR {type(graph).__name__} node, not a graph", FIX)
    return graph


def _nir_read(nir, path: Path):
    """``nir.read`` with its type check; exporters that declare a batch axis in some shapes but not
    others (Norse 1.1) fail it, so such a file is read without it and the importer checks shapes."""
    try:
        return nir.read(str(path))
    except ValueError as e:
        if "type" not in str(e).lower():
            raise
        return nir.read(str(path), type_check=False)


def _describe(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:200]
    if isinstance(e, KeyError):
        return f"missing field {text}"
    if isinstance(e, TypeError) and "required positional argument" in text:  # a node class lacking a field
        return f"missing field {text.rsplit(':', 1)[-1].strip()} ({text.split('(')[0].split('.')[0]})"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _check_structure(f, path: Path) -> None:
    import h5py
    import numpy as np

    if "node" not in f or not isinstance(f.get("node", getlink=True), h5py.HardLink) \
            or not isinstance(f["node"], h5py.Group):
        raise NIRFormatError(f"{path} has no 'node' group: not a NIR graph", FIX)
    total = 0
    count = 0
    stack = [(f, 0)]
    while stack:
        group, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise NIRFormatError(f"{path} nests groups deeper than {MAX_DEPTH}", FIX)
        for key in group:
            count += 1
            if count > MAX_OBJECTS:
                raise NIRFormatError(f"{path} holds more than {MAX_OBJECTS} objects", FIX)
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):  # soft/external links could point anywhere
                raise NIRFormatError(f"{path}: '{group.name}/{key}' is a {type(link).__name__}; NIR files "
                                     "hold plain groups and datasets only", FIX)
            item = group[key]
            if isinstance(item, h5py.Group):
                stack.append((item, depth + 1))
                continue
            if not isinstance(item, h5py.Dataset):
                raise NIRFormatError(f"{path}: '{item.name}' is neither a group nor a dataset", FIX)
            if item.external or item.is_virtual:
                raise NIRFormatError(f"{path}: dataset '{item.name}' keeps its data outside the file", FIX)
            kind = item.dtype.kind
            if kind not in "biufSO" or (kind == "O" and h5py.check_string_dtype(item.dtype) is None):
                raise NIRFormatError(f"{path}: dataset '{item.name}' has type {item.dtype}; NIR stores "
                                     "numbers and strings only", FIX)
            if key in NUMERIC_FIELDS and kind not in "biuf" and group.name != "/":
                raise NIRFormatError(f"{path}: field '{item.name}' holds {item.dtype}, not numbers", FIX)
            n = int(np.prod(item.shape, dtype=object)) if item.shape is not None else 0
            if n > MAX_DATASET_ELEMENTS:
                raise NIRFormatError(f"{path}: dataset '{item.name}' declares shape {item.shape} "
                                     f"({n} values, limit {MAX_DATASET_ELEMENTS})", FIX)
            total += n
            if total > MAX_ELEMENTS:
                raise NIRFormatError(f"{path}: the datasets declare more than {MAX_ELEMENTS} values", FIX)


def write(graph, path: str | Path) -> Path:
    """Write ``graph`` (a ``nir.NIRGraph``) with ``nir.write``, atomically."""
    import nir

    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    return Path(path)
