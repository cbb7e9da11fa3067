"""What a sweep's jobs share: the MLflow parent run (its file and the retry on a locked store are
in tracking.py) and the Optuna study.

The parent run is made by a Hydra callback in the process that launches the sweep, before any
job starts (so the store's tables exist before parallel jobs open it); its id is written to
`<sweep dir>/mlflow_parent.json`, where every job, in whatever process or host, finds it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from dlx.tracking import PARENT_FILE, parent_run, retry_locked

log = logging.getLogger(__name__)

STUDY_FILE = "optuna.db"


class PrunedValue(float):
    """A trial's value when Optuna's pruner stopped it early (a float, so any sweeper can use it)."""

    pruned = True

    def __reduce__(self):  # picklable across launcher processes
        return (PrunedValue, (float(self),))


# --------------------------------------------------------------------------- MLflow parent run
class SweepStart:
    """What this process's sweep made before its jobs: its directory (when new) and the MLflow
    parent run, for `abandon` to take back when the sweep stops on an error of its own."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.dir: Path | None = None
        self.new_dir = False
        self.parent: dict | None = None  # {"run_id", "tracking_uri"}
        self.made_parent = False


STARTED = SweepStart()


def abandon(status: str = "FAILED") -> None:
    """A sweep stopped by an error of its own (a bad override found while Hydra checks the batch,
    a sweeper that gave up, Ctrl-C): if no job had started, its new directory and MLflow parent
    run are removed; otherwise the parent run ends `status` (FAILED, or KILLED) instead of staying
    RUNNING. A joblib sweep's workers still warming up are stopped."""
    import shutil
    import sys

    launcher = sys.modules.get("hydra_plugins.dlx_joblib_launcher.joblib_launcher")
    if launcher is not None:
        launcher.WARMUP.stop()
    start, sweep_dir = STARTED, STARTED.dir
    if sweep_dir is None:
        return
    # anything beyond what Hydra and the parent run write first: job directories, an Optuna study
    launched = sweep_dir.is_dir() and any(p.name not in (PARENT_FILE, "multirun.yaml") for p in sweep_dir.iterdir())
    if start.parent is not None:
        from mlflow.tracking import MlflowClient

        client, run_id = MlflowClient(start.parent["tracking_uri"]), start.parent["run_id"]
        retry_locked(lambda: client.set_terminated(run_id, status))
        if start.made_parent and not launched:
            retry_locked(lambda: client.delete_run(run_id))
    if start.new_dir and not launched:
        shutil.rmtree(sweep_dir, ignore_errors=True)
    STARTED.reset()


class MlflowSweepCallback(Callback):
    """One MLflow parent run per sweep (`hydra.callbacks.mlflow_sweep`); jobs become its children."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        STARTED.dir, STARTED.new_dir = sweep_dir, not sweep_dir.exists()
        mlcfg = config.logger.mlflow
        if not mlcfg.enabled:
            return
        from mlflow.tracking import MlflowClient

        from dlx import tracking

        sweep_dir.mkdir(parents=True, exist_ok=True)
        uri = tracking.tracking_uri(mlcfg.tracking_uri)
        existing = parent_run(sweep_dir)
        if existing is not None and existing["tracking_uri"] == uri:  # a resumed sweep keeps its parent
            MlflowClient(uri).update_run(existing["run_id"], status="RUNNING")
            STARTED.parent = existing
            return
        experiment_id = tracking.experiment_id(uri, mlcfg.experiment)
        overrides = list(config.hydra.overrides.task)
        tags = {"dlx.sweep_id": sweep_dir.name, "dlx.sweep_dir": str(sweep_dir.resolve()), "dlx.role": "sweep",
                "dlx.overrides": " ".join(overrides)[:5000]}
        client = MlflowClient(uri)
        run = retry_locked(lambda: client.create_run(experiment_id, run_name=f"sweep {sweep_dir}", tags=tags))
        STARTED.parent, STARTED.made_parent = {"run_id": run.info.run_id, "tracking_uri": uri}, True
        (sweep_dir / PARENT_FILE).write_text(json.dumps(STARTED.parent) + "\n")

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        STARTED.reset()  # the sweep ran to its end: nothing to take back
        info = parent_run(Path(config.hydra.sweep.dir))
        if info is None:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(info["tracking_uri"])
        summary = summarize(Path(config.hydra.sweep.dir))
        if summary:
            retry_locked(lambda: client.log_metric(info["run_id"], "jobs_finished", summary["finished"]))
            if summary.get("best") is not None:
                retry_locked(lambda: client.log_metric(info["run_id"], summary["metric"], summary["best"]))  # best_<monitor>
        retry_locked(lambda: client.set_terminated(info["run_id"], "FINISHED"))


def summarize(sweep_dir: Path) -> dict:
    """Finished jobs of a sweep and the best value of their target metric."""
    from dlx.config import higher_is_better
    from dlx.rundir import collect

    rows = collect(sweep_dir)
    done = [r for r in rows if r.status == "finished" and r.value is not None]
    if not rows:
        return {}
    metric = rows[0].metric
    best = None
    if done:
        pick = max if higher_is_better(metric) else min
        best = pick(r.value for r in done)
    return {"finished": len(done), "metric": metric, "best": best}


# --------------------------------------------------------------------------- Optuna
def storage_url(storage: str | None, sweep_dir: Path) -> str:
    return storage or f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"


def open_storage(url: str):
    """An Optuna RDB storage; SQLite waits up to a minute for a lock instead of failing."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def enum_name(value: Any) -> str:
    """An enum member's name (typed config), or the text itself."""
    return str(getattr(value, "name", value))


def make_pruner(sweep_cfg):
    """The study's pruner. Optuna does not store it with the study: the sweeper and every job
    build it from the same `sweep` config."""
    import optuna

    name = enum_name(sweep_cfg["pruner"])
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(sweep_cfg["startup_trials"]),
                                           n_warmup_steps=int(sweep_cfg["warmup_epochs"]))
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def make_sampler(sweep_cfg):
    import optuna

    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return samplers[enum_name(sweep_cfg["sampler"])](seed=int(sweep_cfg["seed"]))


def job_trial(sweep_cfg: dict, sweep_dir: Path):
    """The Optuna trial this job runs (set by the sweeper through `sweep.trial`), or None."""
    if sweep_cfg is None or sweep_cfg.get("trial") is None:
        return None
    import optuna

    storage = open_storage(storage_url(sweep_cfg.get("storage"), sweep_dir))
    study = optuna.load_study(study_name=sweep_cfg["name"], storage=storage, pruner=make_pruner(sweep_cfg))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(sweep_cfg["trial"]))
    return optuna.trial.Trial(study, trial_id)


def pruning_callback(trial, monitor: str):
    """A Keras callback reporting `monitor` to the trial each epoch and stopping it when the
    study's pruner says so (the job then ends normally, marked pruned)."""
    import keras

    class OptunaPruning(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.pruned_at: int | None = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None:
                return
            retry_locked(lambda: trial.report(float(value), epoch), what="optuna")
            if retry_locked(trial.should_prune, what="optuna"):
                self.pruned_at = epoch + 1
                self.model.stop_training = True
                log.info("optuna: trial %d pruned after epoch %d (%s=%.4f)", trial.number, epoch + 1, monitor, value)

    return OptunaPruning()
