"""Sweeps, launchers, resume and preemption, MLflow parent/child runs, HParams, `dlx runs`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY

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


# --------------------------------------------------------------------------- multirun isolation
@pytest.mark.slow
def test_in_process_multirun_jobs_match_runs_alone(dlx, workdir):
    """The basic launcher runs jobs one after another in one process: each must start from a
    clean Keras state and the same seed, so job 1 equals the same config run alone."""
    dlx("train", "-m", *SMALL, "logger=none", "model=softmax,mlp", "hydra.sweep.dir=sweep", check=True)
    dlx("train", *SMALL, "logger=none", "model=mlp", "hydra.run.dir=alone", check=True)
    jobs = job_dirs(workdir / "sweep")
    assert jobs[1].name == "1_model=mlp"  # readable job directory
    alone, in_sweep = metrics(workdir / "alone"), metrics(jobs[1])
    assert {k: alone[k] for k in SCORES} == {k: in_sweep[k] for k in SCORES}


# --------------------------------------------------------------------------- parallel + MLflow
@pytest.mark.slow
def test_joblib_sweep_of_four_jobs_gives_four_mlflow_children_of_one_parent(dlx, workdir):
    proc = dlx("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *TINY, "trainer.epochs=1",
               "model=softmax,mlp", "optimizer.lr=0.01,0.1", "hydra.sweep.dir=sweep", check=True)
    # our joblib.yaml extends the plugin's schema on purpose; each job used to print Hydra's warning
    assert "ConfigStore schema" not in proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'outputs/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dlx").experiment_id])
    parents = [r for r in runs if r.data.tags.get("dlx.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.tags["dlx.job_num"] for r in children) == ["0", "1", "2", "3"]
    assert {r.data.tags["dlx.sweep_id"] for r in children} == {"sweep"}
    names = sorted(r.info.run_name for r in children)
    assert names == ["model=mlp,optimizer.lr=0.01", "model=mlp,optimizer.lr=0.1",
                     "model=softmax,optimizer.lr=0.01", "model=softmax,optimizer.lr=0.1"]  # what the sweep varies
    assert parents[0].data.metrics["jobs_finished"] == 4
    best = min(r.data.metrics["best_val_loss"] for r in children)
    assert parents[0].data.metrics["best_val_loss"] == pytest.approx(best)  # the sweep's best job
    assert len(job_dirs(workdir / "sweep")) == 4
    threads = max(len(os.sched_getaffinity(0)) // 4, 1)  # the cores shared among the 4 jobs running at once
    for job in job_dirs(workdir / "sweep").values():
        assert f"{threads} CPU thread(s) for TensorFlow (4 jobs at once)" in (job / "train.log").read_text()


def joblib_launcher(**changes):
    from omegaconf import OmegaConf

    from dlx import config
    from hydra_plugins.dlx_joblib_launcher import JoblibLauncher

    settings = OmegaConf.to_container(OmegaConf.load(config.conf_dir() / "hydra/launcher/joblib.yaml"))
    assert settings.pop("_target_") == f"{JoblibLauncher.__module__}.JoblibLauncher"
    return JoblibLauncher(**settings | changes)


def test_joblib_launcher_warms_the_workers_that_then_run_the_jobs(monkeypatch):
    """The workers start (and import what a job needs) while the sweep is being prepared; the
    launch must then reuse them, not start new ones, and they must still exit cleanly."""
    from joblib import Parallel, delayed
    from joblib.externals.loky import reusable_executor

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # "GPUs visible": warmed without TensorFlow, quicker here
    from hydra_plugins.dlx_joblib_launcher.joblib_launcher import WARMUP

    launcher = joblib_launcher(n_jobs=2)
    launcher.setup(hydra_context=None, task_function=None, config=None)
    warmed = WARMUP.wait()
    assert len(set(warmed)) == 2 and os.getpid() not in warmed
    pids = Parallel(**launcher.settings())(delayed(os.getpid)() for _ in range(6))  # what the launch runs
    assert set(pids) <= set(warmed)
    reusable_executor._executor.shutdown(wait=True)
    for pid in warmed:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_warm_worker_leaves_tensorflow_out_where_gpus_are_visible():
    """A job pins its GPU (CUDA_VISIBLE_DEVICES) before TensorFlow starts in its process; a worker
    warmed on a GPU server must not have imported it. Nor may the launching process, where joblib
    can run a task itself, be made to exit through the workers' quick exit."""
    code = ("import os, sys; from hydra_plugins.dlx_joblib_launcher.joblib_launcher import warm_worker; "
            "warm_worker(False, os.getpid()); print('mlflow' in sys.modules, 'tensorflow' in sys.modules); sys.exit(3)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "False"]
    assert proc.returncode == 3  # its own exit status, not the quick exit's 0


def test_the_first_sweep_callback_warms_joblib_workers_only(monkeypatch):
    """The warm-up starts at the sweep's first callback, before the MLflow parent run and before
    Hydra sets the launcher up; other launchers' configs are left alone."""
    from hydra import compose, initialize_config_dir

    from dlx import config

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # warmed without TensorFlow, quicker here
    config.register()
    with initialize_config_dir(config_dir=str(config.conf_dir()), version_base="1.3"):
        slurm = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        joblib = compose(config_name="train", overrides=["hydra/launcher=joblib"], return_hydra_config=True)
    assert list(joblib.hydra.callbacks)[0] == "warm_workers"
    # imported after Hydra's plugin scan, which runs the plugin modules afresh
    from hydra_plugins.dlx_joblib_launcher.joblib_launcher import WARMUP, WarmWorkers

    WarmWorkers().on_multirun_start(slurm)
    assert WARMUP.thread is None
    WarmWorkers().on_multirun_start(joblib)
    assert WARMUP.thread is not None and len(set(WARMUP.wait())) == 2
    WARMUP.pids = []


def test_joblib_launcher_does_not_warm_a_single_job_at_a_time():
    from hydra_plugins.dlx_joblib_launcher.joblib_launcher import WARMUP

    launcher = joblib_launcher(n_jobs=1)  # joblib runs the jobs in the launching process then
    launcher.setup(hydra_context=None, task_function=None, config=None)
    assert WARMUP.thread is None


@pytest.mark.slow
def test_submitit_local_executor_runs_a_two_job_sweep(dlx, workdir):
    dlx("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *TINY, "trainer.epochs=1",
        "logger=none", "model=softmax,mlp", "hydra.sweep.dir=sweep", check=True, timeout=600)
    jobs = job_dirs(workdir / "sweep")
    assert sorted(jobs) == [0, 1]
    assert all((d / "metrics.json").is_file() for d in jobs.values())
    assert list((workdir / "sweep" / ".submitit").iterdir())  # submitit's own job folders


@pytest.mark.slow
def test_ray_launcher_runs_a_two_job_sweep(dlx, workdir):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='the Ray launcher is an extra: pip install -e ".[ray]"')
    dlx("train", "-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2", *TINY, "trainer.epochs=1",
        "logger=none", "model=softmax,mlp", "hydra.sweep.dir=sweep", check=True, timeout=600)
    jobs = job_dirs(workdir / "sweep")
    assert sorted(jobs) == [0, 1] and all((d / "metrics.json").is_file() for d in jobs.values())


# --------------------------------------------------------------------------- resume
def start(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([dlx_exe(), *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy(), start_new_session=True)


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
    assert last.startswith("dlx train: stopped by signal 10; state saved at the end of epoch") and "resume=" in last
    assert calls.read_text().split() == ["requeue", "4242"]
    assert not (workdir / "pre/metrics.json").exists() and saved_epoch(workdir / "pre") >= 1


# --------------------------------------------------------------------------- Optuna
PRUNE_SWEEP = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
hydra:
  sweep:
    dir: search
sweep:
  name: prune_test
  n_trials: 4
  pruner: median
  startup_trials: 2
  warmup_epochs: 0
  params:
    optimizer.lr: {type: categorical, choices: [0.05, 0.03, 0.02, 1.0e-7]}
  enqueue: [{optimizer.lr: 0.05}, {optimizer.lr: 0.03}, {optimizer.lr: 1.0e-7}, {optimizer.lr: 0.02}]
"""


@pytest.mark.slow
def test_optuna_sweep_prunes_the_bad_trial_and_resumes_after_a_kill(dlx, workdir):
    conf = workdir / "conf" / "sweep"
    conf.mkdir(parents=True)
    (conf / "prune_test.yaml").write_text(PRUNE_SWEEP)
    args = ["train", "-m", "--config-dir", "conf", "sweep=prune_test", "trainer.epochs=4", "trainer.device=cpu",
            "trainer.batch_size=64", "logger=mlflow"]
    proc = start(workdir, *args)
    search = workdir / "search"
    finished = lambda: search.is_dir() and any((d / "metrics.json").is_file() for d in job_dirs(search).values())  # noqa: E731
    wait_for(lambda: finished() or proc.poll() is not None, what="the first trial")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {n: metrics(d)["best_val_loss"] for n, d in job_dirs(search).items() if (d / "metrics.json").is_file()}
    assert 0 in first

    again = dlx(*args)  # the study exists: continuing it must be asked for
    assert again.returncode == 2
    assert "already holds a study" in again.stderr and "sweep.resume=true" in again.stderr.strip().splitlines()[-1]

    dlx(*args, "sweep.resume=true", check=True, timeout=600)
    with sqlite3.connect(search / "optuna.db") as db:
        states = dict(db.execute("select number, state from trials").fetchall())
    assert list(states.values()).count("COMPLETE") + list(states.values()).count("PRUNED") == 4
    assert "PRUNED" in states.values()
    results = (search / "optimization_results.yaml").read_text()
    assert "best_value:" in results and "pruned:" in results
    assert metrics(job_dirs(search)[0])["best_val_loss"] == first[0]  # the finished trial was kept, not rerun
    pruned = [d.name for d in job_dirs(search).values() if metrics(d).get("pruned_at_epoch")]
    assert any(name.endswith("optimizer.lr=1e-07") for name in pruned), pruned  # the deliberately bad trial
    for name in ("trials.csv", "optimization_history.png", "parallel_coordinates.png"):
        assert (search / name).stat().st_size > 0
    table = dlx("runs", "search", check=True).stdout
    assert "pruned" in table and table.index("optimizer.lr=0.03") < table.index("optimizer.lr=1e-07")
    # MLflow: the pruned trial's child run is marked
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'outputs/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dlx").experiment_id])
    bad = [r for r in runs if r.info.run_name == "optimizer.lr=1e-07" and r.info.status != "RUNNING"]
    assert bad and all(r.info.status == "KILLED" and r.data.tags["dlx.status"] == "pruned" for r in bad)
    assert len({r.data.tags.get("mlflow.parentRunId") for r in runs if r.data.tags.get("dlx.trial")}) == 1  # one parent


@pytest.mark.slow
def test_optuna_trials_in_parallel_processes_share_the_study(dlx, workdir):
    dlx("train", "-m", "sweep=mlp_search", "hydra/launcher=joblib", "sweep.n_jobs=2", "sweep.n_trials=4",
        "sweep.sampler=random", *TINY, "trainer.epochs=2", "logger=none", "hydra.sweep.dir=par", check=True)
    with sqlite3.connect(workdir / "par/optuna.db") as db:
        states = [s for (s,) in db.execute("select state from trials")]
        reported = db.execute("select count(distinct trial_id) from trial_intermediate_values").fetchone()[0]
    assert states == ["COMPLETE"] * 4 or sorted(set(states)) <= ["COMPLETE", "PRUNED"]
    assert len(states) == 4 and reported == 4  # every worker process reported its epochs to the shared study
    assert len(job_dirs(workdir / "par")) == 4


def test_bad_sweep_input_is_one_clear_line(dlx, workdir):
    (workdir / "conf/sweep").mkdir(parents=True)
    (workdir / "conf/sweep/empty.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: optuna\nsweep:\n  name: empty\n  params: {}\n")
    cases = [
        (["-m", "hydra/launcher=nope", *TINY], "dlx train: error: unknown hydra/launcher 'nope'; choose one of:"),
        (["-m", "hydra/sweeper=nope", *TINY], "dlx train: error: unknown hydra/sweeper 'nope'; choose one of:"),
        (["-m", "--config-dir", "conf", "sweep=empty", *TINY, "logger=none", "hydra.sweep.dir=s1"],
         "dlx train: error: sweep.params: the search space is empty"),
        (["-m", "sweep=mlp_search", "model=mlp,cnn", *TINY, "logger=none", "hydra.sweep.dir=s3"],
         "dlx train: error: model=mlp,cnn: an Optuna sweep takes its search space from sweep.params"),
        (["sweep=mlp_search", *TINY], "dlx train: error: sweep=NAME runs an Optuna search over many jobs: add -m"),
        (["-m", "sweep=mlp_search", "dataset.val_size=99999", *TINY, "logger=none", "hydra.sweep.dir=s4"],
         "dlx train: error: sweep mlp_search: 3 trials in a row failed; see the jobs' train.log in s4"),
    ]
    for args, expected in cases:
        proc = dlx("train", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1].startswith(expected), (args, proc.stderr)


def test_a_sweep_stopped_by_its_own_error_leaves_no_running_parent_run(dlx, workdir):
    """Hydra makes the MLflow parent run before it checks the batch's overrides: a bad one must
    not leave a sweep directory and a parent run RUNNING forever. A sweep that launched jobs
    keeps what they made, and its parent run ends FAILED."""
    from mlflow.tracking import MlflowClient

    proc = dlx("train", "-m", "hydra/launcher=joblib", "model=mlp,nope", *TINY, "hydra.sweep.dir=bad")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("dlx train: error: unknown model 'nope'")
    assert not (workdir / "bad").exists()
    client = MlflowClient(f"sqlite:///{workdir / 'outputs/mlflow.db'}")
    experiment = client.get_experiment_by_name("dlx").experiment_id
    assert client.search_runs([experiment]) == []  # the parent run is deleted
    assert [r.info.status for r in client.search_runs([experiment], run_view_type=3)] == ["FAILED"]

    proc = dlx("train", "-m", "sweep=mlp_search", "dataset.val_size=99999", *TINY, "hydra.sweep.dir=gave_up")
    assert proc.returncode == 2 and "3 trials in a row failed" in proc.stderr
    assert (workdir / "gave_up/optuna.db").is_file()  # its study (3 failed trials) stays
    parents = [r for r in client.search_runs([experiment]) if r.data.tags.get("dlx.role") == "sweep"]
    assert [r.info.status for r in parents] == ["FAILED"]


def test_search_space_checks():
    from hydra_plugins.dlx_optuna_sweeper.optuna_sweeper import distributions
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from dlx.errors import DlxError

    dists, texts = distributions({
        "optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        "trainer.batch_size": {"type": "int", "low": 32, "high": 256, "step": 32},
        "model.hidden": {"type": "categorical", "choices": [[64], [128, 64]]},
    })
    assert dists["optimizer.lr"] == FloatDistribution(1e-4, 0.1, log=True)
    assert dists["trainer.batch_size"] == IntDistribution(32, 256, step=32)
    assert isinstance(dists["model.hidden"], CategoricalDistribution)
    assert list(texts["model.hidden"].values()) == ["[64]", "[128,64]"]  # what the jobs get as overrides
    for bad, message in [
        ({}, "sweep.params: the search space is empty"),
        ({"a": {"type": "int", "low": 5, "high": 2}}, "sweep.params.a: low (5) must be below high (2)"),
        ({"a": {"type": "float", "low": 0, "high": 1, "log": True}}, "sweep.params.a: log scale needs low > 0"),
        ({"a": {"type": "float", "low": 0}}, "sweep.params.a: type float needs high"),
        ({"a": {"type": "normal"}}, "sweep.params.a: unknown type 'normal'"),
        ({"a": {"type": "categorical", "choices": []}}, "sweep.params.a: choices must be a non-empty list"),
        ({"a": [1, 2]}, "sweep.params.a: expected {type: float|int|categorical, ...}"),
    ]:
        with pytest.raises(DlxError) as err:
            distributions(bad)
        assert str(err.value).startswith(message), err.value


# --------------------------------------------------------------------------- devices
def test_gpu_per_job_from_job_number_and_visible_gpus(tmp_path, monkeypatch):
    from dlx.training import device

    assert device.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2"}) == ["0", "1", "2"]
    assert device.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert [device.gpu_for_job(n, ["0", "1", "2"]) for n in range(5)] == ["0", "1", "2", "0", "1"]
    assert device.gpu_for_job(3, []) is None

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    env = {"CUDA_VISIBLE_DEVICES": "4,5"}
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as in a fresh worker process
    assert device.pin_job_gpu(3, joblib, env) == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"
    assert device.pin_job_gpu(3, device.BASIC_LAUNCHER, {"CUDA_VISIBLE_DEVICES": "4,5"}) is None  # in-process jobs
    slurm = {"CUDA_VISIBLE_DEVICES": "4,5", "SLURM_JOB_ID": "1"}
    assert device.pin_job_gpu(3, joblib, slurm) is None and slurm["CUDA_VISIBLE_DEVICES"] == "4,5"

    # no CUDA_VISIBLE_DEVICES: count the GPUs with nvidia-smi (faked here: a server with 2)
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: H100 (UUID: a)'\necho 'GPU 1: H100 (UUID: b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    env = {}
    assert device.visible_gpus(env) == ["0", "1"]
    assert device.pin_job_gpu(5, joblib, env) == "1" and env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_parallel_jobs_share_the_cpu_cores():
    from dlx.training import device

    joblib = {"_target_": "hydra_plugins.dlx_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}
    assert device.threads_per_job(joblib, {}, cores=2) == 1
    assert device.threads_per_job(joblib | {"n_jobs": 4}, {}, cores=16) == 4
    assert device.threads_per_job(joblib | {"n_jobs": 8}, {}, cores=2) == 1  # never 0
    assert device.threads_per_job(joblib | {"n_jobs": -1}, {}, cores=8) == 1  # joblib's -1: one job per core
    assert device.threads_per_job(joblib | {"n_jobs": 1}, {}, cores=8) is None  # one job at a time: TF's default
    assert device.threads_per_job(joblib, {"SLURM_JOB_ID": "7"}, cores=8) is None  # Slurm's cpus_per_task decide
    assert device.threads_per_job({"_target_": device.BASIC_LAUNCHER}, {}, cores=8) is None
    assert device.threads_per_job({"_target_": "x.SubmititLocalLauncher", "timeout_min": 60}, {}, cores=8) is None


def test_later_in_process_jobs_still_free_the_earlier_jobs_models():
    """The first job in a process keeps what exists then (the imports) out of garbage collection,
    which made each later job's start ~0.4 s quicker; what jobs make (a model's reference cycles)
    must still be freed when the next job starts."""
    import gc
    import weakref

    from dlx.training import device

    device.seed_everything(0)
    assert gc.get_freeze_count() > 0

    class Layer:
        pass

    gc.disable()  # no automatic collection in between: only the next job's start may free it
    try:
        a, b = Layer(), Layer()
        a.peer, b.peer = b, a
        ref = weakref.ref(a)
        del a, b
        assert ref() is not None
        device.seed_everything(0)
        assert ref() is None
    finally:
        gc.enable()


def test_start_up_collects_garbage_less_often_until_the_training_starts(tmp_path, monkeypatch):
    """`dlx` raises the collector's thresholds while TensorFlow, Keras and MLflow load (they cost
    1.5 s of ~4.9 s of CPU here with the defaults); a job brings the process's own back before
    it trains, and `end` with nothing begun changes nothing."""
    import gc

    from conftest import tiny_cfg
    from dlx import startup
    from dlx.commands.train import train
    from dlx.training import loop

    own = gc.get_threshold()
    startup.end()  # nothing begun: nothing changes
    assert gc.get_threshold() == own
    seen = []
    real_fit = loop.fit

    def fit(*args, **kwargs):
        seen.append(gc.get_threshold())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(loop, "fit", fit)
    startup.begin()
    try:
        startup.begin()  # a second begin keeps the thresholds to restore
        assert gc.get_threshold() == startup.STARTUP_THRESHOLDS != own
        train(tiny_cfg("trainer.epochs=1"), tmp_path / "run")
    finally:
        startup.end()
    assert seen == [own]
    assert gc.get_threshold() == own


def test_threads_option_is_used_and_checked(dlx, workdir):
    dlx("train", *TINY, "trainer.epochs=1", "logger=none", "trainer.threads=1", "hydra.run.dir=r", check=True)
    assert metrics(workdir / "r")["test_accuracy"] > 0.3
    assert "TensorFlow CPU threads: 1 within ops, 1 across ops" in (workdir / "r/train.log").read_text()
    bad = dlx("train", *TINY, "trainer.threads=0", "logger=none", "hydra.run.dir=bad")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith(
        "trainer.threads: expected a positive number of threads or null, got 0")
    assert not (workdir / "bad").exists()


def test_gpu_options_fall_back_to_cpu_with_one_line_each(dlx, workdir):
    dlx("train", *TINY, "trainer.epochs=1", "logger=none", "trainer.strategy=mirrored", "trainer.precision=mixed_float16",
        "trainer.devices=[0]", "trainer.jit_compile=true", "hydra.run.dir=r", check=True)
    log = (workdir / "r/train.log").read_text()
    for line in ("trainer.devices=[0]: no GPU in use, running on CPU",
                 "trainer.strategy=mirrored: no GPU in use, running on CPU with the default strategy",
                 "trainer.precision=mixed_float16: no GPU in use, running in float32 on CPU"):
        assert log.count(line) == 1, line
    assert metrics(workdir / "r")["test_accuracy"] > 0.3


# --------------------------------------------------------------------------- dashboards
def test_hparams_for_tensorboard_and_runs_table(dlx, workdir):
    dlx("train", "-m", *TINY, "trainer.epochs=1", "logger=tensorboard", "optimizer.lr=0.01,0.2",
        "hydra.sweep.dir=sweep", check=True)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for job in job_dirs(workdir / "sweep").values():
        acc = EventAccumulator(str(job / "tb"))
        acc.Reload()
        plugins = acc.PluginTagToContent("hparams")
        assert "_hparams_/session_start_info" in plugins
        start = plugins["_hparams_/session_start_info"]
        from tensorboard.plugins.hparams import plugin_data_pb2

        info = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info
        assert info.group_name == job.name.split("_", 1)[1]
        assert "optimizer.lr" in info.hparams and "model.name" in info.hparams
        assert "final/test_accuracy" in acc.Tags()["tensors"]

    md = dlx("runs", "sweep", "--format", "markdown", check=True).stdout
    lines = md.strip().splitlines()
    assert lines[0] == "All runs: `trainer.epochs=1 trainer.batch_size=64 trainer.device=cpu logger=tensorboard`"
    rows = [line for line in lines if line.startswith("| ") and "optimizer.lr=" in line]
    assert len(rows) == 2
    values = [float(r.split("|")[3]) for r in rows]
    assert values == sorted(values)  # best (lowest val_loss) first
    csv_out = dlx("runs", "sweep", "--format", "csv", check=True).stdout.splitlines()
    assert csv_out[0] == "run,overrides,best_val_loss,test,epochs,seconds,status" and len(csv_out) == 3

    assert dlx("runs", "nowhere").returncode == 2
