"""CIFAR-10: 60,000 32x32 colour images in 10 classes (50,000 train / 10,000 test), from the
canonical `cifar-10-python.tar.gz` (its published md5), cached; or `dataset.path=` a local copy
(the archive, or the extracted `cifar-10-batches-py` folder).

The archive holds pickled dicts (`data_batch_1..5`, `test_batch`: `data` N x 3072 uint8, the red,
green and blue planes of each image in turn; `labels` N ints; `batches.meta`: `label_names`). They
are read with an unpickler that rebuilds arrays, lists and numbers and nothing else.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from dlx.data.download import Remote, cache_dir, fetch
from dlx.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
REMOTES = {"cifar10": [Remote(ARCHIVE, ("https://www.cs.toronto.edu/~kriz/",), "c58f30108f718f92721af3b95e74349a", "md5")]}
DESCRIPTIONS = {"cifar10": "CIFAR-10 32x32 colour images, 10 classes, 50k train / 10k test (download, 163 MB)"}
FOLDER = "cifar-10-batches-py"
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = "test_batch"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _BatchUnpickler(pickle.Unpickler):
    """numpy arrays and plain containers only: a tampered batch cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"{where}: not a CIFAR-10 batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: not a CIFAR-10 batch (a {type(batch).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _images(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get("data"), batch.get("labels")
    if data is None or labels is None:
        raise DataError(f"{where}: a CIFAR-10 batch needs 'data' and 'labels'")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{where}: expected N x 3072 uint8 pixels and N labels, got {data.dtype} {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def _members(path: Path) -> dict[str, bytes]:
    """The batch files of the archive or of an extracted folder, by name."""
    names = [*TRAIN, TEST]
    if path.is_dir():
        folder = path / FOLDER if (path / FOLDER).is_dir() else path
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{folder}: missing {', '.join(missing)} (expected the extracted {FOLDER} folder)")
        return {n: (folder / n).read_bytes() for n in names}
    try:
        with tarfile.open(path, "r:gz") as archive:
            found = {Path(m.name).name: m for m in archive.getmembers() if m.isfile() and Path(m.name).parent.name == FOLDER}
            missing = [n for n in names if n not in found]
            if missing:
                raise DataError(f"{path}: the archive lacks {FOLDER}/{', '.join(missing)}")
            return {n: archive.extractfile(found[n]).read() for n in names}
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable {ARCHIVE} ({type(exc).__name__}: {exc})") from None


def load(cfg):
    from dlx.data.types import DataSpec

    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise DataError(f"dataset.path={cfg.path}: no such file or directory")
        if path.is_dir() and (path / ARCHIVE).is_file():
            path = path / ARCHIVE
        source = str(path)
    else:
        path = fetch(REMOTES["cifar10"][0], cache_dir() / "cifar10")
        source = str(path)
    raw = _members(path)
    parts = [_images(_unpickle(raw[n], f"{path}:{n}"), f"{path}:{n}") for n in TRAIN]
    x_train, y_train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_test, y_test = _images(_unpickle(raw[TEST], f"{path}:{TEST}"), f"{path}:{TEST}")
    spec = DataSpec("cifar10", (32, 32, 3), 10, list(CLASSES), 255.0, layout="photo")
    return (x_train, y_train), (x_test, y_test), spec, source


LOADERS = {"cifar10": load}
