"""A real one-node Slurm cluster (tests/helpers/slurm-up.sh starts it; .ci/run installs slurm-wlm
and munge): sweeps through sbatch, a job requeued twice mid-training that continues where it
stopped, a plain batch script's time limit, and the request checks. The cluster keeps no
accounting database (no slurmdbd), so `sacct` fails here, as it does on many small clusters."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TINY
from helpers import SCORES, dlx_exe, job_dirs, metrics, mlflow_runs, start, wait_for

pytestmark = pytest.mark.slow

SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
# long enough to be stopped mid-way (about 0.6 s an epoch), bit-identical for the same seed
LONG = ["model=cnn", "trainer.epochs=20", "trainer.batch_size=2", "trainer.deterministic=true",
        "trainer.early_stopping.enabled=false", "trainer.device=cpu"]


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    script = Path(__file__).parent / "helpers" / "slurm-up.sh"
    try:
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("the one-node Slurm cluster did not come up in 120 s")
    if proc.returncode != 0:
        pytest.skip(f"no Slurm cluster: {(proc.stdout + proc.stderr).strip().splitlines()[-1]}")
    return proc.stdout.split()[0].rstrip("*")


def squeue(job: str) -> str:
    """The job's state letters (R, PD, CG), or '' once Slurm has forgotten it."""
    return subprocess.run(["squeue", "-h", "-o", "%t", "-j", job], capture_output=True, text=True, timeout=30).stdout.strip()


def epochs_logged(log: Path) -> int:
    done = re.findall(r"epoch (\d+)/", log.read_text()) if log.is_file() else []
    return int(done[-1]) if done else 0


def release(job: str) -> None:
    """A requeued job waits about two minutes before it may start again; start it now, once the
    node has finished with its last run (started earlier, Slurm refuses it: credential revoked)."""
    wait_for(lambda: squeue(job) == "PD", timeout=60, what=f"job {job} back in the queue")
    shown = lambda: subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout  # noqa: E731
    wait_for(lambda: "COMPLETING" not in shown(), timeout=60, what=f"job {job}'s last run to finish on the node")
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True, timeout=30)


def requeue_at_epoch_3(workdir: Path, sweep: subprocess.Popen, timeout: float) -> tuple[Path, str]:
    """Wait for the sweep's one Slurm job to finish epoch 3, requeue it (`scontrol requeue`, what
    a preemption does) and let it start again; returns its task 0 log and its job id."""
    wait_for(lambda: any((workdir / "sweep" / ".submitit").glob("*/*_0_log.out")) or sweep.poll() is not None,
             timeout=120, what="the Slurm job's log")
    log = next((workdir / "sweep" / ".submitit").glob("*/*_0_log.out"))
    job = log.parent.name
    wait_for(lambda: epochs_logged(log) >= 3 or sweep.poll() is not None, timeout=timeout, what="epoch 3")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    release(job)
    return log, job


def test_a_sweep_runs_each_job_through_sbatch(dlx, workdir, slurm_partition):
    dlx("train", "-m", *SLURM, f"hydra.launcher.partition={slurm_partition}", *TINY, "model=softmax,mlp",
        "hydra.sweep.dir=sweep", check=True, timeout=600)
    jobs = job_dirs(workdir / "sweep")
    assert sorted(jobs) == [0, 1] and all(metrics(d)["test_accuracy"] > 0.1 for d in jobs.values())
    slurm_ids = [p.name for p in (workdir / "sweep" / ".submitit").iterdir() if p.is_dir()]
    assert slurm_ids and all(re.fullmatch(r"\d+(_\d+)?", i) for i in slurm_ids)  # real Slurm job ids
    client, runs = mlflow_runs(workdir)
    parents = [r for r in runs if r.data.tags.get("dlx.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == ["model=mlp", "model=softmax"]
    assert all(r.info.status == "FINISHED" for r in children)
    table = dlx("runs", "sweep", check=True).stdout
    assert "model=softmax" in table and "model=mlp" in table and table.count("finished") == 2


def test_a_requeued_job_continues_from_its_last_epoch_and_ends_like_an_unstopped_run(dlx, workdir, slurm_partition):
    """Requeued twice: by `scontrol requeue` (SIGTERM, as a preemption) and by the time-limit
    signal submitit asks sbatch for (USR2, which the job answers by requeueing itself). The sweep
    waits for the job's last run; the job keeps its directory and MLflow run, and its final
    numbers equal those of a run that was never stopped."""
    sweep = start(workdir, "train", "-m", *SLURM, f"hydra.launcher.partition={slurm_partition}", *LONG,
                  "hydra.sweep.dir=sweep")
    log, job = requeue_at_epoch_3(workdir, sweep, timeout=120)
    wait_for(lambda: "resuming from the end of epoch" in log.read_text() or sweep.poll() is not None, timeout=120,
             what="the requeued job to resume")
    first = int(re.search(r"resuming from the end of epoch (\d+)", log.read_text()).group(1))
    wait_for(lambda: epochs_logged(log) >= first + 3 or sweep.poll() is not None, timeout=120, what="3 more epochs")
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)  # what sbatch --signal sends before the limit
    release(job)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]
    done = job_dirs(workdir / "sweep")[0]
    resumed = metrics(done)["resumed_from_epoch"]
    assert resumed > first >= 3, (first, resumed)
    text = log.read_text()
    assert "Slurm requeued job" in text and f"requeued Slurm job {job}" in text

    dlx("train", *LONG, "logger=none", "hydra.run.dir=alone", check=True, timeout=600)
    assert {k: metrics(done)[k] for k in SCORES} == {k: metrics(workdir / "alone")[k] for k in SCORES}
    client, runs = mlflow_runs(workdir)
    children = [r for r in runs if r.data.tags.get("dlx.role") != "sweep"]
    assert len(children) == 1 and children[0].info.status == "FINISHED"  # one run, continued twice
    assert len(client.get_metric_history(children[0].info.run_id, "val_loss")) == 20


def test_a_batch_script_past_its_time_limit_requeues_itself_and_resumes(workdir, slurm_partition):
    """`dlx train` in your own sbatch script, with --signal=USR1@...: on the signal it saves,
    requeues the job and exits; the next start of the job finds the run's state and continues."""
    script = workdir / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --requeue --signal=USR1@30 -c 1 --mem=1G -o slurm-%j.out --open-mode=append\n"
                      f"cd {workdir}\nexec {dlx_exe()} train {' '.join(LONG)} logger=none hydra.run.dir=run-$SLURM_JOB_ID\n")
    job = subprocess.run(["sbatch", "--parsable", f"--partition={slurm_partition}", str(script)], capture_output=True,
                         text=True, check=True, timeout=30, cwd=workdir).stdout.strip().split(";")[0]
    out = workdir / f"slurm-{job}.out"
    wait_for(lambda: epochs_logged(out) >= 3, timeout=120, what="epoch 3")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)
    release(job)
    wait_for(lambda: (workdir / f"run-{job}" / "metrics.json").is_file(), timeout=300, what="the job to finish")
    assert metrics(workdir / f"run-{job}")["resumed_from_epoch"] >= 3
    assert "requeued Slurm job" in out.read_text()


def test_one_job_as_two_slurm_tasks_trains_one_model_and_survives_a_requeue(workdir, dlx, slurm_partition):
    """hydra.launcher.tasks_per_node=2 with trainer.strategy=multi_worker: the two tasks find each
    other through SlurmClusterResolver and train one model; only task 0 writes the run. Requeued
    at epoch 3, both tasks continue from the chief's saved epoch (long enough to have run out of
    threads when every collective op had its own timer thread)."""
    mlp = ["model=mlp", "trainer.epochs=30", "trainer.batch_size=16", "trainer.early_stopping.enabled=false",
           "trainer.device=cpu"]
    sweep = start(workdir, "train", "-m", *SLURM, f"hydra.launcher.partition={slurm_partition}",
                  "hydra.launcher.tasks_per_node=2", "trainer.strategy=multi_worker", *mlp, "hydra.sweep.dir=sweep")
    log, _ = requeue_at_epoch_3(workdir, sweep, timeout=180)
    _, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    together = metrics(job_dirs(workdir / "sweep")[0])
    assert together["replicas"] == 2 and together["resumed_from_epoch"] >= 3 and together["epochs_run"] == 30
    other = (log.parent / log.name.replace("_0_", "_1_")).read_text()
    assert "multi_worker process 1 of 2; the chief writes" in other and other.count("resuming from the end of epoch") == 1
    dlx("train", *mlp, "logger=none", "hydra.run.dir=alone", check=True)
    alone = metrics(workdir / "alone")
    assert abs(together["test_accuracy"] - alone["test_accuracy"]) <= 0.01
    # 2,300 steps whose float sums run in another order (measured: 0.1005 vs 0.1004)
    assert together["test_loss"] == pytest.approx(alone["test_loss"], rel=5e-3)


@pytest.mark.parametrize("args, message", [
    (["hydra.launcher.partition=nosuch"], "hydra.launcher.partition=nosuch: no such Slurm partition; partitions: "),
    (["hydra.launcher.cpus_per_task=1", "hydra.launcher.tasks_per_node=4096"], "hydra.launcher.tasks_per_node: tasks_per_node=4096"),
    (["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=100000"], "hydra.launcher.mem_gb=100000: a node of partition"),
    (["hydra.launcher.cpus_per_task=1", "hydra.launcher.tasks_per_node=2"], "train one model together only with trainer.strategy=multi_worker"),
    (["hydra.launcher.cpus_per_task=0"], "hydra.launcher.cpus_per_task=0: expected 1 or more"),
    (["hydra.launcher.cpus_per_task=1", "hydra.launcher.nodes=-1"], "hydra.launcher.nodes=-1: expected 1 or more"),
])
def test_a_request_the_cluster_cannot_meet_is_one_line_before_anything_is_submitted(dlx, workdir, slurm_partition, args, message):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout
    t0 = time.monotonic()
    proc = dlx("train", "-m", "hydra/launcher=slurm", *args, *TINY, "logger=none", "hydra.sweep.dir=sweep")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert time.monotonic() - t0 < 60 and not (workdir / "sweep" / ".submitit").exists()
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout == before
