import numpy as np
import pytest

from conftest import FASHION_DIR
from dlx.config import ns
from dlx.data import datasets
from dlx.errors import DataError, DlxError


def ds(**kw):
    base = {"name": "digits", "path": None, "scaling": "unit", "val_size": 200, "test_size": 360, "subset": None}
    return ns(base | kw)


def test_digits_split_is_fixed_and_scaled():
    a, b = datasets.load(ds()), datasets.load(ds())
    assert (len(a.train), len(a.val), len(a.test)) == (1237, 200, 360)
    assert a.train.x.shape[1:] == (8, 8, 1) and a.train.x.dtype == np.float32
    assert 0.0 <= a.train.x.min() and a.train.x.max() == 1.0
    np.testing.assert_array_equal(a.test.y, b.test.y)
    assert np.bincount(a.test.y).min() >= 35  # stratified


def test_validation_is_the_last_training_examples():
    full = datasets.load(ds(val_size=1))
    d = datasets.load(ds(val_size=200))
    np.testing.assert_array_equal(d.val.x, np.concatenate([full.train.x, full.val.x])[-200:])


def test_zscore_uses_training_statistics():
    d = datasets.load(ds(scaling="zscore"))
    assert abs(d.train.x.mean()) < 1e-4 and abs(d.train.x.std() - 1) < 1e-3
    assert d.spec.std > 0 and d.spec.mean > 0


def test_subset_and_bad_sizes():
    assert len(datasets.load(ds(subset=100)).train) == 100
    with pytest.raises(DlxError, match="dataset.val_size"):
        datasets.load(ds(val_size=5000))


def _mnist_dir(tmp_path, shared_mnist):
    """The shared MNIST test files laid out as a full dataset directory (train = test files)."""
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (tmp_path / f"{split}-{kind}-ubyte.gz").symlink_to(shared_mnist / f"t10k-{kind}-ubyte.gz")
    return tmp_path


def test_mnist_from_local_path(tmp_path, shared_mnist):
    d = datasets.load(ds(name="mnist", path=str(_mnist_dir(tmp_path, shared_mnist)), val_size=5000))
    assert (len(d.train), len(d.val), len(d.test)) == (5000, 5000, 10000)
    assert d.train.x.shape[1:] == (28, 28, 1) and d.spec.box == 20


def test_mnist_path_missing_file(tmp_path, shared_mnist):
    _mnist_dir(tmp_path, shared_mnist)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        datasets.load(ds(name="mnist", path=str(tmp_path)))
    with pytest.raises(DataError, match="no such directory"):
        datasets.load(ds(name="mnist", path=str(tmp_path / "nope")))


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_full_from_debian_package():
    d = datasets.load(ds(name="fashion_mnist", path=str(FASHION_DIR), val_size=5000))
    assert (len(d.train), len(d.val), len(d.test)) == (55000, 5000, 10000)
    assert d.spec.class_names[9] == "Ankle boot"
