"""The data types every loader returns (built-in or your own): `Data` = train / val / test `Split`s
and a `DataSpec`, what a model and `dlx predict` need to know about the inputs. Saved with a run
as data_spec.json.

Images are float32 ``(N, H, W, C)``; tabular rows and text (word counts over a vocabulary)
float32 ``(N, D)``. Class labels are int ``(N,)`` in 0..num_classes-1, regression targets
float32 ``(N, 1)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class DataSpec:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    pixel_max: float = 1.0  # value of a full-intensity pixel in the raw data (16 for digits, 255 for MNIST)
    scaling: str = "unit"
    mean: float = 0.0  # z-score statistics of the (unit-scaled) training split
    std: float = 1.0
    box: int = 0  # side of the box the object is scaled into for predict (MNIST: 20 of 28); 0 = whole frame
    kind: str = "image"  # image | tabular | text
    task: str = "classification"  # classification | regression
    # tabular/text: feature names (text: the vocabulary) and per-feature scaling x' = (x - offset) / spread
    feature_names: list[str] | None = None
    offset: list[float] | None = None
    spread: list[float] | None = None
    # csv tables: per raw column how it becomes features (dlx/data/table.py)
    columns: list[dict] | None = None
    # how `dlx predict` / `dlx serve` prepare an image file: glyph = crop to the ink and centre it (the
    # digit and clothing sets); photo = decode and resize the whole image as training did (dlx.data.folders)
    layout: str = "glyph"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "DataSpec":
        d = json.loads(path.read_text())
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


class ImageFiles:
    """A split's images as files on disk, read when needed: training streams them through tf.data
    (dlx.training.batches); indexing (`files[idx]`) decodes those images into model inputs."""

    ndim = 4
    dtype = np.float32

    def __init__(self, paths, size: tuple[int, int], channels: int, spec: "DataSpec"):
        self.paths = np.asarray(paths, dtype=str)
        self.size, self.channels, self.spec = tuple(size), channels, spec

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.size, self.channels)

    def take(self, idx) -> "ImageFiles":
        return ImageFiles(self.paths[idx], self.size, self.channels, self.spec)

    def raw(self, idx) -> np.ndarray:
        """Decoded, resized pixels (0..255) of the images at `idx`, as training reads them."""
        from dlx.data.decode import decode_file

        return np.stack([decode_file(p, self.size, self.channels) for p in np.atleast_1d(self.paths[idx])])

    def __getitem__(self, idx) -> np.ndarray:
        return scale(self.raw(idx), self.spec)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    spec: DataSpec
    source: str = ""  # where the files came from, for the log
    extra: dict = field(default_factory=dict)


def scale(x: np.ndarray, spec: DataSpec) -> np.ndarray:
    """Raw inputs -> model inputs, exactly as in training. Used by predict too."""
    x = np.asarray(x, dtype=np.float32)
    if spec.scaling == "none":
        return x
    if spec.kind != "image":  # per-feature statistics of the training split
        if spec.offset is None:
            return x
        return (x - np.asarray(spec.offset, np.float32)) / np.asarray(spec.spread, np.float32)
    x = x / np.float32(spec.pixel_max)
    if spec.scaling == "zscore":
        x = (x - np.float32(spec.mean)) / np.float32(spec.std)
    return x


def scale_tensor(x, spec: DataSpec):
    """`scale` for an image tensor inside a tf.data pipeline (the same arithmetic)."""
    if spec.scaling == "none":
        return x
    x = x / spec.pixel_max
    return (x - spec.mean) / spec.std if spec.scaling == "zscore" else x


def unscale(x: np.ndarray, spec: DataSpec) -> np.ndarray:
    """Model inputs -> raw inputs (the inverse of `scale`): what a user would send for them."""
    x = np.asarray(x, dtype=np.float64)
    if spec.scaling == "none":
        return x
    if spec.kind != "image":
        return x if spec.offset is None else x * np.asarray(spec.spread) + np.asarray(spec.offset)
    if spec.scaling == "zscore":
        x = x * spec.std + spec.mean
    return x * spec.pixel_max
