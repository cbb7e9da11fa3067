"""`make bench` (part 8): your own data at size. Writes benchmarks/results/data.md.

1. Input throughput: images per second that dlx's image_folder stream (dlx.training.batches)
   hands to `model.fit`, against a bare `keras.utils.image_dataset_from_directory` pipeline
   (prefetched) on the same folder of JPEGs and the same image size and batch: each iterated
   for a whole epoch, alternating, median of `--rounds`. Target >= 1.0x.
2. Memory: peak RSS of one `dlx train` epoch (mlp, 32x32 grey) on a generated folder of 10,000
   and one of 100,000 small JPEGs, each its own process. Target: the larger < 1.2x the smaller.
3. CSV: rows per second loaded and trained for one epoch on a generated 1,000,000-row,
   20-column CSV (16 numeric, 4 categorical columns): `dlx train dataset=csv` in-process, against
   pandas `read_csv` + the same standardisation and one-hot + the same Keras MLP fitted one
   epoch. Alternating, median of `--rounds`. Target >= 0.9x.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tables  # benchmarks/tables.py: the script's directory is on sys.path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def write_jpegs(root: Path, n: int, side: int = 32, classes: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, side, side, 3), dtype=np.uint8)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % classes
        noisy = np.clip(base[c].astype(np.int16) + rng.integers(-30, 30, (side, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"c{c}" / f"{i}.jpg", quality=85)
    return root


def throughput(folder: Path, rounds: int, size: int = 64, batch: int = 64) -> tuple[float, float]:
    import keras

    from dlx.config import ns
    from dlx.data import datasets
    from dlx.training.batches import EpochBatches
    from conftest import tiny_cfg

    cfg = tiny_cfg("dataset=image_folder", f"dataset.path={folder}", f"dataset.image_size=[{size},{size}]",
                   "dataset.val_split=0.05", "dataset.test_split=0.05")["dataset"]
    data = datasets.load(ns(cfg))
    ours = EpochBatches(data.train.x, data.train.y, batch, seed=0, shuffle=True).dataset
    theirs = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=batch, shuffle=True,
                                                      seed=0, verbose=False).map(lambda x, y: (x / 255.0, y)).prefetch(-1)
    n_ours = len(data.train)
    n_theirs = sum(1 for _ in Path(folder).rglob("*.jpg"))

    def rate(dataset, n):
        t0 = time.perf_counter()
        for _ in dataset:
            pass
        return n / (time.perf_counter() - t0)

    rate(ours, n_ours), rate(theirs, n_theirs)  # warm: tracing, file cache
    a, b = [], []
    for r in range(rounds):
        for who in ((0, 1) if r % 2 == 0 else (1, 0)):
            (a if who == 0 else b).append(rate(ours, n_ours) if who == 0 else rate(theirs, n_theirs))
    return statistics.median(a), statistics.median(b)


def peak_rss_mb(folder: Path, work: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one dlx train epoch on `folder`, in its own process."""
    exe = str(Path(sys.executable).with_name("dlx"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, "train", "model=mlp", "model.hidden=[32]", "dataset=image_folder", f"dataset.path={folder}",
                             "dataset.image_size=[32,32]", "dataset.color=grayscale", "trainer.epochs=1",
                             "trainer.batch_size=256", "logger=none", f"hydra.run.dir={work}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"dlx train on {folder} failed ({status})")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def write_csv(path: Path, rows: int = 1_000_000) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = {f"n{i}": rng.normal(size=rows).astype(np.float32) for i in range(16)}
    frame |= {f"c{i}": rng.choice(["a", "b", "c", "d", "e"], rows) for i in range(4)}
    frame["label"] = np.where(frame["n0"] + (frame["c0"] == "a") > 0.5, "yes", "no")
    pd.DataFrame(frame).to_csv(path, index=False)


HIDDEN, BATCH = [64], 256


def csv_dlx(path: Path, work: Path) -> float:
    from conftest import tiny_cfg

    from dlx.commands.train import train

    t0 = time.perf_counter()
    train(tiny_cfg("model=mlp", f"model.hidden=[{HIDDEN[0]}]", "dataset=csv", f"dataset.path={path}",
                   "dataset.target=label", "trainer.epochs=1", f"trainer.batch_size={BATCH}",
                   "trainer.early_stopping.enabled=false"), work)
    return time.perf_counter() - t0


def csv_pandas(path: Path) -> float:
    import keras
    import pandas as pd

    t0 = time.perf_counter()
    frame = pd.read_csv(path)
    y = (frame.pop("label") == "yes").to_numpy().astype(np.int32)
    numeric = frame.select_dtypes("number")
    x = np.concatenate([((numeric - numeric.mean()) / numeric.std()).to_numpy(np.float32),
                        pd.get_dummies(frame.select_dtypes(exclude="number")).to_numpy(np.float32)], axis=1)
    n = len(x)
    cut = int(n * 0.8)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(HIDDEN[0], activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:cut], y[:cut], batch_size=BATCH, epochs=1, validation_data=(x[cut:int(n * 0.9)], y[cut:int(n * 0.9)]), verbose=0)
    model.evaluate(x[int(n * 0.9):], y[int(n * 0.9):], batch_size=BATCH, verbose=0)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--csv-rounds", type=int, default=5)  # a few seconds each, and the noisiest measure
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = write_jpegs(tmp / "throughput", 3000, side=256)  # photos larger than the training size
        ours, theirs = throughput(folder, args.rounds)
        print(f"throughput: dlx {ours:.0f} images/s, image_dataset_from_directory {theirs:.0f} images/s", flush=True)
        small, large = write_jpegs(tmp / "small", args.small), write_jpegs(tmp / "large", args.large)
        rss_small, s_small = peak_rss_mb(small, tmp / "run_small")
        rss_large, s_large = peak_rss_mb(large, tmp / "run_large")
        print(f"memory: {rss_small:.0f} MB ({args.small} images), {rss_large:.0f} MB ({args.large})", flush=True)
        write_csv(tmp / "table.csv", args.csv_rows)
        write_csv(tmp / "warm.csv", 2000)  # imports and tracing, paid by neither side's timed rounds
        csv_dlx(tmp / "warm.csv", tmp / "warm"), csv_pandas(tmp / "warm.csv")
        a, b = [], []
        for r in range(args.csv_rounds):
            for who in ((0, 1) if r % 2 == 0 else (1, 0)):
                if who == 0:
                    a.append(csv_dlx(tmp / "table.csv", tmp / f"csv{r}"))
                else:
                    b.append(csv_pandas(tmp / "table.csv"))
        dlx_rate, pandas_rate = args.csv_rows / statistics.median(a), args.csv_rows / statistics.median(b)
        print(f"csv: dlx {dlx_rate:.0f} rows/s, pandas + Keras {pandas_rate:.0f} rows/s", flush=True)
    lines = [
        "# Your own data at size",
        "",
        f"`python benchmarks/data.py` on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}; "
        f"medians of {args.rounds} alternating rounds where there are rounds ({args.csv_rounds} for the CSV).",
        "",
        "| measure | dlx | baseline | ratio | target |",
        "|---|---|---|---|---|",
        f"| image_folder input throughput, 2,700 JPEGs 256x256 -> 64x64, batch 64 (images/s) | {ours:.0f} | "
        f"{theirs:.0f} (image_dataset_from_directory) | {ours / theirs:.2f}x | >= 1.0x |",
        f"| peak RSS of one training epoch (MB), {args.small:,} vs {args.large:,} JPEGs 32x32 | {rss_large:.0f} "
        f"({args.large:,}; {s_large:.0f} s) | {rss_small:.0f} ({args.small:,}; {s_small:.0f} s) | {rss_large / rss_small:.2f}x | < 1.2x |",
        f"| CSV {args.csv_rows:,} rows x 20 columns, loaded + 1 epoch (rows/s) | {dlx_rate:.0f} | "
        f"{pandas_rate:.0f} (pandas read_csv + Keras) | {dlx_rate / pandas_rate:.2f}x | >= 0.9x |",
    ]
    tables.write("data.md", lines)


if __name__ == "__main__":
    main()
