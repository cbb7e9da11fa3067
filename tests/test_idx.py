import gzip

import numpy as np
import pytest

from dlx.data.idx import read_idx, write_idx
from dlx.errors import DataError


def test_reads_real_mnist_test_set(shared_mnist):
    images = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_mnist / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test labels


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_round_trip_raw_and_gzip(tmp_path, name, dtype):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, a)
    np.testing.assert_array_equal(read_idx(tmp_path / name), a)


def test_bad_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "x")


def test_truncated_data(tmp_path):
    write_idx(tmp_path / "x.idx", np.zeros((10, 4, 4), np.uint8))
    raw = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "x.idx").write_bytes(raw[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "x.idx")


def test_truncated_gzip(tmp_path, shared_mnist):
    raw = (shared_mnist / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "labels.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(tmp_path / "labels.gz")


def test_trailing_bytes(tmp_path):
    payload = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"abcd"
    (tmp_path / "x.gz").write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match="trailing"):
        read_idx(tmp_path / "x.gz")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope.gz")
