"""`hydra/launcher=joblib`: Hydra's joblib launcher, with its worker processes started early and
quick to exit.

The plugin starts its loky workers when it launches the first batch, after the launching process
has made the sweep's MLflow parent run and composed every job's config (Hydra validates the whole
batch first); each worker then imports TensorFlow, Keras and MLflow before its first job. Here the
`WarmWorkers` callback (or else the launcher's `setup`) sends one warm-up task per worker, through
the launch's own joblib settings, from a background thread: the launch reuses those workers
(joblib keeps an executor whose settings have not changed), and their imports overlap the
launching process's work. A warmed worker also exits at once when the sweep is over, instead of
tearing TensorFlow down while the launching process waits.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import os
import sys
import threading
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as PluginJoblibLauncher

log = logging.getLogger(__name__)

# what a job imports before it trains (the heavy parts: TensorFlow, Keras, MLflow's SQL store,
# matplotlib, scikit-learn's loaders), in the order a job imports them
WARM_MODULES = ("dlx.commands.train", "dlx.config", "dlx.sweeps", "dlx.data.datasets", "dlx.tracking",
                "mlflow", "mlflow.store.tracking.sqlalchemy_store", "sklearn.datasets", "sklearn.model_selection")
WARM_TENSORFLOW = ("tensorflow", "keras", "dlx.models", "dlx.training.device", "dlx.training.optim",
                   "dlx.training.loop", "mlflow.keras", "tensorboard.plugins.hparams.api")


def warm_worker(tensorflow: bool, launcher_pid: int) -> int:
    """Import what a job will need, in a worker process, before its first job arrives. TensorFlow is
    left out when GPUs are visible: a job can pin its GPU only before TensorFlow starts."""
    from dlx import startup

    worker = os.getpid() != launcher_pid  # joblib may run tasks in the launching process
    if worker:
        startup.begin()  # fewer collections during the imports
    for name in WARM_MODULES + (WARM_TENSORFLOW if tensorflow else ()):
        importlib.import_module(name)
    from dlx import plots

    plots.pyplot()
    if worker:
        # the imports live as long as the worker: keep them out of every later garbage collection
        # (loky collects after tasks; Keras at each job's start)
        gc.freeze()
        startup.end()
        atexit.register(exit_quickly)  # registered last, so it runs first
    return os.getpid()


def exit_quickly() -> None:
    """A worker's exit, once its jobs are done: flush the logs, then end the process without
    tearing TensorFlow and MLflow down module by module (over a second, which the launching
    process waits for). Each job has closed its files and ended its runs by then."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def workers(n_jobs: int) -> int:
    """How many worker processes joblib starts for `n_jobs` (-1: one per core, as joblib counts them)."""
    import joblib

    from dlx.training.device import jobs_at_once

    return jobs_at_once(n_jobs, joblib.cpu_count())


def joblib_settings(launcher: dict[str, Any]) -> dict[str, Any]:
    """joblib.Parallel's arguments from the launcher's config, exactly as the plugin's launch makes
    them: the same settings are what lets the launch reuse the warmed workers."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    settings = {k: v for k, v in launcher.items() if k != "_target_"} | {"backend": "loky"}
    process_joblib_cfg(settings)
    return settings


class Warmup:
    """The warm-up of a sweep's workers: one warm-up task per worker, sent from a background thread
    of the launching process through the launch's own joblib settings."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.pids: list[int] = []  # the warmed workers' process ids

    def start(self, settings: dict[str, Any]) -> None:
        n_jobs = settings.get("n_jobs")
        if self.thread is not None or not isinstance(n_jobs, int) or workers(n_jobs) < 2:
            return  # one job at a time runs in the launching process: nothing to warm
        self.thread = threading.Thread(target=self._run, args=(settings,), name="dlx-warm-workers", daemon=True)
        self.thread.start()

    def _run(self, settings: dict[str, Any]) -> None:
        from joblib import Parallel, delayed

        from dlx.training import device

        tensorflow = not device.visible_gpus()
        try:
            tasks = (delayed(warm_worker)(tensorflow, os.getpid()) for _ in range(workers(settings["n_jobs"])))
            self.pids = Parallel(**settings)(tasks)
        except Exception as exc:  # the launch itself reports whatever keeps workers from starting
            log.debug("warming the joblib workers failed: %s", exc)

    def stop(self) -> None:
        """The sweep ended before its launch (a bad override, Ctrl-C): end the workers still
        importing now, rather than make the launching process wait for them at exit."""
        if self.thread is None:
            return
        executor = getattr(sys.modules.get("joblib.externals.loky.reusable_executor"), "_executor", None)
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)
        self.thread.join(timeout=30)
        self.thread = None

    def wait(self) -> list[int]:
        """Wait for the warm-up to end (two joblib calls must not share the workers at once)."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        return self.pids


WARMUP = Warmup()
TARGET = f"{__name__}.JoblibLauncher"


class WarmWorkers(Callback):
    """Starts the warm-up when the sweep starts (`hydra.callbacks.warm_workers`, listed first),
    before the other callbacks' work (the MLflow parent run) and before Hydra sets the launcher up."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        if config.hydra.launcher.get("_target_") == TARGET:  # other launchers' configs are left unresolved
            WARMUP.start(joblib_settings(OmegaConf.to_container(config.hydra.launcher, resolve=True)))


class JoblibLauncher(PluginJoblibLauncher):
    """The joblib plugin's launcher; its workers warm up while the sweep is being prepared."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        WARMUP.start(self.settings())  # where the callback is not configured

    def settings(self) -> dict[str, Any]:
        return joblib_settings(dict(self.joblib))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        WARMUP.wait()
        from dlx import startup

        startup.end()  # the launching process's start-up: the sweep is prepared, its jobs start
        return super().launch(job_overrides, initial_job_idx)
