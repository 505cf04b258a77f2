"""The NetX HDF5 schema as lava-dl 0.6.0's ``netx.hdf5`` reads it, plus the loihi-conv extension.

Everything both the writer and the reader need to agree on lives here: key names, the integer
encoding of each key class, limits, and the checksum. See docs/netx-extension.md for the format.

Layouts inside the file (the netx convention): every ``shape`` and weight is in PyTorch order
((C,H,W); conv (Co, Ci/g, kH, kW); dense (Nout, Nin)), stride/padding/dilation are [y, x];
the one exception is a per-neuron ``bias`` of a (C,H,W) layer, which netx reads in Lava order
(W,H,C) (netx/blocks/process.py ``AbstractBlock._neuron``), so we store it that way too.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata

import h5py
import numpy as np

# Loihi numbers the reader, writer and validator use as ``schema.X`` (defined in base.limits).
from loihi_conv.base.limits import (  # noqa: F401
    ACT_SHIFT, COUNTER_MAX, DECAY_ONE, DELAY_MAX, GRADED_UNITS_MAX, NETX_READOUT_VTH, STATE_MAX, VTH_MAX)
from loihi_conv.fixed.softif_modes import DEFAULT_MODE as SOFTIF_DEFAULT_MODE  # noqa: F401
from loihi_conv.fixed.softif_modes import SOFTIF_MODES  # noqa: F401

FORMAT_ATTR = "loihi_conv_format"  # root attribute, present only in extension files
FORMAT_VERSION = 1
VERSION_ATTR = "loihi_conv_version"
CHECKSUM_ATTR = "checksum"
NAME_ATTR = "name"  # layer-group attribute: the QNetwork block name (netx never reads attributes)
ROLE_ATTR = "loihi_conv_role"  # neuron-group attribute: 'readout' marks a CUBA group as the Readout

# netx's NetDict key classes (netx/utils.py:41-48): copy_keys go through ``astype(int)`` (floats
# are truncated toward zero), array_keys are returned raw and handed to Lava as they are.
COPY_KEYS = ("weight", "bias")
ARRAY_KEYS = ("shape", "stride", "padding", "dilation", "groups", "delay",
              "iDecay", "vDecay", "vThMant", "refDelay")

LAYER_TYPES = ("input", "conv", "dense", "flatten")
STD_NEURON_TYPES = ("CUBA", "LOIHI", "SDNN")
EXT_NEURON_TYPES = ("SOFTIF", "DELTA")

MAX_ELEMENTS = 10**8  # per dataset; anything bigger is not a network we can build
MAX_LAYERS = 10_000
# The object tree: our deepest path is layer/<i>/synapses/<k>/spikePool/<key> (depth 6); a file
# is refused while it is being walked as soon as it goes deeper or holds more objects than any
# network (a 6000-level tree is refused at level 9, not after minutes).
MAX_DEPTH = 8
MAX_OBJECTS = 20 * MAX_LAYERS
MAX_CHUNK_BYTES = 64 << 20  # one HDF5 chunk is inflated whole to read any element of it
# Root attributes a loihi-conv writer sets: a file carrying one claims to be ours, and must then
# carry a matching CHECKSUM_ATTR (the 512-byte seal is optional: h5repack drops it).
OUR_MARKS = (VERSION_ATTR, FORMAT_ATTR)
MAX_CONV_GEOMETRY = 2**16  # stride/padding/dilation; torch's conv dies with SIGFPE from 2^32 on
# SoftIF payload modes (qir.SoftIF.mode; extension keys spikeMode/maxUnits) are registered in
# loihi_conv.fixed.softif_modes (each says whether max_units must be a power of two). The binary
# default is never written, so files from before graded spikes read unchanged.
# SoftIF step-counted extension keys, both optional (absent: no clamping / no SpiCalib, so older
# files read unchanged). Kept to 16 bits so a microcode neuron holds each in one register; the
# SpiCalib comparison N (t - t') > t' + N beta is evaluated exactly (64-bit) by the emulator
# and the Lava process.
CLAMP_STEPS_KEY = "clampSteps"  # qir.SoftIF.clamp_steps, int in [0, COUNTER_MAX]
SPICALIB_BETA_KEY = "spiCalibBeta"  # qir.SoftIF.spicalib_beta, int in [0, COUNTER_MAX]
# Spiking max-pool stage (qir.SpikePool) on a synapse's input: an optional sub-group of the
# synapse's group (the layer group for its first synapse, ``synapses/<k>/`` for the others).
# Extension only (netx has no such stage and would ignore the group).
POOL_GROUP = "spikePool"
POOL_KEYS = ("scheme", "kernel", "stride", "padding", "ceilMode")  # scheme: string; pairs [y, x]
FLOAT32_EXACT = 2**24  # float32 holds every integer up to here


def tool_versions() -> dict[str, str]:
    """Versions of the tools whose numerics a file depends on (no imports of the tools)."""
    out = {}
    for dist in ("loihi-conv", "lava-nc", "lava-dl", "torch", "h5py", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def copy_key_array(x: np.ndarray) -> np.ndarray:
    """Encode an int array for a netx copy_key: float32 when every value is exact in float32
    (slayer's convention), else the smallest of int32/int64 that holds it."""
    x = np.asarray(x, dtype=np.int64)
    peak = int(np.abs(x).max()) if x.size else 0
    if peak <= FLOAT32_EXACT:
        return x.astype(np.float32)
    return x.astype(np.int32) if peak < 2**31 else x


def int_array(x) -> np.ndarray:
    """Encode an array_key or extension key: always int64 (what slayer writes for these)."""
    return np.asarray(x, dtype=np.int64)


def type_array(name: str) -> np.ndarray:
    """The ``type`` datasets: fixed-length ascii of shape (1,), as slayer writes them."""
    return np.array([name.encode("ascii")], dtype="S16")


def decode_str(value) -> str:
    """A string dataset value as netx decodes it (shape (1,) or scalar, bytes or str)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected one string, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode("ascii")
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {type(value).__name__}")


# The file starts with a 512-byte HDF5 user block (HDF5 and netx skip it) holding a SHA-256
# of every byte after it. The reader checks it before h5py parses anything, because libhdf5
# can crash the interpreter on corrupted metadata; only an intact file reaches h5py.
USERBLOCK = 512
MAGIC = b"loihi-conv NetX file\nsha256:"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _digest_after_userblock(fh) -> bytes:
    fh.seek(USERBLOCK)
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest().encode()


def seal_file(path) -> None:
    """Write the user-block digest of a closed file created with ``userblock_size=USERBLOCK``."""
    with open(path, "r+b") as fh:
        digest = _digest_after_userblock(fh)
        fh.seek(0)
        fh.write((MAGIC + digest + b"\n").ljust(USERBLOCK, b"\0"))


def check_seal(path) -> str:
    """'sealed' (digest verified), 'foreign' (no loihi-conv user block, e.g. lava-dl's files);
    raises ValueError if a loihi-conv file's bytes changed or its header is damaged."""
    with open(path, "rb") as fh:
        head = fh.read(USERBLOCK + len(HDF5_SIGNATURE))
        if head.startswith(HDF5_SIGNATURE) or head[USERBLOCK:] != HDF5_SIGNATURE:
            return "foreign"
        if not head.startswith(MAGIC):
            raise ValueError("its 512-byte header is not a loihi-conv header (damaged?)")
        want = head[len(MAGIC):len(MAGIC) + 64]
        if _digest_after_userblock(fh) != want:
            raise ValueError("its bytes do not match the digest in its header (corrupted or "
                             "truncated)")
    return "sealed"


def file_checksum(f: h5py.File) -> str:
    """SHA-256 over the root attributes (except the checksum itself) and every dataset and
    attribute under ``/layer``, in sorted path order.

    Values are hashed as read (dtype, shape, raw bytes), so the writer (which hashes the data
    it just wrote, re-read from the open file) and the reader compute the same digest.
    """
    h = hashlib.sha256()
    for key in sorted(k for k in f.attrs.keys() if k != CHECKSUM_ATTR):
        h.update(f"/@{key}={f.attrs[key]!r}".encode() + b"\0")
    items: list[tuple[str, object]] = []
    f["layer"].visititems(lambda name, obj: items.append((name, obj)))
    for name, obj in sorted(items, key=lambda it: it[0]):
        h.update(name.encode() + b"\0")
        for key in sorted(obj.attrs.keys()):
            h.update(f"@{key}={obj.attrs[key]!r}".encode() + b"\0")
        if isinstance(obj, h5py.Dataset):
            value = np.asarray(obj[()])
            h.update(f"{value.dtype.str}{value.shape}".encode() + b"\0")
            h.update(value.tobytes() if value.dtype.kind != "O"
                     else repr(value.tolist()).encode())
    return "sha256:" + h.hexdigest()


def to_json(obj) -> str:
    """JSON for meta/recipe attributes; numpy values become plain numbers/lists."""
    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        return str(o)
    return json.dumps(obj, default=default, sort_keys=True)
