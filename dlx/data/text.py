"""Text datasets as bags of words: each document becomes its word counts over a vocabulary of
the `dataset.vocab_size` most frequent training words. For the families that read word order
(`config.reads_words`), the same documents come as word ids instead: id 0 pads, id 1 is any word
outside the vocabulary, ids 2.. are the `vocab_size - 2` most frequent words, each document
padded or truncated to `dataset.max_length` ids (`dataset.padding` / `truncating`).

- `text_folder`: one folder per class of .txt files (the layout of aclImdb and 20 Newsgroups);
  a `train/` + `test/` pair of such folders is used as the official split when present.
- `imdb` (binary sentiment, 25k + 25k reviews) and `reuters` (46 topics, 11,228 newswires):
  Keras' npz files (same URLs and checksums as `keras.datasets`), shuffled and split exactly as
  Keras does (seed 113). Their word ids are frequency ranks, so the vocabulary is ranks 1..N.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from dlx.data.download import Remote, fetch
from dlx.errors import DataError, DlxError

KERAS_DATASETS = ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",)
# keras/src/datasets/imdb.py and reuters.py: the npz files' sha256, the word indexes' md5
REMOTES = {
    "imdb": [
        Remote("imdb.npz", KERAS_DATASETS, "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"),
        Remote("imdb_word_index.json", KERAS_DATASETS, "bfafd718b763782e994055a2d397834f", "md5"),
    ],
    "reuters": [
        Remote("reuters.npz", KERAS_DATASETS, "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"),
        Remote("reuters_word_index.json", KERAS_DATASETS, "4d44cc38712099c9e383dc6e5f11a921", "md5"),
    ],
}
DESCRIPTIONS = {
    "text_folder": "your own text: dataset.path=DIR with one folder of .txt files per class (aclImdb layout)",
    "imdb": "IMDB movie reviews, 25k train / 25k test, binary sentiment (download, Keras npz)",
    "reuters": "Reuters newswires, 11,228 in 46 topics, 80/20 split (download, Keras npz)",
}
KERAS_SEED = 113

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TAG = re.compile(r"<[^>]{0,40}>")  # aclImdb reviews contain <br /> tags


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(_TAG.sub(" ", text.lower()))


def vectorize(docs: list[list[str]], vocabulary: list[str]) -> np.ndarray:
    """Word counts of tokenised documents over `vocabulary` (words outside it are dropped)."""
    index = {w: i for i, w in enumerate(vocabulary)}
    out = np.zeros((len(docs), len(vocabulary)), dtype=np.float32)
    for row, doc in enumerate(docs):
        for word, count in Counter(doc).items():
            col = index.get(word)
            if col is not None:
                out[row, col] = count
    return out


def _spec(name: str, classes: list[str], vocabulary: list[str] | None, size: int):
    from dlx.data.types import DataSpec

    return DataSpec(name, (size,), len(classes), classes, 1.0, kind="text", feature_names=vocabulary)


PAD, OOV = "<pad>", "<unk>"  # ids 0 and 1 of a word-id vocabulary


def _words_spec(name: str, classes: list[str], vocabulary: list[str] | None, cfg):
    """feature_names: one name per id (the model's embedding size); ranks stand in for words
    when the corpus came without its word index."""
    from dlx.data.types import DataSpec

    size = cfg.vocab_size - 2
    names = [PAD, OOV, *(vocabulary if vocabulary is not None else [f"<rank {r}>" for r in range(1, size + 1)])]
    return DataSpec(name, (cfg.max_length,), len(classes), classes, 1.0, scaling="none", kind="words", feature_names=names)


def _padded(seqs, cfg) -> np.ndarray:
    from dlx.data.sequences import pad

    return pad(seqs, cfg.max_length, str(cfg.padding), str(cfg.truncating))


def _check_vocab(cfg, words: bool = False) -> None:
    least = 3 if words else 1
    if cfg.vocab_size < least:
        raise DlxError(f"dataset.vocab_size: expected at least {least} words, got {cfg.vocab_size}")
    if words and cfg.max_length < 1:
        raise DlxError(f"dataset.max_length: expected a positive number of words, got {cfg.max_length}")


# --------------------------------------------------------------------------- text_folder
def _read_folder(root: Path, classes: list[str] | None) -> tuple[list[list[str]], np.ndarray, list[str]]:
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.txt")))
    if classes:
        missing = [c for c in classes if c not in found]
        if missing:
            raise DataError(f"dataset.classes: {root} has no folder of .txt files named {', '.join(missing)} (found: {', '.join(found) or 'none'})")
        found = list(classes)
    if len(found) < 2:
        raise DataError(f"dataset.path={root}: found {len(found)} class folder(s) of .txt files ({', '.join(found) or 'none'}); text_folder needs one folder per class, at least 2")
    docs, labels = [], []
    for k, name in enumerate(found):
        for f in sorted((root / name).glob("*.txt")):
            words = tokenize(f.read_text(encoding="utf-8", errors="replace"))
            if not words:
                raise DataError(f"{f}: empty document (no words); remove it or add text")
            docs.append(words)
            labels.append(k)
    return docs, np.asarray(labels), found


def _text_folder(cfg, words: bool = False):
    _check_vocab(cfg, words)
    if not cfg.path:
        raise DlxError("dataset.path: text_folder needs a directory with one folder of .txt files per class")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset.path={cfg.path}: no such directory")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_docs, y_train, classes = _read_folder(root / "train", cfg.classes)
        test_docs, y_test, _ = _read_folder(root / "test", classes)
    else:
        from sklearn.model_selection import train_test_split

        docs, y, classes = _read_folder(root, cfg.classes)
        if not 0 < cfg.test_size < len(y):
            raise DlxError(f"dataset.test_size: expected 1..{len(y) - 1} held-out documents, got {cfg.test_size}")
        train_docs, test_docs, y_train, y_test = train_test_split(docs, y, test_size=cfg.test_size, stratify=y, random_state=0)
    # shuffle the training documents once (fixed seed) so the validation tail mixes the classes
    order = np.random.default_rng(0).permutation(len(y_train))
    train_docs, y_train = [train_docs[i] for i in order], y_train[order]
    # the vocabulary comes from the documents that train: not the validation tail (dataset.val_size), not the test
    fit_docs = train_docs[: -cfg.val_size] if 0 < cfg.val_size < len(train_docs) else train_docs
    counts = Counter(w for doc in fit_docs for w in doc)
    vocabulary = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.vocab_size - 2 * words]]
    if words:
        index = {w: i for i, w in enumerate(vocabulary, start=2)}
        x_train, x_test = (_padded([[index.get(w, 1) for w in doc] for doc in docs], cfg) for docs in (train_docs, test_docs))
        return (x_train, y_train), (x_test, y_test), _words_spec("text_folder", classes, vocabulary, cfg), str(root)
    x_train, x_test = vectorize(train_docs, vocabulary), vectorize(test_docs, vocabulary)
    spec = _spec("text_folder", classes, vocabulary, len(vocabulary))
    return (x_train, y_train), (x_test, y_test), spec, str(root)


# --------------------------------------------------------------------------- Keras npz corpora
class _ArraysOnly(pickle.Unpickler):
    """The npz files hold ragged sequences as pickled object arrays; rebuild arrays, nothing else."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """An npz of numeric and ragged object arrays, without `allow_pickle=True`'s arbitrary code."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                buf = io.BytesIO(archive.read(member))
                try:
                    arrays[member[:-4]] = np.lib.format.read_array(buf, allow_pickle=False)
                except ValueError:  # an object array: skip the header, unpickle arrays only
                    buf.seek(0)
                    major, _ = np.lib.format.read_magic(buf)
                    (np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0)(buf)
                    arrays[member[:-4]] = _ArraysOnly(buf).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable npz of arrays ({exc})") from None
    return arrays


def _rank_counts(seqs, size: int) -> np.ndarray:
    """Bag of words over word ranks 1..size (the npz ids; rank 1 is the most frequent word)."""
    out = np.zeros((len(seqs), size), dtype=np.float32)
    for row, seq in enumerate(seqs):
        ids = np.asarray(seq, dtype=np.int64)
        ids = ids[(ids >= 1) & (ids <= size)] - 1
        np.add.at(out[row], ids, 1.0)
    return out


def _corpus_files(cfg, name: str) -> tuple[Path, Path | None, str]:
    npz, index = (r.filename for r in REMOTES[name])
    if cfg.path:
        root = Path(cfg.path).expanduser()
        if not (root / npz).is_file():
            raise DataError(f"dataset.path={cfg.path}: missing {npz}")
        return root / npz, (root / index) if (root / index).is_file() else None, str(root)
    from dlx.data.download import cache_dir

    files = [fetch(r, cache_dir() / name) for r in REMOTES[name]]
    return files[0], files[1], str(cache_dir() / name)


def _rank_ids(seqs, cfg) -> np.ndarray:
    """Word ranks 1..vocab_size-2 -> ids 2.., rarer words -> 1 (out of vocabulary), padded."""
    keep = cfg.vocab_size - 2
    out = []
    for seq in seqs:
        ids = np.asarray(seq, dtype=np.int64)
        out.append(np.where((ids >= 1) & (ids <= keep), ids + 1, 1))
    return _padded(out, cfg)


def _features(name: str, classes, index, cfg, words: bool, *seqs):
    """Each split's ragged rank sequences as word counts or padded word ids, and the spec."""
    if words:
        return [_rank_ids(s, cfg) for s in seqs], _words_spec(name, classes, _vocabulary(index, cfg.vocab_size - 2), cfg)
    size = cfg.vocab_size
    return [_rank_counts(s, size) for s in seqs], _spec(name, classes, _vocabulary(index, size), size)


def _vocabulary(index_file: Path | None, size: int) -> list[str] | None:
    """Words of ranks 1..size from the word-index JSON, when there is one (predict needs it)."""
    if index_file is None:
        return None
    import json

    by_rank = {rank: word for word, rank in json.loads(index_file.read_text()).items()}
    return [by_rank.get(r, f"<rank {r}>") for r in range(1, size + 1)]


def _pick(arrays: dict, path: Path, *keys: str) -> list[np.ndarray]:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    return [arrays[k] for k in keys]


def _imdb(cfg, words: bool = False):
    _check_vocab(cfg, words)
    path, index, source = _corpus_files(cfg, "imdb")
    x_train, y_train, x_test, y_test = _pick(load_npz(path), path, "x_train", "y_train", "x_test", "y_test")
    rng = np.random.RandomState(KERAS_SEED)  # keras.datasets.imdb.load_data's shuffle
    order = np.arange(len(x_train))
    rng.shuffle(order)
    x_train, y_train = x_train[order], y_train[order]
    order = np.arange(len(x_test))
    rng.shuffle(order)
    x_test, y_test = x_test[order], y_test[order]
    (x_train, x_test), spec = _features("imdb", ["negative", "positive"], index, cfg, words, x_train, x_test)
    return (x_train, y_train), (x_test, y_test), spec, source


def _reuters(cfg, words: bool = False):
    _check_vocab(cfg, words)
    path, index, source = _corpus_files(cfg, "reuters")
    xs, ys = _pick(load_npz(path), path, "x", "y")
    order = np.arange(len(xs))
    np.random.RandomState(KERAS_SEED).shuffle(order)  # keras.datasets.reuters.load_data, test_split 0.2
    xs, ys = xs[order], ys[order]
    cut = int(len(xs) * 0.8)
    classes = [str(k) for k in range(int(ys.max()) + 1)]
    (x,), spec = _features("reuters", classes, index, cfg, words, xs)
    return (x[:cut], ys[:cut]), (x[cut:], ys[cut:]), spec, source


LOADERS = {"text_folder": _text_folder, "imdb": _imdb, "reuters": _reuters}


def text_batch(documents: list[str], spec, dataset: dict) -> np.ndarray:
    """Raw documents -> a text run's model batch, as in training: word counts over its vocabulary,
    scaled, or word ids padded as `dataset` (the run's dataset config) says. `dlx predict` and the
    MLflow model both prepare text here."""
    from dlx.data.sequences import pad
    from dlx.data.types import scale

    if not spec.feature_names or any(n.startswith("<rank ") for n in spec.feature_names):
        raise DlxError(f"run trained on {spec.name} without its word index; text cannot be mapped to its vocabulary")
    docs = [tokenize(str(doc)) for doc in documents]
    if spec.kind == "text":
        return scale(vectorize(docs, spec.feature_names), spec)
    index = {w: i for i, w in enumerate(spec.feature_names)}  # <pad> 0, <unk> 1, words 2..
    ids = [[index.get(w, 1) for w in doc] for doc in docs]
    return pad(ids, dataset["max_length"], dataset["padding"], dataset["truncating"])
