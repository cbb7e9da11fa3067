"""`make bench-peers`: dlx vs a plain Keras script vs PyTorch Lightning (Hydra-configured), same
models (MLP 784-256-10, the book's LeNet-5), same data (Fashion-MNIST 55k/5k/10k), Adam 1e-3, batch
128, same epochs, CPU. Each run is a fresh process; rounds rotate the runners' order. Epoch times are
those of epochs 2.. (epoch 1 compiles / warms up); a cell's best epoch and median epoch are both
reported, the ratios to plain Keras are taken per round. Writes benchmarks/results/peers.md.
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

import tables  # benchmarks/tables.py: the script's directory is on sys.path

HERE = Path(__file__).resolve().parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
BATCH, EPOCHS = 128, 6
STEPS = -(-55000 // BATCH)  # 430 training steps per epoch
LENET = "[{filters:6,kernel:5,padding:same,pool:2},{filters:16,kernel:5,padding:valid,pool:2},{filters:120,kernel:5,padding:valid,pool:1}]"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_dlx(arch: str) -> dict:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import compose

    from dlx.commands.train import train
    from dlx.config import plain

    work = Path(tempfile.mkdtemp())
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    model = ["model=mlp", "model.hidden=[256]"] if arch == "mlp" else ["model=cnn", f"model.conv={LENET}", "model.dense=[84]"]
    overrides = ["dataset=fashion_mnist", f"dataset.path={FASHION}", *model, f"trainer.epochs={EPOCHS}",
                 f"trainer.batch_size={BATCH}", "trainer.early_stopping.enabled=false"]
    metrics, objs = train(plain(compose(overrides)), work / "run")
    return {"epoch_times": objs["fit"].epoch_seconds[1:], "test_accuracy": metrics["test_accuracy"]}


def run_keras(arch: str) -> dict:
    """What one would write by hand with Keras, with dlx's default compile settings."""
    import keras

    sys.path.insert(0, str(HERE))
    import plain_keras

    L = keras.layers
    if arch == "mlp":
        layers = [L.Flatten(), L.Dense(256, activation="relu")]
    else:
        layers = [L.Conv2D(6, 5, padding="same", activation="relu"), L.MaxPooling2D(), L.Conv2D(16, 5, activation="relu"),
                  L.MaxPooling2D(), L.Conv2D(120, 5, activation="relu"), L.Flatten(), L.Dense(84, activation="relu")]
    x, y = plain_keras.load(FASHION, "train")
    model, times = plain_keras.fit(layers, x, y, batch=BATCH, epochs=EPOCHS, spe=16, jit="auto")
    xt, yt = plain_keras.load(FASHION, "t10k")
    acc = model.evaluate(xt, yt, batch_size=BATCH, verbose=0, return_dict=True)["accuracy"]
    return {"epoch_times": times[1:], "test_accuracy": float(acc)}


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
    return {"epoch_times": model.epoch_seconds[1:], "test_accuracy": model._correct / model._seen}


RUNNERS = {"dlx": run_dlx, "keras": run_keras, "lightning": run_lightning}


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("tensorflow", "keras", "torch", "lightning", "hydra-core", "mlflow"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=2)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all cells; each round runs the runners in another order")
    args = parser.parse_args()
    if args.worker:
        who, arch = args.worker
        result = RUNNERS[who](arch)
        print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))
        return
    if not FASHION.is_dir():
        sys.exit(f"needs Fashion-MNIST in {FASHION} (Debian package dataset-fashion-mnist)")
    runs: dict[tuple[str, str], list[dict]] = {}
    runners = list(RUNNERS)
    for r in range(args.rounds):
        order = runners[r % len(runners):] + runners[:r % len(runners)]  # no runner always first (or last)
        for arch in ("mlp", "cnn"):
            for who in order:
                out = subprocess.run([sys.executable, __file__, "--worker", who, arch], check=True, capture_output=True, text=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                runs.setdefault((arch, who), []).append(res)
                print(f"round {r + 1}", arch, who, {k: v for k, v in res.items() if k != "epoch_times"},
                      "epochs", [round(t, 3) for t in res["epoch_times"]], flush=True)
    best = {key: [min(r["epoch_times"]) for r in rs] for key, rs in runs.items()}  # per round
    typical = {key: [statistics.median(r["epoch_times"]) for r in rs] for key, rs in runs.items()}

    def vs_keras(times: dict, arch: str, who: str) -> list[float]:
        return [k / x for k, x in zip(times[(arch, "keras")], times[(arch, who)])]

    lines = [
        "# dlx vs its peers",
        "",
        f"Generated by `make bench-peers` on {time.strftime('%Y-%m-%d')}: {platform.machine()}, {os.cpu_count()} CPUs, no GPU. "
        f"Fashion-MNIST (55,000 train / 5,000 validation / 10,000 test), Adam 1e-3, batch {BATCH}, {EPOCHS} epochs, "
        f"one fresh process per cell, {args.rounds} rounds (each round starts with another runner).",
        "",
        "Epoch times are those of epochs 2.. (epoch 1 builds the graphs), validation included. This machine is shared: "
        "other tenants' load makes single epochs up to 2x slower at random. 'Best epoch' is a cell's fastest epoch, what "
        "the runner does when left alone (interference only adds time), the median over rounds; 'median epoch' includes "
        "the interference. 'vs Keras' is the median over rounds of the ratio to the same round's plain-Keras cell, on "
        "best epochs (per round in the next column); the same on median epochs in the one after.",
        "",
        f"Versions: {versions()}.",
        "",
        "- **dlx**: `dlx train` defaults (steps_per_execution 16, XLA left to Keras: off on CPU; TensorBoard + MLflow, "
        "checkpoints, per-epoch resume state).",
        "- **Keras**: a plain script, `model.fit` on numpy arrays with the same compile settings, no callbacks but a timer.",
        "- **Lightning**: LightningModule + LightningDataModule + `Trainer.fit`, instantiated from a Hydra config "
        "(`benchmarks/peers_conf/lightning.yaml`), no logger or checkpointing.",
        "",
        "| model | runner | best epoch | median epoch | steps/s (best) | vs Keras | per round | vs Keras (median epochs) | "
        "peak RSS | test accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for (arch, who), rs in runs.items():
        ratios = vs_keras(best, arch, who)
        epoch = statistics.median(best[(arch, who)])
        lines.append(f"| {arch} | {who} | {epoch:.3f} s | {statistics.median(typical[(arch, who)]):.3f} s | {STEPS / epoch:.0f} | "
                     f"{statistics.median(ratios):.3f}x | {', '.join(f'{q:.2f}' for q in ratios)} | "
                     f"{statistics.median(vs_keras(typical, arch, who)):.3f}x | "
                     f"{statistics.median(x['peak_rss_mb'] for x in rs):.0f} MB | {statistics.median(x['test_accuracy'] for x in rs):.4f} |")
        if who == "dlx":
            dlx_ratio = statistics.median(ratios)
            lightning = statistics.median(vs_keras(best, arch, "lightning"))
            verdicts.append(f"{arch}: dlx {dlx_ratio:.3f}x Keras ({'met' if dlx_ratio >= 0.98 else 'missed'}), "
                            f"{'faster' if dlx_ratio > lightning else 'not faster'} than Lightning ({lightning:.3f}x)")
    lines += ["", "Targets: dlx >= 0.98x plain Keras and faster than Lightning. " + "; ".join(verdicts) + "."]
    tables.write("peers.md", lines)


if __name__ == "__main__":
    main()
