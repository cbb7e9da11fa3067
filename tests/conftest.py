"""Shared fixtures: compose the real config and shrink it; run the real CLI in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# tiny, fast, quiet: what every end-to-end test starts from
TINY = ["trainer.epochs=2", "trainer.batch_size=64", "trainer.device=cpu"]


@pytest.fixture
def shared_mnist() -> Path:
    d = SHARED_DATA / "mnist"
    if not (d / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST test files not found in {d} (the ../shared checkout is absent)")
    return d


def compose(overrides: list[str] | None = None, name: str = "train"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dlx import schemas

    schemas.register()
    with initialize_config_dir(config_dir=str(schemas.conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=overrides or [])


def tiny_cfg(*overrides: str, logger: str = "none") -> dict:
    from dlx.config import plain

    return plain(compose([*TINY, f"logger={logger}", *overrides]))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working directory with its own data cache and MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLX_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DLX_DATA_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def dlx(workdir):
    """Run the installed `dlx` console script in `workdir`; returns CompletedProcess (text)."""

    def run(*args: str, check: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).with_name("dlx")
        proc = subprocess.run([str(exe), *args], cwd=workdir, capture_output=True, text=True,
                              timeout=timeout, env=os.environ.copy())
        if check and proc.returncode != 0:
            raise AssertionError(f"dlx {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


SPORT = "goal match team coach player score league season win cup striker keeper".split()
FINANCE = "stock market shares price bank profit investor bond trade fund rate earnings".split()
FILLER = "the a of and to in it is was for on with as at by this that".split()


def write_text_folder(root: Path, n_per_class: int = 40, seed: int = 0) -> Path:
    """A two-topic corpus in the aclImdb layout: root/<class>/<n>.txt."""
    import random

    rng = random.Random(seed)
    for name, words in (("finance", FINANCE), ("sport", SPORT)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            doc = rng.choices(words, k=rng.randint(4, 9)) + rng.choices(FILLER + SPORT + FINANCE, k=rng.randint(5, 15))
            rng.shuffle(doc)
            (root / name / f"{i}.txt").write_text(" ".join(doc).capitalize() + ".\n")
    return root


@pytest.fixture
def text_folder(tmp_path) -> Path:
    return write_text_folder(tmp_path / "corpus")


def keras_npz(path: Path, **arrays) -> None:
    """An npz as Keras' imdb/reuters files: x* arrays are ragged (object arrays of int lists)."""
    import numpy as np

    ragged = {k: (np.array([list(s) for s in v] + [[]], dtype=object)[:-1] if k.startswith("x") else np.asarray(v))
              for k, v in arrays.items()}
    np.savez(path, **ragged)


def write_coco(root: Path, n_train: int = 50, n_val: int = 10, vocab_size: int = 1004, dim: int = 512,
               length: int = 17, per_image: int = 1, seed: int = 0, drop: str | None = None) -> Path:
    """A small file in the COCO captioning feature format (coco2014_captions.h5 + coco2014_vocab.json):
    random image features, and per image `per_image` random captions of 7-13 words framed by
    <START>/<END> and padded with <NULL>, words drawn with Zipf's law (p ~ 1/rank) as in real
    captions. `drop` leaves out one HDF5 key."""
    import json

    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab_size - 3)
    words = ["<NULL>", "<START>", "<END>", "<UNK>", *(f"w{i}" for i in range(vocab_size - 4))]
    root.mkdir(parents=True, exist_ok=True)
    (root / "coco2014_vocab.json").write_text(json.dumps({"idx_to_word": words, "word_to_idx": {w: i for i, w in enumerate(words)}}))
    with h5py.File(root / "coco2014_captions.h5", "w") as f:
        for part, n in (("train", n_train), ("val", n_val)):
            images = np.repeat(np.arange(n), per_image)
            captions = np.zeros((len(images), length), np.int32)
            for row in captions:
                k = rng.integers(7, 14)
                row[0], row[1 : k + 1], row[k + 1] = 1, 4 + rng.choice(vocab_size - 4, k, p=zipf / zipf.sum()), 2
            arrays = {"features": rng.normal(size=(n, dim)).astype(np.float32), "captions": captions, "image_idxs": images}
            for key, value in arrays.items():
                if f"{part}_{key}" != drop:
                    f[f"{part}_{key}"] = value
    return root
