"""Device selection, distribution strategy, precision and seeding, done before the first TensorFlow op.

`pin_job_gpu` runs before TensorFlow is imported: a parallel sweep's job sees one GPU of the
server (its job number modulo the visible GPUs), set through CUDA_VISIBLE_DEVICES, the one way
to hide a GPU from TensorFlow's allocator entirely.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from dlx.errors import DlxError

log = logging.getLogger(__name__)

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """The GPU ids this process may use, found without starting TensorFlow: $CUDA_VISIBLE_DEVICES
    when set, else one id per line of `nvidia-smi -L` (none without a driver)."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def gpu_for_job(job_num: int, gpus: list[str]) -> str | None:
    """Job `job_num` of a parallel sweep gets one GPU, round robin over the visible ones."""
    return gpus[job_num % len(gpus)] if gpus else None


def pin_job_gpu(job_num: int, launcher: str, env: dict[str, str] | None = None) -> str | None:
    """In a parallel sweep, show this job's process one GPU; returns it (None: nothing changed).

    Not done for the in-process basic launcher (its jobs run one after another and share the
    process), under Slurm (which sets CUDA_VISIBLE_DEVICES to the job's allocation), or once
    TensorFlow has started in this process (a reused worker keeps the GPU it started with).
    """
    env = os.environ if env is None else env
    if launcher == BASIC_LAUNCHER or "SLURM_JOB_ID" in env:
        return None
    gpu = gpu_for_job(job_num, visible_gpus(env))
    if gpu is None:
        return None
    if "tensorflow" in sys.modules and env.get("CUDA_VISIBLE_DEVICES") != gpu:
        log.info("job %d: TensorFlow already started in this worker; it keeps GPUs %s", job_num,
                 env.get("CUDA_VISIBLE_DEVICES", "all"))
        return None
    env["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def jobs_at_once(n_jobs: int, cores: int) -> int:
    """How many jobs a local parallel launcher runs at once for its `n_jobs` (joblib's -1: one per core)."""
    return n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)


def threads_per_job(launcher: dict, env: dict[str, str] | None = None, cores: int | None = None) -> int | None:
    """CPU threads for each job of a parallel local sweep: the cores divided among the jobs that
    run at once (the launcher's `n_jobs`; joblib's -1 = all cores). Two jobs that each start
    TensorFlow's thread pools as large as the machine slow each other down
    (benchmarks/results/sweeps.md). None (TensorFlow's default)
    for one job at a time, for the in-process launcher, and under Slurm (its `cpus_per_task`)."""
    env = os.environ if env is None else env
    n_jobs = launcher.get("n_jobs")
    if str(launcher.get("_target_", "")) == BASIC_LAUNCHER or "SLURM_JOB_ID" in env or not isinstance(n_jobs, int):
        return None
    cores = cores or len(os.sched_getaffinity(0))
    n_jobs = jobs_at_once(n_jobs, cores)
    return max(cores // n_jobs, 1) if n_jobs > 1 else None


def set_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op thread pools; they are fixed once TensorFlow has started,
    so a later in-process job asking for another size keeps the first one (one log line)."""
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        log.info("TensorFlow CPU threads: %d within ops, %d across ops", tf.config.threading.get_intra_op_parallelism_threads(),
                 tf.config.threading.get_inter_op_parallelism_threads())
    except RuntimeError:
        log.info("trainer.threads=%d: TensorFlow already started in this process with %s; kept", threads,
                 tf.config.threading.get_intra_op_parallelism_threads() or "its default")


@dataclass
class Placement:
    description: str  # "cpu", "gpu x2", "gpu x2 (mirrored)"
    strategy: Any = None  # a tf.distribute strategy, or None for the default one

    def scope(self):
        """Build and compile the model inside this (the strategy's variables live on its devices)."""
        return self.strategy.scope() if self.strategy is not None else nullcontext()


def configure(device: str, devices: list[int] | None = None, strategy: str = "default",
              precision: str = "float32", threads: int | None = None, collective_timeout_s: float = 300.0) -> Placement:
    """Make `device` (auto | cpu | gpu) the one TensorFlow uses, with the GPUs `devices` picks,
    the distribution `strategy`, the compute `precision` and `threads` CPU threads (None:
    TensorFlow's default). What a CPU cannot do falls back to the plain float32 CPU run with one
    log line each."""
    import keras
    import tensorflow as tf

    if threads:
        set_threads(threads)
    if strategy == "multi_worker":  # before anything else starts TensorFlow's runtime in this process
        from dlx.training import multi_worker

        if device == "cpu":
            tf.config.set_visible_devices([], "GPU")
        found = multi_worker.strategy(collective_timeout_s)
        where = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
        return Placement(f"{where}, {found.num_replicas_in_sync} replicas (multi_worker)", found)
    gpus = tf.config.list_physical_devices("GPU")
    keras.mixed_precision.set_global_policy("float32")  # a previous in-process job may have changed it
    if device == "cpu" or not gpus:
        if device == "gpu":
            log.warning("trainer.device=gpu but TensorFlow sees no GPU; running on CPU")
        if devices:
            log.info("trainer.devices=%s: no GPU in use, running on CPU", list(devices))
        if strategy != "default":
            log.info("trainer.strategy=%s: no GPU in use, running on CPU with the default strategy", strategy)
        if precision != "float32":
            log.info("trainer.precision=%s: no GPU in use, running in float32 on CPU", precision)
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:  # already initialised by an earlier in-process job
                pass
        return Placement("cpu")
    if devices:
        bad = [i for i in devices if not 0 <= i < len(gpus)]
        if bad:
            raise DlxError(f"trainer.devices: GPU index {bad[0]} does not exist; this job sees {len(gpus)} GPU(s) (0..{len(gpus) - 1})")
        chosen = [gpus[i] for i in devices]
        try:
            tf.config.set_visible_devices(chosen, "GPU")
        except RuntimeError:
            log.info("trainer.devices=%s: TensorFlow already started in this process with all GPUs", list(devices))
            chosen = gpus
    else:
        chosen = gpus
    for gpu in chosen:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised (a second job in the same process)
            pass
    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    description = f"gpu x{len(chosen)}" + (f", {precision}" if precision != "float32" else "")
    if strategy == "mirrored":
        names = [f"/gpu:{i}" for i in range(len(chosen))]
        return Placement(f"{description} (mirrored)", tf.distribute.MirroredStrategy(names))
    return Placement(description)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """A fresh Keras state and the same random streams for the same seed (Python, NumPy, TF);
    with `deterministic`, TensorFlow's ops too (bit-identical results, some ops slower)."""
    import keras
    import tensorflow as tf

    if gc.get_freeze_count() == 0:
        # The first job in this process: no model to free yet. What exists now (mostly the imported
        # modules) lives as long as the process, so the garbage collector stops scanning it and
        # each later job's collection stays short.
        gc.freeze()
        keras.backend.clear_session(free_memory=False)
    else:
        keras.backend.clear_session()  # frees the previous in-process job's model
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
