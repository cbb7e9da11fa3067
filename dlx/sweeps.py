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

from dlx.errors import DlxError
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
STORAGE_SCHEMES = ("sqlite:", "postgresql", "mysql", "journal:")


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    if not storage:
        return f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"
    if not str(storage).startswith(STORAGE_SCHEMES):
        raise DlxError(f"sweep.storage: expected sqlite:///FILE, postgresql://..., mysql://... or journal:FILE, got '{storage}'")
    if storage.startswith("journal:"):  # an absolute path, the same for every job wherever it runs
        path = storage.removeprefix("journal:")
        return "journal:" + str(Path(path[2:] if path.startswith("//") else path).expanduser().resolve())
    return storage


def open_storage(url: str):
    """Optuna's storage: a journal file, or an RDB (SQLite waits up to a minute for a lock)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
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


SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "grid": "GridSampler",
            "qmc": "QMCSampler", "gp": "GPSampler"}


def make_sampler(sweep_cfg):
    """The study's sampler: a name from SAMPLERS, or `{_target_: optuna.samplers.NAME, ...}` with
    its arguments (only Optuna's samplers). `seed` is passed where the sampler takes one."""
    import importlib.util
    import inspect

    import optuna

    chosen = sweep_cfg["sampler"]
    if hasattr(chosen, "items"):
        kwargs = {str(k): v for k, v in dict(chosen).items()}
        target = str(kwargs.pop("_target_", ""))
        name = target.removeprefix("optuna.samplers.") if target.startswith("optuna.samplers.") else None
    else:
        kwargs, name = {}, SAMPLERS.get(str(getattr(chosen, "name", chosen)))
    if name not in SAMPLERS.values():
        raise DlxError(f"sweep.sampler: expected one of {', '.join(SAMPLERS)} or {{_target_: optuna.samplers.NAME}} with NAME one of "
                       f"{', '.join(SAMPLERS.values())}; got {chosen}")
    cls = getattr(optuna.samplers, name)
    accepted = inspect.signature(cls).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise DlxError(f"sweep.sampler: {name} takes no argument {unknown[0]} (it takes {', '.join(accepted)})")
    if "seed" in accepted:
        kwargs.setdefault("seed", int(sweep_cfg["seed"]))
    if name == "TPESampler" and int(sweep_cfg.get("n_jobs", 1)) > 1:
        kwargs.setdefault("constant_liar", True)
    if name == "GridSampler":
        kwargs.setdefault("search_space", grid_space(sweep_cfg["params"]))
    needs = {"CmaEsSampler": ("cmaes",), "GPSampler": ("torch", "scipy")}.get(name, ())
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:  # Optuna would fail only when the first trial is sampled
        raise DlxError(f"sweep.sampler: {name} needs {' and '.join(missing)}, which is not installed (pip install {' '.join(missing)})")
    try:
        return cls(**kwargs)
    except (ImportError, TypeError, ValueError) as exc:  # cmaes / torch not installed, bad arguments
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DlxError(f"sweep.sampler: {name}: {first}") from None


def grid_space(params) -> dict[str, list]:
    """The grid of a search space: categorical choices, or an int range with its step."""
    space = {}
    for key, p in dict(params).items():
        kind = str(p.get("type"))
        if kind == "categorical":
            space[key] = list(p["choices"])
        elif kind == "int":
            space[key] = list(range(int(p["low"]), int(p["high"]) + 1, int(p.get("step") or 1)))
        else:
            raise DlxError(f"sweep.params.{key}: sampler=grid needs categorical choices or an int range; got a {kind} range")
    return space


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
