"""Dataset registry: every loader returns the same `Data` (dlx/data/types.py), built-in or your
own (`_target_`); the image sets (digits, MNIST, Fashion-MNIST) are loaded here, the other kinds
in tabular.py, text.py and sequences.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from dlx.data import cifar, folders, sequences, table, tabular, text
from dlx.data.download import Remote, cache_dir, fetch
from dlx.data.idx import read_idx
from dlx.data.types import Data, DataSpec, Split, scale
from dlx.errors import DataError, DlxError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sources
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# sha256 of the canonical MNIST files (the two t10k ones checked against real copies here);
# Fashion-MNIST publishes md5 only (Zalando's README, torchvision).
REMOTES: dict[str, list[Remote]] = {
    "mnist": [
        Remote(f"{_IDX_NAMES[0]}.gz", MNIST_MIRRORS, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        Remote(f"{_IDX_NAMES[1]}.gz", MNIST_MIRRORS, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        Remote(f"{_IDX_NAMES[2]}.gz", MNIST_MIRRORS, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        Remote(f"{_IDX_NAMES[3]}.gz", MNIST_MIRRORS, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ],
    "fashion_mnist": [
        Remote(f"{_IDX_NAMES[0]}.gz", FASHION_MIRRORS, "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "md5"),
        Remote(f"{_IDX_NAMES[1]}.gz", FASHION_MIRRORS, "25c81989df183df01b3e8a0aad5dffbe", "md5"),
        Remote(f"{_IDX_NAMES[2]}.gz", FASHION_MIRRORS, "bef4ecab320f06d8554ea6380940ec79", "md5"),
        Remote(f"{_IDX_NAMES[3]}.gz", FASHION_MIRRORS, "bb300cfdad3c16e7a12a480ee83cd310", "md5"),
    ],
}

# where Debian's dataset-fashion-mnist package installs the four IDX files
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DESCRIPTIONS = {
    "digits": "scikit-learn 8x8 digits, 1,797 images, bundled (offline)",
    "mnist": "MNIST 28x28 handwritten digits, 60k train / 10k test (download)",
    "fashion_mnist": "Fashion-MNIST 28x28 clothing, 60k train / 10k test (download, or Debian dataset-fashion-mnist)",
}


def dataset_dir(name: str) -> Path:
    return cache_dir() / name


def _find_local(directory: Path, stem: str) -> Path:
    """`stem` with or without .gz, also the `train-images.idx3-ubyte` spelling some archives use."""
    for candidate in (stem + ".gz", stem, stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise DataError(f"{directory}: missing {stem}[.gz] (dataset.path must hold the four IDX files)")


def _idx_files(name: str, path: str | None, mirror: str | None = None) -> tuple[list[Path], str]:
    if path:
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise DataError(f"dataset.path={path}: no such directory")
        return [_find_local(directory, stem) for stem in _IDX_NAMES], str(directory)
    target = dataset_dir(name)
    return [fetch(remote, target, mirror=mirror) for remote in REMOTES[name]], str(target)


def download(name: str, mirror: str | None = None) -> list[Path]:
    if name not in REMOTES:
        raise DlxError(f"'{name}' has nothing to download; downloadable: {', '.join(REMOTES)}")
    return [fetch(remote, dataset_dir(name), mirror=mirror) for remote in REMOTES[name]]


def _check_pair(images: np.ndarray, labels: np.ndarray, files: list[Path], expect_n: int) -> None:
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{files[0]}: expected (N, rows, cols) images and (N,) labels, got {images.shape} / {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{files[0]} has {len(images)} images but {files[1]} has {len(labels)} labels")
    if expect_n and len(images) != expect_n:
        raise DataError(f"{files[0]}: expected {expect_n} images, found {len(images)}")


def _load_idx(cfg, classes: list[str]) -> tuple[tuple, tuple, DataSpec, str]:
    files, source = _idx_files(cfg.name, cfg.path)
    x_train, y_train, x_test, y_test = (read_idx(f) for f in files)
    _check_pair(x_train, y_train, files[0:2], 0)
    _check_pair(x_test, y_test, files[2:4], 0)
    if y_train.max() >= len(classes) or y_test.max() >= len(classes):
        raise DataError(f"{files[1]}: labels outside 0..{len(classes) - 1}")
    spec = DataSpec(cfg.name, x_train.shape[1:] + (1,), len(classes), classes, 255.0)
    return (x_train, y_train), (x_test, y_test), spec, source


def _load_mnist(cfg):
    train, test, spec, source = _load_idx(cfg, [str(d) for d in range(10)])
    spec.box = 20  # MNIST digits are size-normalised to 20x20 and centred by mass in 28x28
    return train, test, spec, source


def _load_fashion_mnist(cfg):
    return _load_idx(cfg, FASHION_CLASSES)


def _load_digits(cfg):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    if cfg.test_size <= 0:
        raise DlxError("dataset.test_size: digits has no official test split; expected a positive count")
    # fixed, stratified hold-out: the split never depends on trainer.seed
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.images, bunch.target, test_size=cfg.test_size, stratify=bunch.target, random_state=0
    )
    spec = DataSpec("digits", (8, 8, 1), 10, [str(d) for d in range(10)], 16.0)
    return (x_train, y_train), (x_test, y_test), spec, "scikit-learn (bundled)"


LOADERS: dict[str, Callable] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    **cifar.LOADERS, **tabular.LOADERS, **text.LOADERS, **sequences.LOADERS, **table.LOADERS,
    **folders.LOADERS,
}
DESCRIPTIONS |= cifar.DESCRIPTIONS | folders.DESCRIPTIONS | table.DESCRIPTIONS | tabular.DESCRIPTIONS | text.DESCRIPTIONS | sequences.DESCRIPTIONS
REMOTES |= cifar.REMOTES | text.REMOTES | sequences.REMOTES
SPLITS_ITSELF = set(sequences.LOADERS) | set(table.LOADERS) | set(folders.LOADERS)  # loaders returning a finished Data (their own splits)
TEXT = set(text.LOADERS)  # loaders that can give word ids instead of word counts


def _head(x, n: int):
    return {k: v[:n] for k, v in x.items()} if isinstance(x, dict) else x[:n]


def _summary(name: str, data: Data) -> None:
    spec = data.spec
    target = f"{spec.num_classes} classes" if spec.task == "classification" else "regression target"
    if spec.kind == "chars":
        target = f"{spec.num_classes} characters"
    elif spec.kind == "captions":
        target = f"{spec.num_classes} words"
    log.info(
        "dataset %s from %s: %d train / %d val / %d test, input %s, %s, scaling %s",
        name, data.source, len(data.train), len(data.val), len(data.test),
        "x".join(map(str, spec.input_shape)), target, spec.scaling,
    )


def load(cfg, words: bool = False) -> Data:
    """Load, split and scale the dataset described by `cfg` (a `dataset` config node). `words`:
    text datasets as padded word-id sequences rather than word counts (see dlx/data/text.py).
    A node with `_target_` is a dataset of your own: `module.function(cfg) -> Data`."""
    target = getattr(cfg, "_target_", None)
    if target:
        return _load_own(cfg, target)
    if cfg.name not in LOADERS:
        raise DlxError(f"dataset.name: unknown dataset '{cfg.name}'; choose one of: {', '.join(LOADERS)}")
    if cfg.subset is not None and cfg.subset <= 0:
        raise DlxError(f"dataset.subset: expected a positive count or null, got {cfg.subset}")
    if cfg.name in SPLITS_ITSELF:
        data = LOADERS[cfg.name](cfg)
        if cfg.subset is not None and cfg.name in sequences.LOADERS:  # the others take their own subset
            data.train = Split(_head(data.train.x, cfg.subset), data.train.y[: cfg.subset])
        _augment(cfg, data)
        _summary(cfg.name, data)
        return data
    kwargs = {"words": True} if words and cfg.name in TEXT else {}
    (x_train, y_train), (x_test, y_test), spec, source = LOADERS[cfg.name](cfg, **kwargs)
    if not 0 < cfg.val_size < len(x_train):
        raise DlxError(f"dataset.val_size: expected 1..{len(x_train) - 1} for {cfg.name}, got {cfg.val_size}")
    # book convention: the validation set is the *last* val_size training examples
    x_val, y_val = x_train[-cfg.val_size :], y_train[-cfg.val_size :]
    x_train, y_train = x_train[: -cfg.val_size], y_train[: -cfg.val_size]
    if cfg.subset is not None:
        x_train, y_train = x_train[: cfg.subset], y_train[: cfg.subset]
    if getattr(cfg, "extra", None):
        from dlx.data.samples import collected

        x_more, y_more = collected(cfg.extra, spec, x_train.shape[1:])
        x_train = np.concatenate([x_train, x_more.astype(x_train.dtype)])
        y_train = np.concatenate([y_train, y_more.astype(y_train.dtype)])
        log.info("dataset.extra=%s: %d collected samples added to the training split", cfg.extra, len(y_more))

    spec.scaling = "none" if spec.kind == "words" else str(cfg.scaling)  # ids are not scaled
    if spec.kind != "image" and spec.scaling != "none":
        x = x_train.astype(np.float64)
        if spec.scaling == "zscore":
            offset, spread = x.mean(axis=0), x.std(axis=0)
        else:  # unit: min-max to [0, 1]
            offset, spread = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
        spec.offset, spec.spread = offset.tolist(), np.where(spread > 0, spread, 1.0).tolist()
    elif spec.scaling == "zscore":
        unit = x_train.astype(np.float32) / np.float32(spec.pixel_max)
        spec.mean, spec.std = float(unit.mean()), float(unit.std()) or 1.0

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        if spec.task == "regression":
            return Split(scale(x, spec).reshape((-1, *spec.input_shape)), y.astype(np.float32).reshape(-1, 1))
        return Split(scale(x, spec).reshape((-1, *spec.input_shape)), y.astype(np.int32))

    data = Data(split(x_train, y_train), split(x_val, y_val), split(x_test, y_test), spec, source)
    _augment(cfg, data)
    _summary(cfg.name, data)
    return data


def _augment(cfg, data: Data) -> None:
    """dataset.augment, for the training batches of image data (dlx.training.batches)."""
    aug = getattr(cfg, "augment", None)
    wanted = {k: getattr(aug, k) for k in ("flip", "rotation", "zoom", "contrast")} if aug is not None else {}
    if not any(wanted.values()):
        return
    if data.spec.kind != "image" or len(data.spec.input_shape) != 3:
        raise DlxError(f"dataset.augment: random image changes need an image dataset; {data.spec.name} is {data.spec.kind}")
    data.extra["augment"] = wanted


def materialize(data: Data, why: str) -> Data:
    """Streamed image files decoded into arrays, for a family that needs every example at once."""
    from dlx.data.types import ImageFiles

    if not isinstance(data.train.x, ImageFiles):
        return data
    log.info("decoding %d images into memory: %s", len(data.train) + len(data.val) + len(data.test), why)
    for part in ("train", "val", "test"):
        split = getattr(data, part)
        setattr(data, part, Split(np.asarray(split.x), split.y))
    return data


def _load_own(cfg, target: str) -> Data:
    """A loader of your own, checked: the splits must be what the built-in loaders return."""
    from dlx.family import import_target

    _, fn = import_target("dataset._target_", target)
    try:
        data = fn(cfg)
    except DlxError:
        raise
    except Exception as exc:
        raise DataError(f"dataset._target_: {target}(cfg) failed: {type(exc).__name__}: {exc} "
                        "(HYDRA_FULL_ERROR=1 shows the traceback)") from exc
    if not isinstance(data, Data):
        raise DataError(f"dataset._target_: {target} returned {type(data).__name__}, expected dlx.data.types.Data "
                        "(train / val / test Splits and a DataSpec)")
    for part in ("train", "val", "test"):
        split = getattr(data, part)
        n = len(split.y)
        if n == 0 or len(_leaves(split.x)[0]) != n:
            raise DataError(f"dataset._target_: {target}: the {part} split has {n} labels for "
                            f"{len(_leaves(split.x)[0]) if n else 0} inputs (expected the same number, > 0)")
        if tuple(_leaves(split.x)[0].shape[1:]) != tuple(data.spec.input_shape) and not isinstance(split.x, dict):
            raise DataError(f"dataset._target_: {target}: {part} inputs are {tuple(split.x.shape[1:])} per example, "
                            f"but spec.input_shape is {tuple(data.spec.input_shape)}")
    if data.spec.task == "classification" and (int(data.train.y.max()) >= data.spec.num_classes or int(data.train.y.min()) < 0):
        raise DataError(f"dataset._target_: {target}: labels must be 0..{data.spec.num_classes - 1} (spec.num_classes)")
    if data.spec.class_names and len(data.spec.class_names) != data.spec.num_classes:
        raise DataError(f"dataset._target_: {target}: {len(data.spec.class_names)} class_names for {data.spec.num_classes} classes")
    if data.spec.kind != "image" and data.spec.offset is None and data.spec.scaling != "none":
        data.spec.scaling = "none"  # no per-feature statistics given: the loader's values are what the model reads
    data.source = data.source or target
    _summary(data.spec.name, data)
    return data


def _leaves(x) -> list:
    """The arrays of an input (one array, or a dict of them for multi-input models)."""
    return list(x.values()) if isinstance(x, dict) else [x]

