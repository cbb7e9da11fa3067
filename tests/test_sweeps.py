"""Sweeps and launchers (in-process, joblib, submitit, Ray, Optuna), MLflow parent/child runs, HParams, `dlx runs`."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY
from helpers import SCORES, SMALL, free_port, job_dirs, metrics, mlflow_runs, start, wait_for


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
    client, runs = mlflow_runs(workdir)
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

    from dlx import schemas
    from hydra_plugins.dlx_joblib_launcher import JoblibLauncher

    settings = OmegaConf.to_container(OmegaConf.load(schemas.conf_dir() / "hydra/launcher/joblib.yaml"))
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

    from dlx import schemas

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # warmed without TensorFlow, quicker here
    schemas.register()
    with initialize_config_dir(config_dir=str(schemas.conf_dir()), version_base="1.3"):
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
def test_ray_launcher_runs_a_two_job_sweep_on_a_ray_head(dlx, workdir):
    """Against a Ray head started here (`ray start --head` on 127.0.0.1), as on a cluster."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='the Ray launcher is an extra: pip install -e ".[ray]"')
    import shutil
    import tempfile

    ray = str(Path(sys.executable).with_name("ray"))
    short = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    port = free_port()
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                           "--include-dashboard=false", f"--temp-dir={short}"], capture_output=True, text=True,
                          timeout=180, env=env)
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        dlx("train", "-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}", *TINY,
            "trainer.epochs=1", "logger=none", "model=softmax,mlp", "hydra.sweep.dir=sweep", check=True, timeout=600)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(short, ignore_errors=True)
    jobs = job_dirs(workdir / "sweep")
    assert sorted(jobs) == [0, 1] and all(metrics(d)["test_accuracy"] > 0.1 for d in jobs.values())


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
    client, runs = mlflow_runs(workdir)
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
    assert set(states) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states, states
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


@pytest.mark.slow
def test_a_journal_storage_and_a_sampler_by_target_run_a_search(dlx, workdir):
    import optuna

    dlx("train", "-m", "sweep=mlp_search", "sweep.n_trials=2", "sweep.storage=journal:studies/mlp.log",
        "+sweep.sampler._target_=optuna.samplers.QMCSampler", "+sweep.sampler.scramble=true", *TINY, "trainer.epochs=1",
        "logger=none", "hydra.sweep.dir=journal", check=True)
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(workdir / "studies/mlp.log")))
    study = optuna.load_study(study_name="mlp_search", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert not (workdir / "journal/optuna.db").exists()  # the study is in the journal file only


def test_samplers_by_name_or_target_and_their_checks():
    import optuna

    from dlx import sweeps
    from dlx.errors import DlxError

    base = {"seed": 3, "n_jobs": 1, "params": {"model.hidden": {"type": "categorical", "choices": [[64], [128]]},
                                               "trainer.batch_size": {"type": "int", "low": 32, "high": 96, "step": 32}}}
    for name, cls in [("tpe", "TPESampler"), ("random", "RandomSampler"), ("qmc", "QMCSampler"), ("grid", "GridSampler"),
                      ("cmaes", "CmaEsSampler")]:
        assert type(sweeps.make_sampler(base | {"sampler": name})).__name__ == cls
    assert sweeps.make_sampler(base | {"sampler": "tpe", "n_jobs": 2})._constant_liar is True  # batched TPE
    explicit = {"_target_": "optuna.samplers.TPESampler", "constant_liar": False}
    assert sweeps.make_sampler(base | {"sampler": explicit, "n_jobs": 2})._constant_liar is False  # what the user set wins
    grid = sweeps.make_sampler(base | {"sampler": "grid"})
    assert grid._search_space == {"model.hidden": [[64], [128]], "trainer.batch_size": [32, 64, 96]}
    by_target = sweeps.make_sampler(base | {"sampler": {"_target_": "optuna.samplers.TPESampler", "n_startup_trials": 4}})
    assert isinstance(by_target, optuna.samplers.TPESampler) and by_target._n_startup_trials == 4
    bad = [({"_target_": "os.system", "command": "true"}, "expected one of tpe, random, cmaes, grid, qmc, gp"),
           ("annealing", "expected one of tpe"),
           ({"_target_": "optuna.samplers.TPESampler", "bogus": 1}, "TPESampler takes no argument bogus")]
    for sampler, message in bad:
        with pytest.raises(DlxError, match=re.escape(message)):
            sweeps.make_sampler(base | {"sampler": sampler})
    with pytest.raises(DlxError, match="sampler=grid needs categorical choices or an int range; got a float range"):
        sweeps.make_sampler(base | {"sampler": "grid", "params": {"optimizer.lr": {"type": "float", "low": 0.1, "high": 1}}})
    with pytest.raises(DlxError, match="sweep.storage: expected sqlite"):
        sweeps.storage_url("redis://127.0.0.1", Path("."))
    assert sweeps.storage_url("journal:///tmp/x.log", Path(".")) == "journal:/tmp/x.log"


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


@pytest.mark.slow
def test_runs_grouped_by_a_key_give_mean_and_std_over_seeds(dlx, workdir):
    dlx("train", "-m", "model=softmax,mlp", "trainer.seed=1,2", *TINY, "logger=none", "hydra.sweep.dir=g", check=True)
    out = dlx("runs", "g", "--group-by", "model", "--format", "csv", check=True).stdout.splitlines()
    assert out[0] == "runs,group,best_val_loss (mean),test (mean),epochs,seconds,std"
    rows = {line.split(",")[1]: line.split(",") for line in out[1:]}
    assert set(rows) == {"model=softmax", "model=mlp"} and all(r[0] == "2 runs" for r in rows.values())
    for model, row in rows.items():
        values = [metrics(d)["best_val_loss"] for d in job_dirs(workdir / "g").values() if model in d.name]
        assert float(row[2]) == pytest.approx(sum(values) / 2, abs=1e-4)
        assert float(row[6].lstrip("± ")) == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-4)
    bad = dlx("runs", "g", "--group-by", "optimizer.lr")
    assert bad.returncode == 2 and "no finished run sets optimizer.lr" in bad.stderr
