"""GPU checks in one go, for a machine with NVIDIA GPUs (`bash benchmarks/gpu.sh`, under 8 minutes):

1. single-GPU training of the MLP and the CNN: dlx's steps/s vs plain Keras (`model.fit` on the
   same arrays, the same layers, the same GPU), epoch 2 of each (epoch 1 traces);
2. the CNN with trainer.precision=mixed_float16, and with XLA (trainer.jit_compile=true);
3. the CNN with trainer.strategy=mirrored over every GPU (the global batch split among them);
4. a 4-job joblib sweep, one GPU per job: each job's log names its GPU.

The data are MNIST-shaped arrays drawn at random (a dataset of your own, benchmarks/gpu_conf): the
machine needs no data files, and steps/s do not depend on the pixels. `--dry-run` runs every step
on the CPU with small sizes, to check the script itself where there is no GPU.
Writes benchmarks/results/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tables  # benchmarks/tables.py: the script's directory is on sys.path

DLX = [sys.executable, "-m", "dlx"]  # also where the console script is not installed
HERE = Path(__file__).resolve().parent
SIZE = {"n": 60_000, "batch": 256}
DATA = ["--config-dir", str(HERE / "gpu_conf"), "dataset=random_mnist"]


def random_mnist(cfg):
    """A dataset of your own (dlx's contract): MNIST-shaped random images, 10 classes."""
    import numpy as np

    from dlx.data.types import Data, DataSpec, Split

    n = int(os.environ.get("DLX_GPU_BENCH_N", SIZE["n"]))
    rng = np.random.default_rng(0)
    x = rng.random((n + 2000, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n + 2000).astype(np.int32)
    spec = DataSpec("random_mnist", (28, 28, 1), 10, [str(i) for i in range(10)], 1.0, scaling="none")
    return Data(Split(x[:n], y[:n]), Split(x[n:n + 1000], y[n:n + 1000]), Split(x[n + 1000:], y[n + 1000:]), spec, "random")


def dlx_steps_per_s(work: Path, name: str, *overrides: str) -> tuple[float, str]:
    run = work / name
    env = os.environ | {"PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([*DLX, "train", *DATA, *overrides, "trainer.epochs=2",
                           f"trainer.batch_size={SIZE['batch']}", "trainer.early_stopping.enabled=false", "logger=none",
                           f"hydra.run.dir={run}"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return float("nan"), proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    log = (run / "train.log").read_text()
    epochs = tables.training_seconds(log)
    device = re.search(r"device ([^\n]+)", log)
    steps = -(-SIZE["n"] // SIZE["batch"])
    replicas = json.loads((run / "metrics.json").read_text()).get("replicas", 1)
    return steps / epochs[2], f"{device.group(1) if device else '?'}; replicas {replicas}"


def keras_steps_per_s(kind: str) -> float:
    """Plain Keras: the same layers as dlx's default mlp / cnn, model.fit on in-memory arrays."""
    code = f"""
import time, numpy as np, keras
n, b = {SIZE['n']}, {SIZE['batch']}
rng = np.random.default_rng(0)
x = rng.random((n, 28, 28, 1), dtype=np.float32); y = rng.integers(0, 10, n).astype(np.int32)
L = keras.layers
if "{kind}" == "mlp":
    layers = [L.Flatten(), L.Dense(256, activation="relu"), L.Dense(10, activation="softmax")]
else:
    layers = [L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(), L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(),
              L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10, activation="softmax")]
m = keras.Sequential([keras.Input((28, 28, 1)), *layers])
m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=16)
m.fit(x, y, batch_size=b, epochs=1, verbose=0)
t = time.perf_counter(); m.fit(x, y, batch_size=b, epochs=1, verbose=0)
print(-(-n // b) / (time.perf_counter() - t))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")


def gpus() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, small sizes (checks the script)")
    args = parser.parse_args()
    device = "trainer.device=cpu" if args.dry_run else "trainer.device=gpu"
    if args.dry_run:
        SIZE.update(n=2048, batch=64)
        os.environ["DLX_GPU_BENCH_N"] = "2048"
    names = gpus()
    if not names and not args.dry_run:
        raise SystemExit("no NVIDIA GPU (nvidia-smi) on this machine; --dry-run checks the script on the CPU")
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in ("mlp", "cnn"):
            ours, where = dlx_steps_per_s(work, kind, f"model={kind}", device)
            theirs = keras_steps_per_s(kind)
            rows.append(f"| {kind}, one GPU | {ours:.0f} steps/s ({where}) | {theirs:.0f} steps/s (plain Keras) | {ours / theirs:.2f}x |")
            print(rows[-1], flush=True)
        base, _ = dlx_steps_per_s(work, "cnn_again", "model=cnn", device)
        for name, label, extra in (("fp16", "cnn, trainer.precision=mixed_float16", "trainer.precision=mixed_float16"),
                                   ("xla", "cnn, XLA (trainer.jit_compile=true)", "trainer.jit_compile=true"),
                                   ("mirrored", "cnn, trainer.strategy=mirrored (every GPU)", "trainer.strategy=mirrored")):
            ours, where = dlx_steps_per_s(work, name, "model=cnn", device, extra)
            rows.append(f"| {label} | {ours:.0f} steps/s ({where}) | {base:.0f} steps/s (cnn, float32) | {ours / base:.2f}x |")
            print(rows[-1], flush=True)
        env = os.environ | {"PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run([*DLX, "train", "-m", *DATA, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "model=mlp",
                               "optimizer.lr=0.001,0.002,0.003,0.004", "trainer.epochs=1",
                               device, "logger=none", f"hydra.sweep.dir={work / 'sweep'}"],
                              cwd=work, env=env, capture_output=True, text=True, timeout=900)
        placed = []
        for job in sorted((work / "sweep").glob("[0-9]*")):
            text = (job / "train.log").read_text() if (job / "train.log").is_file() else ""
            found = re.search(r"job \d+: GPU (\S+) \(CUDA_VISIBLE_DEVICES\)", text)
            placed.append(f"job {job.name.split('_')[0]}: GPU {found.group(1) if found else '-'}")
        rows.append(f"| 4-job joblib sweep, one GPU per job | {'; '.join(placed) or 'no jobs'} (exit {proc.returncode}) | | |")
        print(rows[-1], flush=True)
    lines = ["# GPU", "",
             f"`bash benchmarks/gpu.sh`{' --dry-run (on the CPU)' if args.dry_run else ''} on {platform.node() or 'this machine'}, "
             f"{time.strftime('%Y-%m-%d')}: {', '.join(names) or 'no GPU'}; {time.perf_counter() - t_start:.0f} s in all.", "",
             "| measure | dlx | baseline | ratio |", "|---|---|---|---|", *rows]
    if args.dry_run:  # a check of the script, not a measurement: printed only
        print("\n".join(lines))
    else:
        tables.write("gpu.md", lines)


if __name__ == "__main__":
    main()
