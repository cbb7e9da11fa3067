"""Sequence datasets, split by their own rules (their loaders return a finished `Data`).

- `tinyshakespeare` (or `dataset.path=` any UTF-8 text file): a character corpus. The first 90 %
  of the text trains, the next 5 % validates (early stopping, best checkpoint), the last 5 % is
  the held-out test. The vocabulary is the sorted set of the training part's characters (saved as
  the run's class names), plus U+FFFD for any later character training never saw. Examples are
  non-overlapping windows of `dataset.seq_length` characters, the target being the window shifted
  by one character.
- `coco_captions`: the COCO captioning feature format, read from `dataset.path` (a directory, or
  the HDF5 file itself with the vocabulary JSON beside it): `train_features` (N, D) image
  features, `train_captions` (M, T) word ids, `train_image_idxs` (M,) the image of each caption,
  the same three for `val_`, and `coco2014_vocab.json` with `idx_to_word` / `word_to_idx` holding
  `<NULL> <START> <END> <UNK>`. The format has no test part: the val images are halved, the first
  half validates, the second is the held-out test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dlx.data.download import Remote, fetch
from dlx.errors import DataError, DlxError

REMOTES = {
    # karpathy/char-rnn's data/tinyshakespeare/input.txt, 1,115,394 bytes
    "tinyshakespeare": [Remote("input.txt", ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",),
                               "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")],
}
DESCRIPTIONS = {
    "tinyshakespeare": "tiny-shakespeare, 1.1M characters (download); or dataset.path=FILE, any UTF-8 text",
    "coco_captions": "COCO captions as image features + word ids: dataset.path=DIR (HDF5 + coco2014_vocab.json)",
}
SPECIAL_TOKENS = ("<NULL>", "<START>", "<END>", "<UNK>")
CAPTION_KEYS = ("features", "captions", "image_idxs")
VOCAB_FILE = "coco2014_vocab.json"
UNSEEN_CHAR = "\ufffd"  # a character corpus: what validation or test characters absent from training become


# --------------------------------------------------------------------------- characters
def read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None
    except OSError as exc:
        raise DataError(f"dataset.path={path}: {exc.strerror}") from None
    if not text:
        raise DataError(f"{path}: empty file; a character corpus needs text")
    return text


def windows(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of `length` ids and their targets, the same ids one step later."""
    n = (len(ids) - 1) // length
    return ids[: n * length].reshape(n, length), ids[1 : n * length + 1].reshape(n, length)


def _chars(cfg):
    from dlx.data import types
    from dlx.data.download import cache_dir

    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise DataError(f"dataset.path={cfg.path}: no such file (a character corpus is one UTF-8 text file)")
    else:
        path = fetch(REMOTES["tinyshakespeare"][0], cache_dir() / "tinyshakespeare")
    text = read_text(path)
    if cfg.seq_length < 1:
        raise DlxError(f"dataset.seq_length: expected a positive number of characters, got {cfg.seq_length}")
    # 90 % trains, 5 % validates (model selection), the last 5 % is the held-out test
    cuts = (int(len(text) * 0.9), int(len(text) * 0.95))
    vocabulary = sorted(set(text[: cuts[0]]))  # from the training part only
    later = set(text[cuts[0] :])
    if later - set(vocabulary):  # characters training never saw: one shared id
        vocabulary.append(UNSEEN_CHAR)
    lookup = np.full(max(map(ord, later | set(vocabulary))) + 1, len(vocabulary) - 1, dtype=np.int32)
    lookup[[ord(c) for c in vocabulary]] = np.arange(len(vocabulary), dtype=np.int32)
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    named = {"training": ids[: cuts[0]], "validation": ids[cuts[0] : cuts[1]], "test": ids[cuts[1] :]}
    parts = {}
    for name, part in named.items():
        parts[name] = windows(part, cfg.seq_length)
        if len(parts[name][0]) == 0:
            raise DataError(f"{path}: its {name} part has {len(part)} characters, too few for one window of "
                            f"dataset.seq_length={cfg.seq_length} (+1 target); use a longer text or a shorter seq_length")
    spec = types.DataSpec(cfg.name, (cfg.seq_length,), len(vocabulary), vocabulary, 1.0, scaling="none", kind="chars")
    split = types.Split
    return types.Data(split(*parts["training"]), split(*parts["validation"]), split(*parts["test"]), spec, str(path))


# --------------------------------------------------------------------------- captions
def caption_files(path: str) -> tuple[Path, Path]:
    root = Path(path).expanduser()
    if root.is_file():
        h5, folder = root, root.parent
    elif root.is_dir():
        found = sorted(root.glob("*.h5"))
        named = [f for f in found if f.name == "coco2014_captions.h5"]
        if not found:
            raise DataError(f"dataset.path={path}: no .h5 file there (expected coco2014_captions.h5 and {VOCAB_FILE})")
        if len(found) > 1 and not named:
            raise DataError(f"dataset.path={path}: several .h5 files ({', '.join(f.name for f in found)}); name one as dataset.path")
        h5, folder = (named or found)[0], root
    else:
        raise DataError(f"dataset.path={path}: no such file or directory")
    vocab = folder / VOCAB_FILE
    if not vocab.is_file():
        raise DataError(f"{folder}: missing {VOCAB_FILE} (idx_to_word, word_to_idx) next to {h5.name}")
    return h5, vocab


def read_vocabulary(path: Path) -> list[str]:
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        words, index = list(vocab["idx_to_word"]), dict(vocab["word_to_idx"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: expected JSON with idx_to_word (a list) and word_to_idx (an object): {exc}") from None
    missing = [t for t in SPECIAL_TOKENS if t not in index]
    if missing:
        raise DataError(f"{path}: word_to_idx lacks the special token(s) {', '.join(missing)}")
    if any(not 0 <= index[w] < len(words) or words[index[w]] != w for w in SPECIAL_TOKENS):
        raise DataError(f"{path}: idx_to_word and word_to_idx disagree on the special tokens")
    return words


def _read_captions(h5: Path) -> dict[str, np.ndarray]:
    import h5py

    needed = [f"{part}_{key}" for part in ("train", "val") for key in CAPTION_KEYS]
    try:
        with h5py.File(h5, "r") as f:
            missing = [k for k in needed if k not in f]
            if missing:
                raise DataError(f"{h5}: missing key(s) {', '.join(missing)} (a COCO captioning file has "
                                f"{{train,val}}_{{features,captions,image_idxs}})")
            return {k: np.asarray(f[k]) for k in needed}
    except OSError as exc:
        raise DataError(f"{h5}: not a readable HDF5 file ({exc})") from None


def _caption_split(arrays, part: str, vocab_size: int, h5: Path):
    features = arrays[f"{part}_features"].astype(np.float32)
    captions, images = arrays[f"{part}_captions"].astype(np.int32), arrays[f"{part}_image_idxs"].astype(np.int64)
    if features.ndim != 2 or captions.ndim != 2 or images.shape != (len(captions),) or captions.shape[1] < 2:
        raise DataError(f"{h5}: expected {part}_features (N, D), {part}_captions (M, T >= 2) and {part}_image_idxs (M,); got "
                        f"{features.shape}, {captions.shape}, {images.shape}")
    if len(captions) == 0 or images.min() < 0 or images.max() >= len(features):
        raise DataError(f"{h5}: {part}_image_idxs must index {part}_features (0..{len(features) - 1}), and there must be captions")
    if captions.min() < 0 or captions.max() >= vocab_size:
        raise DataError(f"{h5}: {part}_captions holds word ids outside the vocabulary's 0..{vocab_size - 1}")
    return features, captions, images


def _captions(cfg):
    from dlx.data import types

    if not cfg.path:
        raise DlxError("dataset.path: coco_captions needs the directory of coco2014_captions.h5 and coco2014_vocab.json")
    h5, vocab_file = caption_files(cfg.path)
    words = read_vocabulary(vocab_file)
    arrays = _read_captions(h5)
    parts = {p: _caption_split(arrays, p, len(words), h5) for p in ("train", "val")}
    if parts["train"][0].shape[1] != parts["val"][0].shape[1]:
        raise DataError(f"{h5}: train and val features differ in size ({parts['train'][0].shape[1]} vs {parts['val'][0].shape[1]})")

    # the format has no test part: the val images are halved (sorted by index), the first half
    # validates, the second half is the held-out test (captions of one image stay together)
    features, captions, images = parts["val"]
    ids = np.unique(images)
    if len(ids) < 2:
        raise DataError(f"{h5}: val_image_idxs names {len(ids)} image; validation and test need two or more")
    held_out = np.isin(images, ids[len(ids) // 2 :])
    parts["test"] = (features, captions[held_out], images[held_out])
    parts["val"] = (features, captions[~held_out], images[~held_out])

    def split(part: str):
        features, captions, images = parts[part]
        return types.Split({"features": features[images], "captions": captions[:, :-1]}, captions[:, 1:])

    spec = types.DataSpec(cfg.name, (parts["train"][0].shape[1],), len(words), words, 1.0, scaling="none", kind="captions")
    return types.Data(split("train"), split("val"), split("test"), spec, str(h5), extra={"images": parts})


LOADERS = {"tinyshakespeare": _chars, "coco_captions": _captions}


# --------------------------------------------------------------------------- word ids
def pad(seqs: list, length: int, padding: str = "pre", truncating: str = "pre") -> np.ndarray:
    """Id sequences -> (N, length) int32, as keras.utils.pad_sequences (pad value 0)."""
    out = np.zeros((len(seqs), length), dtype=np.int32)
    for row, seq in enumerate(seqs):
        seq = np.asarray(seq, dtype=np.int32)
        seq = seq[-length:] if truncating == "pre" else seq[:length]
        if len(seq):
            if padding == "pre":
                out[row, -len(seq):] = seq
            else:
                out[row, : len(seq)] = seq
    return out
