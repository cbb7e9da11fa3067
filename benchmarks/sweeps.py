"""`make bench` (part 5): an 8-job sweep of small MLPs, Hydra's basic (in-process) launcher vs the
joblib launcher with 2 worker processes, measured one after the other in the same run.

Each sweep is one `dlx train -m` command (a fresh process, as a user runs it), timed from start to
exit. Per-job overhead is the time a job spends outside `model.fit` (train_seconds in its
metrics.json): process and TensorFlow start-up, data loading, model building, tracking, the test
evaluation, plots and artifacts, spread over the jobs the worker ran. The rounds alternate the
two launchers; the table gives each one's median. Writes benchmarks/results/sweeps.md.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DLX = str(Path(sys.executable).with_name("dlx"))

# 8 jobs: 4 widths x 2 learning rates, digits (bundled), 8 epochs each, TensorBoard + MLflow on
SWEEP = ["model=mlp", "model.hidden=[32],[64],[128],[256]", "optimizer.lr=0.001,0.003", "trainer.epochs=8",
         "trainer.device=cpu", "dataset=digits"]
LAUNCHERS = {"basic": [], "joblib (2 workers)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def run_sweep(name: str, extra: list[str], work: Path, round_: int) -> dict:
    sweep_dir = work / f"{name.split()[0]}-{round_}"
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    proc = subprocess.run([DLX, "train", "-m", *SWEEP, *extra, f"hydra.sweep.dir={sweep_dir}"], cwd=work,
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} sweep failed:\n{proc.stderr[-3000:]}")
    jobs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    assert len(jobs) == 8, f"{name}: {len(jobs)} jobs finished"
    workers = 2 if "joblib" in name else 1
    fit = sum(j["train_seconds"] for j in jobs)
    return {"wall": wall, "fit": fit, "overhead": (wall * workers - fit) / len(jobs),
            "best": min(j["best_val_loss"] for j in jobs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    results: dict[str, list[dict]] = {name: [] for name in LAUNCHERS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            order = list(LAUNCHERS) if r % 2 == 0 else list(reversed(LAUNCHERS))
            for name in order:
                res = run_sweep(name, LAUNCHERS[name], work, r)
                results[name].append(res)
                print(f"round {r + 1} {name}: {res['wall']:.1f}s wall, fit {res['fit']:.1f}s, overhead/job {res['overhead']:.1f}s",
                      flush=True)

    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("wall", "fit", "overhead")} for name, rs in results.items()}
    basic, joblib = med["basic"], med["joblib (2 workers)"]
    speedup = basic["wall"] / joblib["wall"]
    lines = [
        "# Sweeps: basic vs joblib launcher",
        "",
        f"`make bench` on {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}.",
        "",
        f"One `dlx train -m {' '.join(SWEEP)}` command per launcher (8 jobs: MLPs on digits, 8 epochs, TensorBoard and "
        "MLflow on), timed from start to exit; rounds alternate the launchers, medians of "
        f"{args.rounds} rounds. Time outside fit per job = (wall x workers - sum of the jobs' fit time) / 8: process and "
        "TensorFlow start-up, data, model building, tracking, test evaluation, plots and artifacts.",
        "",
        "| launcher | sweep wall time (s) | sum of fit time (s) | time outside fit per job (s) |",
        "|---|---:|---:|---:|",
    ]
    for name, m in med.items():
        lines.append(f"| {name} | {m['wall']:.1f} | {m['fit']:.1f} | {m['overhead']:.2f} |")
    verdict = "met" if speedup >= 1.6 else "missed"
    lines += ["", f"joblib with 2 workers is **{speedup:.2f}x** faster than the basic launcher (target >= 1.6x: {verdict}).", "",
              "Per round (wall s): " + "; ".join(f"{n} " + ", ".join(f"{x['wall']:.1f}" for x in rs) for n, rs in results.items()) + "."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sweeps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
