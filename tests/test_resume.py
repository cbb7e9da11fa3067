"""Resume (kill -9, a finished run, a sweep re-run) and preemption by signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import TINY
from helpers import SCORES, dlx_exe, job_dirs, metrics, start, wait_for


# --------------------------------------------------------------------------- resume
def saved_epoch(run: Path) -> int:
    state = run / "checkpoints/resume/state.json"
    try:
        return json.loads(state.read_text())["epoch"] if state.is_file() else 0
    except (ValueError, KeyError):  # caught between write and rename: never, but be safe
        return 0


RESUMABLE = ["trainer.epochs=5", "trainer.batch_size=16", "trainer.steps_per_execution=1", "trainer.device=cpu",
             "trainer.deterministic=true", "regularization=dropout", "trainer.early_stopping.patience=2"]


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_equals_an_uninterrupted_run(dlx, workdir):
    dlx("train", *RESUMABLE, "hydra.run.dir=full", check=True)
    proc = start(workdir, "train", *RESUMABLE, "hydra.run.dir=killed")
    wait_for(lambda: saved_epoch(workdir / "killed") >= 2 or proc.poll() is not None, what="two finished epochs")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (workdir / "killed/metrics.json").exists()
    resumed_at = saved_epoch(workdir / "killed")
    run_id = json.loads((workdir / "killed/checkpoints/resume/state.json").read_text())["mlflow_run_id"]

    dlx("train", "resume=killed", check=True)
    full, resumed = metrics(workdir / "full"), metrics(workdir / "killed")
    assert resumed["resumed_from_epoch"] == resumed_at >= 2
    assert {k: full[k] for k in SCORES} == {k: resumed[k] for k in SCORES}
    assert f"resuming from the end of epoch {resumed_at}" in (workdir / "killed/train.log").read_text()
    # same MLflow run, finished, with every epoch's metric once
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'outputs/mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val_loss")]
    assert sorted(set(steps)) == list(range(full["epochs_run"]))
    # TensorBoard went on counting epochs from where it stopped: one validation point per epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(workdir / "killed/tb/validation"))
    acc.Reload()
    assert sorted({e.step for e in acc.Tensors("epoch_loss")}) == list(range(full["epochs_run"]))
    assert not (workdir / "killed/checkpoints/resume").exists()  # a finished run keeps no resume state


def test_resume_refuses_a_non_run_directory_and_a_changed_config(dlx, workdir):
    (workdir / "empty").mkdir()
    proc = dlx("train", "resume=empty")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "dlx train: error: resume=empty: not a dlx train run directory (no .hydra/config.yaml)")

    run = workdir / "r"
    (run / ".hydra").mkdir(parents=True)
    from conftest import compose
    from omegaconf import OmegaConf

    OmegaConf.save(compose([*TINY, "logger=none"]), run / ".hydra/config.yaml")
    (run / ".hydra/overrides.yaml").write_text("- trainer.epochs=2\n- trainer.batch_size=64\n- trainer.device=cpu\n- logger=none\n")
    before = {p: p.read_bytes() for p in (run / ".hydra").iterdir()}
    proc = dlx("train", "resume=r", "optimizer.lr=0.5")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("dlx train: error: resume=r: the config differs from the run's at optimizer.lr"), line
    assert {p: p.read_bytes() for p in (run / ".hydra").iterdir()} == before  # nothing rewritten

    proc = dlx("train", "-m", "resume=r", "model=softmax,mlp")
    assert proc.returncode == 2 and "in a sweep (-m) use resume=true" in proc.stderr


@pytest.mark.slow
def test_a_finished_run_is_not_resumed_and_a_sweep_resume_skips_finished_jobs(dlx, workdir):
    dlx("train", "-m", *TINY, "trainer.epochs=1", "logger=none", "model=softmax,mlp", "hydra.sweep.dir=sweep", check=True)
    jobs = job_dirs(workdir / "sweep")
    proc = dlx("train", f"resume={jobs[0]}")
    assert proc.returncode == 2 and "that run finished (metrics.json exists); nothing to resume" in proc.stderr

    (jobs[1] / "metrics.json").unlink()  # as if the sweep had been killed during job 1
    model0 = (jobs[0] / "model.keras").stat().st_mtime_ns
    dlx("train", "-m", *TINY, "trainer.epochs=1", "logger=none", "model=softmax,mlp", "hydra.sweep.dir=sweep",
        "resume=true", check=True)
    assert (jobs[0] / "model.keras").stat().st_mtime_ns == model0  # skipped
    assert "finished before" in (jobs[0] / "train.log").read_text()
    assert (jobs[1] / "metrics.json").is_file()  # trained again


@pytest.mark.slow
def test_sigusr1_stops_training_keeps_the_epoch_state_and_requeues_on_slurm(dlx, workdir, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    args = [*RESUMABLE, "trainer.epochs=50", "trainer.early_stopping.enabled=false", "logger=none", "hydra.run.dir=pre"]
    proc = subprocess.Popen([dlx_exe(), "train", *args], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: saved_epoch(workdir / "pre") >= 1 or proc.poll() is not None, what="one finished epoch")
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dlx train: stopped by signal 10; state saved at the end of epoch") and last.endswith(
        "Slurm requeued the job, which continues from there")
    assert calls.read_text().split() == ["requeue", "4242"]
    assert not (workdir / "pre/metrics.json").exists() and saved_epoch(workdir / "pre") >= 1


@pytest.mark.slow
def test_resume_last_continues_the_newest_run(dlx, workdir):
    assert dlx("train", "resume=last").stderr.strip().endswith("resume=last: no run in outputs/ of this directory")
    dlx("train", *TINY, "logger=none", "hydra.run.dir=outputs/2026-01-01/00-00-00", check=True)
    proc = start(workdir, "train", *TINY, "trainer.epochs=300", "trainer.early_stopping.enabled=false", "logger=none",
                 "hydra.run.dir=outputs/2026-01-02/00-00-00")
    newest = workdir / "outputs/2026-01-02/00-00-00"
    wait_for((newest / "checkpoints/resume/state.json").is_file, what="an epoch of the newest run")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = json.loads((newest / "checkpoints/resume/state.json").read_text())["epoch"]
    resumed = dlx("train", "resume=last", timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(newest)["resumed_from_epoch"] == saved and metrics(newest)["epochs_run"] == 300
