"""Preemption: Slurm announces it with SIGTERM (a preemption, `scontrol requeue`, `scancel`) and
the coming time limit with the signal sbatch's `--signal` names (USR1, or submitit's USR2).
Training stops at once, the last completed epoch's state is on disk, and the job runs again from
there when Slurm requeues it: on a time-limit signal the job asks for that itself."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from contextlib import contextmanager

log = logging.getLogger("dlx.train")

TIME_LIMIT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
MAX_REQUEUES = 3  # time-limit requeues of one job when the launcher does not say (hydra.launcher.max_num_timeout)


@contextmanager
def preemptible():
    """SIGTERM / SIGUSR1 (and under Slurm SIGUSR2, submitit's time-limit signal) stop training
    at once with `Preempted`; the last completed epoch's state is already on disk."""
    import threading

    from dlx.errors import Preempted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Preempted(signum)

    signals = [signal.SIGTERM, signal.SIGUSR1] + ([signal.SIGUSR2] if os.environ.get("SLURM_JOB_ID") else [])
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _scontrol(*args: str) -> str | None:
    try:
        return subprocess.run(["scontrol", *args], check=True, timeout=30, capture_output=True, text=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("scontrol %s: %s", " ".join(args), getattr(exc, "stderr", None) or exc)
        return None


def restarts() -> int:
    """How many times Slurm has started this job before (SLURM_RESTART_COUNT; 0 outside Slurm)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def launcher_max_requeues() -> int | None:
    """hydra.launcher.max_num_timeout of the sweep this job belongs to, if it says."""
    try:
        from hydra.core.hydra_config import HydraConfig

        value = HydraConfig.get().launcher.get("max_num_timeout")
    except (ValueError, AttributeError):  # not a Hydra job, or a launcher without the key
        return None
    return None if value is None else int(value)


def after_preemption(signum: int, max_requeues: int | None = None) -> bool:
    """Whether Slurm will run this job again. On a time-limit signal the job asks for it
    (`scontrol requeue`, at most `max_requeues` times); on SIGTERM Slurm has decided: a
    preemption or `scontrol requeue` counts one more restart of the job, `scancel` none."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    if signum in TIME_LIMIT_SIGNALS:
        limit = MAX_REQUEUES if max_requeues is None else max_requeues
        if restarts() >= limit:
            log.warning("Slurm job %s reached its time limit %d times; not requeued again", job, restarts() + 1)
            return False
        if _scontrol("requeue", job) is None:
            return False
        log.info("requeued Slurm job %s; it continues from the last completed epoch", job)
        return True
    shown = _scontrol("show", "job", "-o", job) or ""
    found = re.search(r"\bRestarts=(\d+)", shown)
    requeued = found is not None and int(found.group(1)) > restarts()
    if requeued:
        log.info("Slurm requeued job %s; it continues from the last completed epoch", job)
    return requeued
