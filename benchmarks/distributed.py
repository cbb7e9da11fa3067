"""`make bench` (part 9): past one process. Writes benchmarks/results/distributed.md.

1. Multi-worker scaling. The MLP (one hidden layer of 256) on Fashion-MNIST (Debian's
   dataset-fashion-mnist), global batch 128, one CPU thread per process, one step per call in
   every configuration (what trainer.strategy=multi_worker uses):
   - one process, batch 128 (the baseline);
   - two processes on 127.0.0.1 (TF_CONFIG), batch 128 in all, 64 each: trainer.strategy=multi_worker;
   - one process, batch 64: the computing half of one multi-worker step, without the all-reduce.
   Step time = (epoch time - validation time) / steps, from each run's log, epochs 2..E (the first
   traces the functions). Scaling = one-process step time / two-process step time. The
   communication share of a two-process step = 1 - (batch-64 step time / two-process step time).
2. Slurm dispatch. An 8-job sweep (digits, 1 epoch each) through the one-node Slurm cluster
   (tests/helpers/slurm-up.sh; cpus_per_task=1, so two jobs at a time on two cores) and through
   the joblib launcher with two workers: wall time of the whole `dlx train -m` per job.

The rounds alternate; the table gives medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tables  # benchmarks/tables.py: the script's directory is on sys.path

DLX = str(Path(sys.executable).with_name("dlx"))
ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
EPOCHS = 3
COMMON = ["model=mlp", "model.hidden=[256]", "dataset=fashion_mnist", f"dataset.path={FASHION}",
          f"trainer.epochs={EPOCHS}", "trainer.threads=1", "trainer.steps_per_execution=1",
          "trainer.early_stopping.enabled=false", "trainer.device=cpu", "logger=none"]
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*\(([\d.]+)s, validation ([\d.]+)s\)")


def step_seconds(log: Path, steps: int) -> float:
    """Median training time of one step over epochs 2..E of a run's log."""
    times = [(float(t) - float(v)) / steps for e, t, v in EPOCH_LINE.findall(log.read_text()) if int(e) > 1]
    return statistics.median(times)


def ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    found = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return found


def one(work: Path, name: str, batch: int) -> Path:
    run = work / name
    subprocess.run([DLX, "train", *COMMON, f"trainer.batch_size={batch}", f"hydra.run.dir={run}"], cwd=work,
                   check=True, capture_output=True, timeout=1200)
    return run


def two(work: Path, name: str, batch: int) -> Path:
    hosts = [f"127.0.0.1:{p}" for p in ports(2)]
    procs = []
    for index in (1, 0):
        env = os.environ | {"TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([DLX, "train", *COMMON, f"trainer.batch_size={batch}", "trainer.strategy=multi_worker",
                                       f"hydra.run.dir={work / name}{'' if index == 0 else '-helper'}"],
                                      cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=1200)
        if p.returncode != 0:
            raise SystemExit(f"multi_worker run failed: {err[-2000:]}")
    return work / name


def train_steps(run: Path, batch: int) -> int:
    n = int(re.search(r"(\d+) train / ", (run / "train.log").read_text()).group(1))  # the dataset line of the log
    return -(-n // batch)


def scaling(work: Path, rounds: int) -> dict:
    single, double, half = [], [], []
    for r in range(rounds):
        order = ("one", "two", "half") if r % 2 == 0 else ("half", "two", "one")
        for what in order:
            if what == "one":
                run = one(work, f"one{r}", 128)
                single.append(step_seconds(run / "train.log", train_steps(run, 128)))
            elif what == "half":
                run = one(work, f"half{r}", 64)
                half.append(step_seconds(run / "train.log", train_steps(run, 64)))
            else:
                run = two(work, f"two{r}", 128)
                double.append(step_seconds(run / "train.log", train_steps(run, 128)))
        print(f"round {r}: one {single[-1] * 1e3:.2f} ms, two {double[-1] * 1e3:.2f} ms, half {half[-1] * 1e3:.2f} ms a step",
              flush=True)
    s, d, h = (statistics.median(v) for v in (single, double, half))
    return {"single": s, "double": d, "half": h}


def slurm_up() -> str | None:
    proc = subprocess.run(["bash", str(ROOT / "tests" / "helpers" / "slurm-up.sh")], capture_output=True, text=True, timeout=300)
    return proc.stdout.split()[0].rstrip("*") if proc.returncode == 0 else None


def sweep(work: Path, name: str, launcher: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([DLX, "train", "-m", *launcher, "model=mlp", "model.hidden=[16],[32],[64],[128]", "optimizer.lr=0.001,0.003",
                    "trainer.epochs=1", "trainer.device=cpu", "logger=none", f"hydra.sweep.dir={work / name}"],
                   cwd=work, check=True, capture_output=True, timeout=1800)
    return (time.perf_counter() - t0) / 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = ["# Past one process", "",
             f"`python benchmarks/distributed.py` on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs), "
             f"{time.strftime('%Y-%m-%d')}; medians of {args.rounds} alternating rounds.", "",
             "| measure | dlx | baseline | ratio | target |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if FASHION.is_dir():
            m = scaling(work, args.rounds)
            share = 1 - m["half"] / m["double"]
            lines.append(f"| multi_worker steps/s, MLP on Fashion-MNIST, global batch 128, 1 thread per process | "
                         f"{1 / m['double']:.0f} (2 processes; communication {share:.0%} of a step) | {1 / m['single']:.0f} "
                         f"(1 process) | {m['single'] / m['double']:.2f}x | >= 1.6x |")
        else:
            lines.append(f"| multi_worker scaling | not measured: {FASHION} missing (apt-get install dataset-fashion-mnist) | | | >= 1.6x |")
        partition = slurm_up()
        if partition:
            slurm = ["hydra/launcher=slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.cpus_per_task=1",
                     "hydra.launcher.mem_gb=1"]
            joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
            a, b = [], []
            for r in range(args.rounds):
                for who in (("s", "j") if r % 2 == 0 else ("j", "s")):
                    (a if who == "s" else b).append(sweep(work, f"{who}{r}", slurm if who == "s" else joblib))
                print(f"round {r}: slurm {a[-1]:.1f} s, joblib {b[-1]:.1f} s a job", flush=True)
            sa, jb = statistics.median(a), statistics.median(b)
            lines.append(f"| Slurm dispatch: 8-job sweep, digits 1 epoch, 2 at a time, wall time per job (s) | {sa:.1f} (slurm) | "
                         f"{jb:.1f} (joblib, 2 workers) | {sa / jb:.2f}x | reported |")
        else:
            lines.append("| Slurm dispatch | not measured: no Slurm cluster (tests/helpers/slurm-up.sh) | | | reported |")
    tables.write("distributed.md", lines)


if __name__ == "__main__":
    main()
