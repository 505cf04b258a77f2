"""Fuzzing the NetX reader and the emulator behind it with mutated files.

Base files: our standard CUBA file, our extension file (SoftIF, residual fan-in, dense delays)
and lava-dl's own ``tiny.net``. Mutations: raw bytes (flips, truncation, overwritten or inserted
runs) and HDF5 structure through h5py (deleted keys, changed dtypes and shapes, renamed or
swapped layer groups, absurd sizes, wrong ``type`` strings, NaN/inf values, garbage attributes).

Our writer seals every file (a 512-byte user block with a SHA-256 of the rest, plus a content
checksum attribute), so a structurally mutated file would be refused by the seal alone. To
exercise the structural checks, each structural mutation is applied either to a *resealed* file
(checksum attribute recomputed, user block rewritten, as a careful editor would) or to a
*foreign* copy (plain HDF5 without our user block, checksum recomputed; a copy that claims to
be ours without a checksum is refused, tests/test_hostile_inputs.py).

The property: ``netx_export.load`` and then ``emulate`` either succeed or raise
``LoihiConvError`` (``NetXFormatError`` is a subclass) -- never anything else.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netx_export
from loihi_conv.base.errors import LoihiConvError, NetXFormatError
from loihi_conv.emulate import emulate
from loihi_conv.fixed import qir
from loihi_conv.fixed.decode import encode, scores
from netx_export import schema
from netx_export.compare import diff_networks

TINY = Path(sysconfig.get_paths()["purelib"]) / "tests/lava/lib/dl/netx/tiny.net"
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EMULATE_NEURONS_MAX = 200_000  # a mutated file may describe a huge valid network; we skip running it


def _even(rng, shape, bound):
    w = 2 * rng.integers(-bound, bound + 1, shape)
    w.flat[0], w.flat[-1] = 2 * bound, -2 * bound  # both signs: netx loads dense weights exactly
    return w


def standard_net() -> qir.QNetwork:
    """input (graded) -> conv CUBA (per-channel bias) -> flatten -> dense Readout."""
    rng = np.random.default_rng(0)
    blocks = [qir.Block("in", (2, 6, 6)),
              qir.Block("c1", (3, 4, 4), [qir.ConvSyn("in", _even(rng, (3, 2, 3, 3), 20))],
                        bias=np.array([5, -3, 0]), neuron=qir.Cuba(vth=60)),
              qir.Block("out", (4,), [qir.DenseSyn("c1", _even(rng, (4, 48), 30))],
                        bias=np.array([1, 0, -1, 2]), neuron=qir.Readout())]
    return qir.QNetwork(blocks, input_scale=8.0, output_scale=0.5, meta={"dataset": "none"})


def extension_net() -> qir.QNetwork:
    """SoftIF layers, a residual fan-in (3x3 conv + 1x1 conv from the input), dense delays."""
    rng = np.random.default_rng(1)
    blocks = [qir.Block("in", (2, 5, 5)),
              qir.Block("c1", (3, 5, 5), [qir.ConvSyn("in", rng.integers(-6, 7, (3, 2, 3, 3)),
                                                      padding=(1, 1))],
                        bias=np.array([3, -2, 1]),
                        neuron=qir.SoftIF(vth=np.array([40, 60, 50]), v_init=np.array([20, 0, 5]))),
              qir.Block("c2", (3, 5, 5), [qir.ConvSyn("c1", rng.integers(-30, 31, (3, 3, 3, 3)),
                                                      padding=(1, 1)),
                                          qir.ConvSyn("in", rng.integers(-5, 6, (3, 2, 1, 1)))],
                        neuron=qir.SoftIF(vth=np.array([70, 50, 90]))),
              qir.Block("out", (4,), [qir.DenseSyn("c2", _even(rng, (4, 75), 10)),
                                      qir.DenseSyn("c1", _even(rng, (4, 75), 5),
                                                   delay=np.array([0, 1, 2, 3]))],
                        neuron=qir.Readout())]
    return qir.QNetwork(blocks, input_scale=4.0, meta={"recipe": {"neuron_model": "if-soft"}})


class _Bases(dict):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<base files {sorted(self)}>"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """name -> (bytes of the file, the network it holds, whether it carries our seal)."""
    d = tmp_path_factory.mktemp("fuzz_base")
    out = _Bases()
    for name, net, ext in (("standard", standard_net(), False), ("extension", extension_net(), True)):
        path = netx_export.save(net, d / f"{name}.net", extension=ext)
        out[name] = (path.read_bytes(), netx_export.load(path), True)
    out["lava-dl tiny"] = (TINY.read_bytes(), netx_export.load(TINY), False)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_work")


def load_and_run(path: Path) -> tuple[str, qir.QNetwork | None]:
    """'rejected', 'refused by the emulator', 'large' or 'ran'; anything else raised is a bug."""
    try:
        qnet = netx_export.load(path)
    except LoihiConvError as e:
        assert str(e.problem) and e.fix  # every refusal names the problem and a fix
        return "rejected", None
    # What every consumer (CLI, runners) relies on once a file is loaded:
    assert isinstance(qnet.meta, dict)
    assert np.isfinite(qnet.input_scale) and qnet.input_scale > 0 and qnet.output_scale > 0
    if sum(int(np.prod(b.shape)) for b in qnet.blocks) > EMULATE_NEURONS_MAX:
        return "large", qnet
    x = encode(qnet, np.random.default_rng(0).random((2,) + tuple(qnet.input.shape)))
    try:
        res = emulate(qnet, x, steps=4)
        classes = scores(qnet, res.output, res.readout)
    except LoihiConvError:
        return "refused by the emulator", qnet
    assert res.output.shape == (2, 4) + tuple(qnet.output.shape)
    assert classes.shape[0] == 2
    return "ran", qnet


# ---- byte-level mutations -------------------------------------------------------------------
byte_ops = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("overwrite"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.integers(1, 16)),
    st.tuples(st.just("zero"), st.floats(0, 1, exclude_max=True), st.integers(1, 4096)),
), min_size=1, max_size=4)


def mutate_bytes(data: bytes, ops, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    b = bytearray(data)
    for kind, where, n in ops:
        if not b:
            break
        pos = int(where * len(b))
        if kind == "flip":
            b[pos] ^= n
        elif kind == "truncate":
            del b[pos:]
        elif kind == "overwrite":
            b[pos:pos + n] = rng.integers(0, 256, min(n, len(b) - pos), dtype=np.uint8).tobytes()
        elif kind == "insert":
            b[pos:pos] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        else:
            b[pos:pos + n] = bytes(min(n, len(b) - pos))
    return bytes(b)


@FUZZ
@given(name=st.sampled_from(["standard", "extension", "lava-dl tiny"]), ops=byte_ops,
       seed=st.integers(0, 2**32 - 1))
def test_byte_mutations_are_rejected_or_harmless(base, work, name, ops, seed):
    data, original, sealed = base[name]
    path = work / "bytes.net"
    mutated = mutate_bytes(data, ops, seed)
    path.write_bytes(mutated)
    outcome, qnet = load_and_run(path)
    if sealed and qnet is not None:
        # The seal covers every byte after the user block: only a change in the header's
        # padding can get through, and then the network is exactly the original one.
        assert mutated[schema.USERBLOCK:] == data[schema.USERBLOCK:]
        assert diff_networks(qnet, original) == []


# ---- structural mutations (h5py) ------------------------------------------------------------
DTYPES = ["int8", "uint8", "int16", "int64", "float16", "float32", "float64", "bool", "complex64",
          "S8", "str"]
TYPE_STRINGS = [b"pool", b"CUBA", b"conv", b"dense", b"input", b"flatten", b"SOFTIF", b"SDNN",
                b"SIGMA", b"", b"\xff\xfe", b"conv" * 8]
GARBAGE = [-1, 0, 2, 99, 2**40, -2**40, 1.5, float("nan"), float("inf"), "abc", b"\xff", "{",
           "null", "[1, 2]", '{"timesteps": -5}', np.arange(3)]

struct_ops = st.lists(st.tuples(
    st.sampled_from(["delete", "del_attr", "dtype", "reshape", "swap_layers", "move_layer",
                     "absurd", "type", "nan", "set_attr", "add_key", "copy_layer"]),
    st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=3)


def _items(f: h5py.File) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    f["layer"].visititems(lambda n, o: out.append((f"layer/{n}", o)))
    return sorted(out, key=lambda it: it[0])


def _datasets(f) -> list[str]:
    return [n for n, o in _items(f) if isinstance(o, h5py.Dataset)]


def _cast(value: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "S8":
        return np.asarray(value).astype("S8")
    if dtype == "str":
        return np.asarray([str(v) for v in np.asarray(value).reshape(-1)], dtype=h5py.string_dtype())
    try:
        with np.errstate(all="ignore"):
            return np.asarray(value).astype(dtype)
    except (ValueError, TypeError):  # e.g. a 'type' string as ints: same shape, zeros
        return np.zeros(np.shape(value), dtype)


def _reshape(value: np.ndarray, k: int) -> np.ndarray:
    v = np.asarray(value)
    choices = [v.reshape(-1), v.reshape(-1)[: max(0, v.size - 1)], v.reshape(-1)[:0],
               v.reshape(-1)[:1].reshape(()) if v.size else np.zeros(()), v[None], v.T,
               np.concatenate([v.reshape(-1), v.reshape(-1)])]
    return choices[k % len(choices)]


def _replace(f, path: str, value) -> None:
    del f[path]
    f[path] = value


def apply_op(f: h5py.File, op: tuple[str, int, int], large_ok: bool) -> None:
    """One structural mutation; ``a`` picks the target, ``b`` the variant."""
    kind, a, b = op
    items, dsets = _items(f), _datasets(f)
    layers = sorted(f["layer"].keys()) if "layer" in f else []
    if not items:
        return
    if kind == "delete":
        del f[items[a % len(items)][0]]
    elif kind == "del_attr":
        holders = [f] + [o for _, o in items if len(o.attrs)]
        h = holders[a % len(holders)]
        if len(h.attrs):
            del h.attrs[sorted(h.attrs.keys())[b % len(h.attrs)]]
    elif kind == "dtype" and dsets:
        p = dsets[a % len(dsets)]
        _replace(f, p, _cast(f[p][()], DTYPES[b % len(DTYPES)]))
    elif kind == "reshape" and dsets:
        p = dsets[a % len(dsets)]
        _replace(f, p, _reshape(f[p][()], b))
    elif kind == "swap_layers" and len(layers) > 1:
        x, y = layers[a % len(layers)], layers[b % len(layers)]
        if x != y:
            f.move(f"layer/{x}", "layer/tmp")
            f.move(f"layer/{y}", f"layer/{x}")
            f.move("layer/tmp", f"layer/{y}")
    elif kind == "move_layer" and layers:
        names = [str(len(layers) + 1 + b % 3), "x", "01", "-1", str(10**7)]
        target = names[b % len(names)]
        if target not in layers:
            f.move(f"layer/{layers[a % len(layers)]}", f"layer/{target}")
    elif kind == "absurd" and dsets:
        p = dsets[a % len(dsets)]
        variants = [np.array([10**9]), np.array([10**5, 10**5, 10**5]), np.array(2**40),
                    np.array(-(2**40)), np.array([0, 3, 3]), np.array([-4])]
        if large_ok and b % 7 == 6:  # a dataset declaring 10^8+1 values (never written)
            del f[p]
            f.create_dataset(p, shape=(10**8 + 1,), dtype="f4")
        else:
            _replace(f, p, variants[b % len(variants)])
    elif kind == "type":
        typed = [n for n in dsets if n.endswith("/type")]
        if typed:
            p = typed[a % len(typed)]
            v = TYPE_STRINGS[b % len(TYPE_STRINGS)]
            _replace(f, p, [np.array([v], dtype="S32"), np.array(v), np.array([v, v]),
                            np.array([7])][(b // len(TYPE_STRINGS)) % 4])
    elif kind == "nan":
        floats = [n for n in dsets if f[n].dtype.kind in "fiu" and f[n].size]
        if floats:
            p = floats[a % len(floats)]
            v = np.asarray(f[p][()], dtype=np.float64).copy()
            v.reshape(-1)[b % v.size] = [np.nan, np.inf, -np.inf, 0.5, 1e30][b % 5]
            _replace(f, p, v.astype(np.float32 if b % 2 else np.float64))
    elif kind == "set_attr":
        holders = [("root", f)] + [(n, o) for n, o in items if isinstance(o, h5py.Group)]
        _, h = holders[a % len(holders)]
        keys = sorted(h.attrs.keys()) or [schema.NAME_ATTR]
        key = [*keys, schema.FORMAT_ATTR, "input_scale", "meta"][b % (len(keys) + 3)]
        h.attrs[key] = GARBAGE[(a + b) % len(GARBAGE)]
    elif kind == "add_key":
        groups = [f["layer"]] + [o for _, o in items if isinstance(o, h5py.Group)]
        g = groups[a % len(groups)]
        key = ["synapses/1/type", "source", "foo", "neuron/type", "delay", "groups"][b % 6]
        if key not in g:
            g[key] = [np.array([b"conv"]), np.array(b % 5), np.arange(4.0)][b % 3]
    elif kind == "copy_layer" and layers:
        name = str(len(layers) + b % 2)
        if name not in f["layer"]:
            f.copy(f[f"layer/{layers[a % len(layers)]}"], f["layer"], name=name)


def _foreign_copy(src: Path, dst: Path) -> None:
    """Plain HDF5 without our user block (as h5repack leaves it): the content checksum is all
    that is left of our integrity checks, and a file claiming to be ours must keep it."""
    with h5py.File(src, "r") as fs, h5py.File(dst, "w") as fd:
        for k, v in fs.attrs.items():
            fd.attrs[k] = v
        fs.copy(fs["layer"], fd, name="layer")


def _rechecksum(f: h5py.File) -> None:
    """Recompute the content checksum after an edit, as a careful editor would (not over a
    dataset declared huge: the reader must refuse that from its metadata before reading it)."""
    small = "layer" in f and all(o.size < 10**6 for _, o in _items(f) if isinstance(o, h5py.Dataset))
    if small and schema.CHECKSUM_ATTR in f.attrs:
        f.attrs[schema.CHECKSUM_ATTR] = schema.file_checksum(f)


def _reseal(path: Path) -> None:
    """Recompute the content checksum (unless a mutation declared a huge dataset, which the
    reader must refuse from its metadata before reading it) and rewrite the user block."""
    with h5py.File(path, "r+") as f:
        _rechecksum(f)
    schema.seal_file(path)


@FUZZ
@given(name=st.sampled_from(["standard", "extension", "lava-dl tiny"]),
       mode=st.sampled_from(["reseal", "foreign"]), ops=struct_ops)
def test_structural_mutations_are_rejected_or_run(base, work, name, mode, ops):
    data, _, sealed = base[name]
    path = work / "struct.net"
    if sealed and mode == "foreign":
        (work / "src.net").write_bytes(data)
        _foreign_copy(work / "src.net", path)
    else:
        path.write_bytes(data)
    with h5py.File(path, "r+") as f:
        for op in ops:
            apply_op(f, op, large_ok=not sealed or mode == "foreign")
        if mode == "foreign":
            _rechecksum(f)
    if sealed and mode == "reseal":
        _reseal(path)
    load_and_run(path)


# ---- the structural checks work without the seal --------------------------------------------
def _mutated_foreign(base, work, name: str, fn) -> Path:
    (work / "src.net").write_bytes(base[name][0])
    path = work / f"foreign_{name}.net"
    _foreign_copy(work / "src.net", path)
    with h5py.File(path, "r+") as f:
        fn(f)
        _rechecksum(f)
    return path


def test_unsealed_copies_load_as_the_same_network(base, work):
    for name in ("standard", "extension"):
        path = _mutated_foreign(base, work, name, lambda f: None)
        assert schema.check_seal(path) == "foreign"
        assert diff_networks(netx_export.load(path), base[name][1]) == []


@pytest.mark.parametrize("name,edit,words", [
    ("standard", lambda f: f["layer/1/weight"].__setitem__((0, 0, 0, 0), np.nan), "non-finite"),
    ("extension", lambda f: f["layer/2/weight"].__setitem__((0, 0, 0, 0), np.inf), "non-finite"),
    ("standard", lambda f: _replace(f, "layer/1/neuron/vThMant", 2**40), "vThMant"),
    ("extension", lambda f: _replace(f, "layer/2/source", 3), "'source' = 3"),
    ("extension", lambda f: _replace(f, "layer/1/neuron/vThMant", [40, 60]), "per channel"),
    ("standard", lambda f: apply_op(f, ("swap_layers", 1, 3), False), "layer"),
    ("standard", lambda f: _replace(f, "layer/3/shape", [10**9]), "bad shape"),
    ("lava-dl tiny", lambda f: _replace(f, "layer/1/type", np.array([b"pool"], "S8")), "'pool'"),
    ("lava-dl tiny", lambda f: _replace(f, "layer/2/weight", np.zeros((2, 2), "S4")), "dtype"),
    # found by this fuzzer: a stride of 2^40 still gives the declared (36, 1, 1) output, and
    # torch's conv then kills the interpreter with SIGFPE
    ("lava-dl tiny", lambda f: _replace(f, "layer/2/stride", np.array(2**40)), "out of proportion"),
    ("standard", lambda f: _replace(f, "layer/1/padding", [2**20, 2**20]), "out of proportion"),
    ("standard", lambda f: f.attrs.__setitem__("meta", "[1, 2]"), "not an object"),
    ("extension", lambda f: f.attrs.__setitem__("input_scale", np.nan), "'input_scale'"),
])
def test_structural_errors_are_named_without_the_seal(base, work, name, edit, words):
    if name == "lava-dl tiny":  # already foreign: edit a copy
        path = work / "tiny_copy.net"
        path.write_bytes(base[name][0])
        with h5py.File(path, "r+") as f:
            edit(f)
    else:
        path = _mutated_foreign(base, work, name, edit)
    with pytest.raises(NetXFormatError) as e:
        netx_export.load(path)
    assert words in str(e.value) and e.value.exit_code == 3
