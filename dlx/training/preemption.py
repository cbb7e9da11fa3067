"""Preemption: Slurm announces it (and the time limit) with SIGTERM / SIGUSR1; training stops at
once, the last completed epoch's state is on disk, and the job asks to be requeued."""

from __future__ import annotations

import logging
from contextlib import contextmanager

log = logging.getLogger("dlx.train")


@contextmanager
def preemptible():
    """SIGTERM / SIGUSR1 (how Slurm announces preemption or the time limit) stop training at
    once with `Preempted`; the last completed epoch's state is already on disk."""
    import signal
    import threading

    from dlx.errors import Preempted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Preempted(signum)

    signals = [signal.SIGTERM, signal.SIGUSR1]
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def requeue_on_slurm() -> bool:
    """Ask Slurm to requeue this job (`scontrol requeue $SLURM_JOB_ID`); under submitit its own
    handler does it instead."""
    import os
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not requeue Slurm job %s: %s", job, exc)
        return False
    log.info("requeued Slurm job %s; it continues from the last completed epoch", job)
    return True
