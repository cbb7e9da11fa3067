"""What several test modules share: models built through the family contract as `dlx train`
builds them, and the small configs and helpers of the sweep, resume and device tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

# small, quick, and with dropout so that the random-generator state matters
SMALL = ["trainer.epochs=3", "trainer.batch_size=64", "trainer.device=cpu", "regularization=dropout",
         "regularization.dropout=0.2"]
SCORES = ("test_accuracy", "test_loss", "best_val_loss", "epochs_run", "best_epoch")


def metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def job_dirs(sweep: Path) -> dict[int, Path]:
    return {int(p.name.split("_", 1)[0]): p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()}


def dlx_exe() -> str:
    return str(Path(sys.executable).with_name("dlx"))


def wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_ports(n: int) -> list[int]:
    """n distinct ports on 127.0.0.1 that were free a moment ago (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def mlflow_runs(workdir: Path):
    """(client, runs of the 'dlx' experiment) of the default local store under `workdir`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'outputs/mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name("dlx").experiment_id])


def build_model(c, spec):
    """The model `c.model` names (a plain-namespace config), built on `spec`, uncompiled."""
    from dlx.family import resolve

    return resolve(vars(c.model)).build_model(c.model, spec, reg=c.regularization, optimizer=c.optimizer, trainer=c.trainer)


def build_and_compile(c, spec, optimizer=None):
    """`build_model`, compiled with the family's objective and `optimizer`."""
    from dlx import models
    from dlx.family import resolve

    model = build_model(c, spec)
    models.compile(model, spec, optimizer, objective=resolve(vars(c.model)).objective(model, spec))
    return model


def start(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([dlx_exe(), *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy(), start_new_session=True)
