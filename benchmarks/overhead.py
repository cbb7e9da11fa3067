"""`make bench`: what dlx costs on top of TensorFlow/Keras, as ratios measured in one run.

(a) `dlx --help` wall time next to `python -c "import tensorflow"`.
(b) training steps/s of `dlx train` (default loggers: TensorBoard + MLflow) vs a plain Keras script
    doing the same `model.fit` (MLP 784-256-10, Adam 1e-3, batch 128, same data), for Keras'
    defaults, for dlx's defaults (steps_per_execution=16, XLA left to Keras: off on CPU) and with XLA forced on.

Each training measurement runs in a fresh process; steps/s is taken over epochs 2.. (epoch 1
compiles). Writes benchmarks/results/overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tables  # benchmarks/tables.py: the script's directory is on sys.path

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
EPOCHS = 5
BATCH = 128


def data_source() -> tuple[str, str, str]:
    """(dataset name, directory, description) of a 28x28 dataset available offline."""
    if FASHION.is_dir():
        return "fashion_mnist", str(FASHION), "Fashion-MNIST, 55,000 training images"
    if SHARED_MNIST.is_dir():
        tmp = Path(tempfile.mkdtemp())
        for split in ("train", "t10k"):
            for kind in ("images-idx3", "labels-idx1"):
                (tmp / f"{split}-{kind}-ubyte.gz").symlink_to(SHARED_MNIST / f"t10k-{kind}-ubyte.gz")
        return "mnist", str(tmp), "MNIST test set used as training data, 5,000 images"
    sys.exit("benchmark needs Fashion-MNIST (Debian dataset-fashion-mnist) or ../shared/data/mnist")


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- workers (one process each)
def worker_keras(name: str, path: str, spe: int, jit: str) -> dict:
    """The plain-Keras baseline: what someone would write by hand."""
    import keras

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import plain_keras

    x, y = plain_keras.load(Path(path), "train")
    layers = [keras.layers.Flatten(), keras.layers.Dense(256, activation="relu")]
    model, times = plain_keras.fit(layers, x, y, batch=BATCH, epochs=EPOCHS, spe=spe,
                                   jit=jit if jit == "auto" else jit == "true")
    steps = -(-(len(x) - 5000) // BATCH)
    return {"steps": steps, "epoch_times": times[1:], "jit": str(model.jit_compile)}


def worker_dlx(name: str, path: str, spe: int, jit: str) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose

    from dlx.commands.train import train
    from dlx.config import plain
    from dlx.training.optim import steps_per_epoch

    work = Path(tempfile.mkdtemp())
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    overrides = [
        f"dataset={name}", f"dataset.path={path}", "model=mlp", "model.hidden=[256]", "optimizer=adam",
        f"trainer.epochs={EPOCHS}", f"trainer.batch_size={BATCH}", "trainer.early_stopping.enabled=false",
        f"trainer.steps_per_execution={spe}", "logger=both",
    ]
    overrides.append(f"trainer.jit_compile={'null' if jit == 'auto' else jit}")
    _, objs = train(plain(compose(overrides)), work / "run")
    steps = steps_per_epoch(len(objs["data"].train), BATCH)
    return {"steps": steps, "epoch_times": objs["fit"].epoch_seconds[1:], "jit": str(objs["model"].jit_compile)}


def run_worker(kind: str, name: str, path: str, spe: int, jit: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, name, path, str(spe), jit],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        kind, name, path, spe, jit = args.worker
        fn = worker_keras if kind == "keras" else worker_dlx
        print(json.dumps(fn(name, path, int(spe), jit)))
        return

    dlx = str(Path(sys.executable).with_name("dlx"))
    help_s = timed([dlx, "--help"], 7)
    import_tf_s = timed([sys.executable, "-c", "import tensorflow"], 3)
    print(f"dlx --help {help_s:.3f}s, import tensorflow {import_tf_s:.3f}s", flush=True)

    name, path, desc = data_source()
    settings = [("Keras defaults (steps_per_execution=1, jit_compile=auto)", 1, "auto"),
                ("dlx defaults (steps_per_execution=16, jit_compile=auto)", 16, "auto"),
                ("steps_per_execution=16, jit_compile=True", 16, "true")]
    rows = []
    for label, spe, jit in settings:
        runs: dict[str, list[dict]] = {"keras": [], "dlx": []}
        for i in range(args.repeat):  # pairs in alternating order: the machine is shared and noisy
            for kind in ("keras", "dlx") if i % 2 == 0 else ("dlx", "keras"):
                runs[kind].append(run_worker(kind, name, path, spe, jit))
        # a run's speed: steps over its fastest epoch (other tenants' load only adds time); the
        # ratio is taken within each pair, then the median over pairs
        speed = {kind: [r["steps"] / min(r["epoch_times"]) for r in rs] for kind, rs in runs.items()}
        ratios = [d / k for k, d in zip(speed["keras"], speed["dlx"])]
        row = {kind: {"steps_per_s": statistics.median(v), "jit": runs[kind][0]["jit"]} for kind, v in speed.items()}
        rows.append((label, row["keras"], row["dlx"], ratios))
        print(label, row, [round(q, 3) for q in ratios], flush=True)

    base = rows[0][1]["steps_per_s"]
    lines = [
        "# dlx overhead",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"generated by `make bench` on {time.strftime('%Y-%m-%d')}. Data: {desc}.",
        "",
        "## Start-up",
        "",
        "| command | wall time (median) |",
        "|---|---|",
        f"| `dlx --help` | {help_s:.3f} s |",
        f"| `python -c \"import tensorflow\"` | {import_tf_s:.3f} s |",
        "",
        f"## Training throughput (MLP 784-256-10, Adam, batch {BATCH}, {EPOCHS} epochs, steps/s over epochs 2-{EPOCHS}, "
        f"{args.repeat} pairs of runs)",
        "",
        "Steps/s: a run's steps per epoch over its fastest epoch of epochs 2.., the median over runs. dlx / Keras: the "
        "median of the pairs' ratios (each pair: one plain-Keras and one dlx run back to back, in alternating order), "
        "per pair in the next column.",
        "",
        "| setting | plain Keras steps/s | dlx steps/s | dlx / Keras | per pair | vs Keras defaults |",
        "|---|---|---|---|---|---|",
    ]
    for label, k, d, ratios in rows:
        lines.append(f"| {label} (XLA: Keras {k['jit']}, dlx {d['jit']}) | {k['steps_per_s']:.0f} | {d['steps_per_s']:.0f} | "
                     f"{statistics.median(ratios):.3f}x | {', '.join(f'{q:.2f}' for q in ratios)} | {d['steps_per_s'] / base:.2f}x |")
    lines += ["", "dlx runs with its default loggers (TensorBoard + MLflow), checkpoints and early-stopping "
              "bookkeeping; plain Keras runs bare `model.fit` on numpy arrays.", ""]
    tables.write("overhead.md", lines)


if __name__ == "__main__":
    main()
