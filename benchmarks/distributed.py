"""`make bench` (part 9): past one process. Writes benchmarks/results/distributed.md.

1. Multi-worker scaling. The MLP (one hidden layer of 256) on Fashion-MNIST (Debian's
   dataset-fashion-mnist), one CPU thread per process, one step per call in every configuration
   (what trainer.strategy=multi_worker uses), at global batch 128 (dlx's default) and 4096:
   - one process, the global batch (the baseline);
   - two processes on 127.0.0.1 (TF_CONFIG), half the batch each: trainer.strategy=multi_worker;
   - one process, half the batch: the computing half of one multi-worker step, without the all-reduce;
   - two independent processes, half the batch each, at the same time: what two processes compute
     when both cores are busy (no communication at all): the ceiling of the scaling on this machine.
   Step time = (epoch time - validation time) / steps, from each run's log, epochs 2..E (the first
   traces the functions). Scaling = one-process step time / two-process step time. The
   communication share of a two-process step = 1 - (half-batch step time / two-process step time).
   Besides, TensorFlow's all-reduce alone between two processes: one number, and as many as the
   MLP has parameters (the gradients each step all-reduces).
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


def step_seconds(log: Path, steps: int) -> float:
    """Median training time of one step over epochs 2..E of a run's log."""
    times = [seconds / steps for epoch, seconds in tables.training_seconds(log.read_text()).items() if epoch > 1]
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


def pair(work: Path, name: str, batch: int) -> list[Path]:
    """Two independent one-process runs at the same time."""
    runs = [work / f"{name}-{i}" for i in (0, 1)]
    procs = [subprocess.Popen([DLX, "train", *COMMON, f"trainer.batch_size={batch}", f"hydra.run.dir={run}"], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for run in runs]
    for p in procs:
        _, err = p.communicate(timeout=1200)
        if p.returncode != 0:
            raise SystemExit(f"run failed: {err[-2000:]}")
    return runs


def train_steps(run: Path, batch: int) -> int:
    n = int(re.search(r"(\d+) train / ", (run / "train.log").read_text()).group(1))  # the dataset line of the log
    return -(-n // batch)


def scaling(work: Path, rounds: int, batch: int) -> dict:
    found = {"single": [], "double": [], "half": [], "pair": []}
    for r in range(rounds):
        order = ("single", "double", "half", "pair") if r % 2 == 0 else ("pair", "half", "double", "single")
        for what in order:
            name = f"{what}{batch}-{r}"
            if what == "single":
                runs, b = [one(work, name, batch)], batch
            elif what == "double":
                runs, b = [two(work, name, batch)], batch
            elif what == "half":
                runs, b = [one(work, name, batch // 2)], batch // 2
            else:
                runs, b = pair(work, name, batch // 2), batch // 2
            found[what].append(statistics.mean(step_seconds(run / "train.log", train_steps(run, b)) for run in runs))
        print(f"batch {batch}, round {r}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in found.items()), flush=True)
    return {k: statistics.median(v) for k, v in found.items()}


def all_reduce_ms(sizes: list[int]) -> dict[int, float]:
    """Milliseconds of one TensorFlow all-reduce between two processes on 127.0.0.1 (gRPC), per size."""
    hosts = [f"127.0.0.1:{p}" for p in ports(2)]
    procs = []
    for index in (1, 0):
        env = os.environ | {"TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}),
                            "TF_CPP_MIN_LOG_LEVEL": "2"}
        procs.append(subprocess.Popen([sys.executable, __file__, "--all-reduce", ",".join(map(str, sizes))], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"all-reduce run failed: {err[-2000:]}")
        outs.append(out)
    return {int(n): float(ms) for n, ms in re.findall(r"(\d+) ([\d.]+)", outs[1])}  # the chief's timings


def all_reduce_worker(sizes: list[int]) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    for n in sizes:
        with strategy.scope():
            value = tf.Variable(tf.ones([n]))

        @tf.function
        def step():
            return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.identity(value)))

        for _ in range(20):
            step()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(100):
                out = step()
            _ = out.numpy()
            times.append((time.perf_counter() - t0) / 100)
        print(n, f"{statistics.median(times) * 1e3:.3f}", flush=True)


def slurm_up() -> str | None:
    try:
        proc = subprocess.run(["bash", str(ROOT / "tests" / "helpers" / "slurm-up.sh")], capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        return None
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
    parser.add_argument("--all-reduce", help=argparse.SUPPRESS)  # one process of all_reduce_ms
    args = parser.parse_args()
    if args.all_reduce:
        all_reduce_worker([int(n) for n in args.all_reduce.split(",")])
        return
    lines = ["# Past one process", "",
             f"`python benchmarks/distributed.py` on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs), "
             f"{time.strftime('%Y-%m-%d')}; medians of {args.rounds} alternating rounds.", "",
             "| measure | dlx | baseline | ratio | target |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if FASHION.is_dir():
            measured = {}
            for batch in (128, 4096):
                m = measured[batch] = scaling(work, args.rounds, batch)
                share = 1 - m["half"] / m["double"]
                lines.append(f"| multi_worker steps/s, MLP on Fashion-MNIST, global batch {batch}, 1 thread per process | "
                             f"{1 / m['double']:.0f} (2 processes; communication {share:.0%} of a step) | "
                             f"{1 / m['single']:.0f} (1 process) | {m['single'] / m['double']:.2f}x | >= 1.6x |")
                lines.append(f"| ceiling of the above: 2 independent processes, batch {batch // 2} each, no communication | "
                             f"{1 / m['pair']:.0f} (global batches a second: each process {batch // 2} examples in {m['pair'] * 1e3:.2f} ms) | "
                             f"{1 / m['single']:.0f} (1 process) | {m['single'] / m['pair']:.2f}x | reported |")
            params = 784 * 256 + 256 + 256 * 10 + 10
            ms, m, batch = all_reduce_ms([1, params]), measured[128], 128
            lines.append(f"| TensorFlow all-reduce between 2 processes (ms): 1 number / the MLP's {params:,} gradients | "
                         f"{ms[1]:.2f} / {ms[params]:.2f} | {m['single'] * 1e3:.2f} / {m['half'] * 1e3:.2f} "
                         f"(a whole step at batch {batch} / {batch // 2}, 1 process) | | reported |")
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
