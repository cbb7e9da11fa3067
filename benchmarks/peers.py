"""`make bench-peers`: dlx vs a plain Keras script vs PyTorch Lightning (Hydra-configured), same
models (MLP 784-256-10, the book's LeNet-5), same data (Fashion-MNIST 55k/5k/10k), Adam 1e-3, batch
128, same epochs, CPU. Each run is a fresh process; epoch time is the median of epochs 2.. (epoch 1
compiles / warms up). Writes benchmarks/results/peers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
BATCH, EPOCHS = 128, 3
STEPS = -(-55000 // BATCH)  # 430 training steps per epoch
LENET = "[{filters:6,kernel:5,padding:same,pool:2},{filters:16,kernel:5,padding:valid,pool:2},{filters:120,kernel:5,padding:valid,pool:1}]"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_dlx(arch: str) -> dict:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import compose

    from dlx.commands.train import plain, train

    work = Path(tempfile.mkdtemp())
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    model = ["model=mlp", "model.hidden=[256]"] if arch == "mlp" else ["model=cnn", f"model.conv={LENET}", "model.dense=[84]"]
    overrides = ["dataset=fashion_mnist", f"dataset.path={FASHION}", *model, f"trainer.epochs={EPOCHS}",
                 f"trainer.batch_size={BATCH}", "trainer.early_stopping.enabled=false"]
    metrics, objs = train(plain(compose(overrides)), work / "run")
    return {"epoch_s": statistics.median(objs["fit"].epoch_seconds[1:]), "test_accuracy": metrics["test_accuracy"]}


def run_keras(arch: str) -> dict:
    """What one would write by hand with Keras, with dlx's default compile settings."""
    import keras
    from dlx.data.idx import read_idx

    def load(prefix):
        x = read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz").astype("float32")[..., None] / 255.0
        return x, read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz").astype("int32")

    (x, y), (xt, yt) = load("train"), load("t10k")
    keras.utils.set_random_seed(42)
    L = keras.layers
    if arch == "mlp":
        layers = [L.Flatten(), L.Dense(256, activation="relu")]
    else:
        layers = [L.Conv2D(6, 5, padding="same", activation="relu"), L.MaxPooling2D(), L.Conv2D(16, 5, activation="relu"),
                  L.MaxPooling2D(), L.Conv2D(120, 5, activation="relu"), L.Flatten(), L.Dense(84, activation="relu")]
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers, L.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=16, jit_compile=True)
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(x[:-5000], y[:-5000], batch_size=BATCH, epochs=EPOCHS, validation_data=(x[-5000:], y[-5000:]),
              callbacks=[Timer()], verbose=0)
    acc = model.evaluate(xt, yt, batch_size=BATCH, verbose=0, return_dict=True)["accuracy"]
    return {"epoch_s": statistics.median(times[1:]), "test_accuracy": float(acc)}


def run_lightning(arch: str) -> dict:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    sys.path.insert(0, str(HERE))
    torch.manual_seed(42)
    torch.set_num_threads(os.cpu_count() or 1)
    with initialize_config_dir(config_dir=str(HERE / "peers_conf"), version_base="1.3"):
        cfg = compose("lightning", overrides=[f"model.arch={arch}", f"trainer.max_epochs={EPOCHS}", f"data.batch_size={BATCH}"])
    model, data, trainer = instantiate(cfg.model), instantiate(cfg.data), instantiate(cfg.trainer)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    return {"epoch_s": statistics.median(model.epoch_seconds[1:]), "test_accuracy": model._correct / model._seen}


RUNNERS = {"dlx": run_dlx, "keras": run_keras, "lightning": run_lightning}


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("tensorflow", "keras", "torch", "lightning", "hydra-core", "mlflow"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=2)
    args = parser.parse_args()
    if args.worker:
        who, arch = args.worker
        result = RUNNERS[who](arch)
        print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))
        return
    if not FASHION.is_dir():
        sys.exit(f"needs Fashion-MNIST in {FASHION} (Debian package dataset-fashion-mnist)")
    rows = []
    for arch in ("mlp", "cnn"):
        for who in RUNNERS:
            out = subprocess.run([sys.executable, __file__, "--worker", who, arch], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((arch, who, r))
            print(arch, who, r, flush=True)
    lines = [
        "# dlx vs its peers",
        "",
        f"Generated by `make bench-peers` on {time.strftime('%Y-%m-%d')}: {platform.machine()}, {os.cpu_count()} CPUs, no GPU. "
        f"Fashion-MNIST (55,000 train / 5,000 validation / 10,000 test), Adam 1e-3, batch {BATCH}, {EPOCHS} epochs, "
        "one fresh process per cell. Epoch time: median of epochs 2.., including validation.",
        "",
        f"Versions: {versions()}.",
        "",
        "- **dlx**: `dlx train` defaults (steps_per_execution 16, XLA, TensorBoard + MLflow, checkpoints).",
        "- **Keras**: a plain script, `model.fit` on numpy arrays with the same compile settings, no callbacks but a timer.",
        "- **Lightning**: LightningModule + LightningDataModule + `Trainer.fit`, instantiated from a Hydra config "
        "(`benchmarks/peers_conf/lightning.yaml`), no logger or checkpointing.",
        "",
        "| model | runner | epoch time | steps/s | vs Keras | peak RSS | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch, who, r in rows:
        keras_s = next(x for a, w, x in rows if a == arch and w == "keras")["epoch_s"]
        lines.append(f"| {arch} | {who} | {r['epoch_s']:.2f} s | {STEPS / r['epoch_s']:.0f} | {keras_s / r['epoch_s']:.2f}x | "
                     f"{r['peak_rss_mb']:.0f} MB | {r['test_accuracy']:.4f} |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "peers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
