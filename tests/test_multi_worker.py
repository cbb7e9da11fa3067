"""trainer.strategy=multi_worker: two `dlx train` processes on 127.0.0.1 found through TF_CONFIG
(the Slurm-task case is in test_slurm.py), a process that dies, a cluster that never forms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from helpers import SCORES, dlx_exe, free_ports, metrics, mlflow_runs, wait_for

MLP = ["model=mlp", "trainer.epochs=5", "trainer.threads=1", "trainer.early_stopping.enabled=false", "trainer.device=cpu"]


def local_hosts(n: int) -> list[str]:
    """Addresses for n processes of one cluster on 127.0.0.1."""
    return [f"127.0.0.1:{p}" for p in free_ports(n)]


def worker(workdir, index: int, hosts: list[str], *args: str) -> subprocess.Popen:
    env = os.environ | {"TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})}
    return subprocess.Popen([dlx_exe(), "train", *args], cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_the_cluster_comes_from_tf_config_or_slurm_tasks(monkeypatch):
    from dlx.errors import DlxError
    from dlx.training import multi_worker

    for key in ("TF_CONFIG", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert multi_worker.cluster() is None
    with pytest.raises(DlxError, match="trainer.strategy=multi_worker: this process has no cluster"):
        multi_worker.role("multi_worker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert multi_worker.cluster() == (2, 3)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["b:1"]}, "task": {"type": "worker", "index": 4}}))
    with pytest.raises(DlxError, match="TF_CONFIG: task worker 4 is not in its cluster"):
        multi_worker.cluster()
    for jobs, wrong in (({"worker": "a:1"}, "cluster.worker must be a list of host:port, got str"),
                        ({"worker": ["a:99999"]}, "cluster.worker address 'a:99999': expected host:port"),
                        ({"worker": ["a"]}, "cluster.worker address 'a'"), ({"worker": [7]}, "cluster.worker address 7"),
                        ({"chief": [":1"], "worker": ["b:1"]}, "cluster.chief address ':1'")):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": jobs, "task": {"type": "worker", "index": 0}}))
        with pytest.raises(DlxError, match=wrong):
            multi_worker.cluster()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(DlxError, match="TF_CONFIG: expected"):
        multi_worker.cluster()
    monkeypatch.delenv("TF_CONFIG")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert multi_worker.cluster() == (1, 2) and multi_worker.role("multi_worker") == (1, 2)
    with pytest.raises(DlxError, match="runs 2 tasks: with trainer.strategy=default each would train"):
        multi_worker.role("default")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2(x3),1")
    assert multi_worker._tasks_per_node() == 2


def test_multi_worker_outside_a_cluster_is_one_line(dlx, workdir):
    proc = dlx("train", "trainer.strategy=multi_worker", "logger=none", "hydra.run.dir=run")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "start it as several Slurm tasks" in proc.stderr and not (workdir / "run").exists()


@pytest.mark.slow
def test_two_processes_train_one_model_that_matches_one_process_with_the_same_global_batch(dlx, workdir):
    hosts = local_hosts(2)
    args = [*MLP, "trainer.strategy=multi_worker", "trainer.collective_timeout_s=120"]
    other = worker(workdir, 1, hosts, *args, "logger=none", "hydra.run.dir=helper")
    chief = worker(workdir, 0, hosts, *args, "hydra.run.dir=chief")
    for proc in (chief, other):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    together = metrics(workdir / "chief")
    assert together["replicas"] == 2
    # only the chief writes the run: the other process's directory holds Hydra's config and nothing it trained
    assert not (workdir / "helper" / "checkpoints").exists() and not (workdir / "helper" / "metrics.json").exists()
    assert (workdir / "chief" / "model.keras").is_file() and (workdir / "chief" / "tb").is_dir()
    client, runs = mlflow_runs(workdir)
    assert len(runs) == 1 and runs[0].data.metrics["replicas"] == 2

    dlx("train", *MLP, "logger=none", "hydra.run.dir=alone", check=True)
    alone = metrics(workdir / "alone")
    assert alone.get("replicas", 1) == 1
    # the same global batch and learning rate: the same model up to the order of float sums
    assert abs(together["test_accuracy"] - alone["test_accuracy"]) <= 0.01
    assert together["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-3)
    assert {k: together[k] for k in SCORES if "epoch" in k} == {k: alone[k] for k in SCORES if "epoch" in k}


@pytest.mark.slow
def test_a_process_that_dies_stops_the_other_with_one_line(workdir):
    hosts = local_hosts(2)
    args = [*MLP, "trainer.epochs=300", "trainer.batch_size=16", "trainer.strategy=multi_worker",
            "trainer.collective_timeout_s=30", "logger=none"]
    other = worker(workdir, 1, hosts, *args, "hydra.run.dir=helper")
    chief = worker(workdir, 0, hosts, *args, "hydra.run.dir=chief")
    log = workdir / "chief" / "train.log"
    wait_for(lambda: (log.is_file() and "epoch 3/" in log.read_text()) or chief.poll() is not None, timeout=180,
             what="epoch 3")
    threads = int(next(line.split()[1] for line in open(f"/proc/{chief.pid}/status") if line.startswith("Threads:")))
    assert threads < 400, threads  # no thread per collective op (about 700 by now when each had a timer)
    os.killpg(other.pid, signal.SIGKILL)
    t0 = time.monotonic()
    _, err = chief.communicate(timeout=120)
    other.communicate(timeout=30)
    assert chief.returncode == 2 and time.monotonic() - t0 < 90, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("dlx train: error: trainer.strategy=multi_worker: /job:worker/replica:0/task:1 stopped answering")
    assert "state saved at the end of epoch" in last and "resume=" in last


@pytest.mark.slow
def test_a_cluster_that_never_forms_is_one_line_after_the_timeout(workdir):
    hosts = local_hosts(2)
    t0 = time.monotonic()
    alone = worker(workdir, 0, hosts, *MLP, "trainer.strategy=multi_worker", "trainer.collective_timeout_s=10",
                   "logger=none", "hydra.run.dir=run")
    _, err = alone.communicate(timeout=120)
    assert alone.returncode == 2 and time.monotonic() - t0 < 90
    assert "did not come together within trainer.collective_timeout_s=10 s" in err and "is every process started?" in err
    assert not (workdir / "run").exists()


@pytest.mark.slow
def test_a_loss_that_diverges_stops_every_process_at_the_same_epoch(workdir):
    # each process sees only its own step logs: a batch-level stop could leave one process waiting
    # in a collective for the other; the epoch's loss, averaged across processes, decides for both
    hosts = local_hosts(2)
    args = [*MLP, "trainer.strategy=multi_worker", "trainer.collective_timeout_s=60", "logger=none", "optimizer=sgd",
            "optimizer.schedule=step", "optimizer.step_epochs=1", "optimizer.decay_rate=1e30"]
    other = worker(workdir, 1, hosts, *args, "hydra.run.dir=helper")
    chief = worker(workdir, 0, hosts, *args, "hydra.run.dir=chief")
    for proc in (chief, other):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert "training diverged: loss became NaN/inf at epoch 2" in last and "last good checkpoint" in last, last
    assert (workdir / "chief/checkpoints/last.keras").is_file() and not (workdir / "chief/metrics.json").exists()
