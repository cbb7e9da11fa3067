"""`dataset=image_folder dataset.path=DIR`: your photos, one subfolder per class.

    DIR/cat/001.jpg, DIR/cat/002.png, DIR/dog/..., ...      (folder names are the classes, sorted)
    or DIR/train/<class>/..., DIR/val/<class>/..., DIR/test/<class>/...   (your own split)

PNG, JPEG, BMP and GIF (its first frame) of any size and colour mode. Every file is opened once
when the dataset is loaded (its header, and a reduced decode that finds truncated files) by a pool
of threads; unreadable or non-image files are listed and skipped (`dataset.on_bad_file=skip`) or
stop the run (`error`). The images themselves are never held in memory: training streams them
from disk through tf.data (`dlx.training.batches`), decoded and resized in parallel by
TensorFlow, prefetched; `dataset.cache=FILE` keeps the decoded images in a file after the first
epoch (named FILE-<hash of the files, size and colour>: changing them never reads stale images).
`dataset.image_size` ([height, width]; null = the median size of the images, scaled down to at
most 64 a side), `dataset.color` (rgb | grayscale) and the scaling are saved with the run, and
`dlx predict` / `dlx serve` prepare new images with the same TensorFlow decode and resize.
Without train/val/test folders, `dataset.val_split` and `dataset.test_split` of each class are
held out (drawn with `dataset.data_seed`); split.json in the run lists the files of each split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dlx.errors import DataError, DlxError

log = logging.getLogger(__name__)

DESCRIPTIONS = {"image_folder": "your images: dataset.path=DIR with one folder per class (PNG, JPEG, BMP, GIF)"}
FORMATS = {"PNG", "JPEG", "BMP", "GIF", "MPO"}  # what TensorFlow's decode_image reads (MPO: a camera's JPEG)
MAX_AUTO_SIDE = 64
SIZE_SAMPLE = 200  # images whose sizes give the median (image_size=null)
ZSCORE_SAMPLE = 1000  # training images whose pixels give mean and std (scaling=zscore)


def check_file(path: Path) -> tuple[int, int] | str:
    """(height, width), or why the file cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format not in FORMATS:
                return f"{im.format} is not PNG, JPEG, BMP or GIF"
            size = im.size
            im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG: a fast reduced decode
            im.load()
            return size[1], size[0]
    except Image.DecompressionBombError:
        return "more pixels than PIL decodes safely"
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as exc:
        return f"not a readable image ({type(exc).__name__})"


def _class_files(root: Path) -> dict[str, list[Path]]:
    found = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {d.name: sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")) for d in found}


def scan(root: Path, cfg, classes: list[str] | None = None) -> tuple[list[str], list[Path], np.ndarray, list]:
    """(classes, files, labels, sizes) of one folder of class folders, bad files left out or refused."""
    per_class = _class_files(root)
    if classes is None:
        if not per_class:
            raise DataError(f"{root}: no class folders; expected one subfolder of images per class")
        empty = [c for c, files in per_class.items() if not files]
        if empty:
            raise DataError(f"{root}: class folder {empty[0]} has no files (every class needs images)")
        if len(per_class) < 2:
            raise DataError(f"{root}: one class folder ({next(iter(per_class))}); a classifier needs two or more")
        classes = list(per_class)
    else:
        extra = sorted(set(per_class) - set(classes))
        if extra:
            raise DataError(f"{root}: class folder {extra[0]} is not among the training folder's classes ({', '.join(classes)})")
        missing = [c for c in classes if c not in per_class]
        if missing:
            raise DataError(f"{root}: no folder for class {missing[0]} (the training folder's classes: {', '.join(classes)})")
    files = [f for c in classes for f in per_class[c]]
    labels = np.array([i for i, c in enumerate(classes) for _ in per_class[c]], dtype=np.int32)
    with ThreadPoolExecutor(max_workers=8) as pool:  # PIL decodes without the GIL
        checked = list(pool.map(check_file, files, chunksize=64))
    bad = [(f, why) for f, why in zip(files, checked) if isinstance(why, str)]
    if bad:
        if str(cfg.on_bad_file) == "error":
            raise DataError(f"{bad[0][0]}: {bad[0][1]} (dataset.on_bad_file=skip leaves such files out)")
        shown = "; ".join(f"{f}: {why}" for f, why in bad[:5])
        log.warning("%d of %d files skipped (%s%s)", len(bad), len(files), shown, "; ..." if len(bad) > 5 else "")
    keep = np.array([not isinstance(c, str) for c in checked])
    files = [f for f, k in zip(files, keep) if k]
    labels, sizes = labels[keep], [c for c in checked if not isinstance(c, str)]
    if not files:
        raise DataError(f"{root}: none of the files is a readable PNG, JPEG, BMP or GIF")
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() == 0:
        raise DataError(f"{root}: class folder {classes[int(counts.argmin())]} has no readable images")
    return classes, files, labels, sizes


def image_size(cfg, sizes: list) -> tuple[int, int]:
    if cfg.image_size is not None:
        if len(cfg.image_size) != 2:
            raise DlxError(f"dataset.image_size: expected [height, width], got {list(cfg.image_size)}")
        return int(cfg.image_size[0]), int(cfg.image_size[1])
    sample = np.array(sizes[:: max(1, len(sizes) // SIZE_SAMPLE)], dtype=np.float64)
    h, w = np.median(sample, axis=0)
    shrink = min(1.0, MAX_AUTO_SIDE / max(h, w))
    return max(1, int(round(h * shrink))), max(1, int(round(w * shrink)))


def _held_out(labels: np.ndarray, cfg) -> dict[str, np.ndarray]:
    from dlx.data.table import split_rows

    return split_rows(labels, cfg, classify=True)


def load(cfg):
    from dlx.data.types import Data, DataSpec, ImageFiles, Split

    if not cfg.path:
        raise DlxError("dataset.path: dataset=image_folder needs the folder of class folders")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.path={cfg.path}: no such directory")
    own = {p: root / p for p in ("train", "val", "test") if (root / p).is_dir()}
    if "train" in own and len(own) > 1:  # the user's own split
        classes, files, labels, sizes = scan(own["train"], cfg)
        parts = {"train": (files, labels)}
        for part in ("val", "test"):
            if part in own:
                _, f, y, _ = scan(own[part], cfg, classes)
                parts[part] = (f, y)
        if len(parts) == 2:  # one of val/test given: the other comes from train
            other = "test" if "val" in parts else "val"
            take = _held_out(labels, cfg)[other]  # its own fraction; the rest trains
            keep = np.setdiff1d(np.arange(len(files)), take)
            parts[other] = ([files[i] for i in take], labels[take])
            parts["train"] = ([files[i] for i in keep], labels[keep])
    else:
        classes, files, labels, sizes = scan(root, cfg)
        rows = _held_out(labels, cfg)
        parts = {k: ([files[i] for i in v], labels[v]) for k, v in rows.items()}
    h, w = image_size(cfg, sizes)
    channels = 3 if str(cfg.color) == "rgb" else 1
    spec = DataSpec("image_folder", (h, w, channels), len(classes), classes, 255.0, scaling=str(cfg.scaling),
                    layout="photo")
    splits = {k: Split(ImageFiles([str(p) for p in f], (h, w), channels, spec), y) for k, (f, y) in parts.items()}
    if spec.scaling == "zscore":
        train = splits["train"].x
        pick = np.linspace(0, len(train) - 1, min(len(train), ZSCORE_SAMPLE)).astype(int)
        unit = train.raw(pick) / 255.0
        spec.mean, spec.std = float(unit.mean()), float(unit.std()) or 1.0
    if cfg.subset is not None:
        splits["train"] = Split(splits["train"].x.take(np.arange(min(cfg.subset, len(splits["train"])))),
                                splits["train"].y[: cfg.subset])
    listing = {k: [str(Path(p).relative_to(root)) for p in s.x.paths] for k, s in splits.items()}
    data = Data(splits["train"], splits["val"], splits["test"], spec, str(root), extra={"split": listing})
    if cfg.cache:  # TensorFlow would find a missing or read-only folder only in the first epoch
        cache = Path(cfg.cache).expanduser()
        if not cache.parent.is_dir() or not os.access(cache.parent, os.W_OK):
            raise DlxError(f"dataset.cache={cfg.cache}: {cache.parent} is not a folder this user can write in")
        # the file is named after what it holds (the training files, their order, size, colour):
        # a run with another image_size, colour, split or subset makes its own file instead of
        # reading images of another shape from this one
        held = json.dumps([listing["train"], splits["train"].y.tolist(), h, w, channels, str(root.resolve())])
        data.extra["cache"] = f"{cache}-{hashlib.sha256(held.encode()).hexdigest()[:12]}"
        log.info("decoded training images cached in %s*", data.extra["cache"])
    return data


LOADERS = {"image_folder": load}
