"""`hydra/launcher=joblib`: Hydra's joblib launcher, with its worker processes started early and
stopped at once.

The plugin starts its loky workers when it launches the first batch, after the launching process
has composed every job's config (Hydra validates the whole batch first) and made the sweep's
MLflow parent run; each worker then imports TensorFlow, Keras and MLflow before its first job.
Here `setup`, which Hydra calls before all of that, sends one warm-up task per worker through the
same joblib settings in a background thread: the launch reuses those workers (joblib keeps an
executor whose settings have not changed), and their imports overlap the launching process's
work. A warmed worker also exits at once when the sweep is over, instead of tearing TensorFlow
down while the launching process waits.
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

from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as PluginJoblibLauncher

log = logging.getLogger(__name__)

# what a job imports before it trains (the heavy parts: TensorFlow, Keras, MLflow's SQL store,
# matplotlib, scikit-learn's loaders), in the order a job imports them
WARM_MODULES = ("dlx.commands.train", "dlx.config", "dlx.sweeps", "dlx.data.datasets", "dlx.tracking",
                "mlflow", "mlflow.store.tracking.sqlalchemy_store", "sklearn.datasets", "sklearn.model_selection")
WARM_TENSORFLOW = ("tensorflow", "keras", "dlx.models", "dlx.training.device", "dlx.training.optim",
                   "dlx.training.loop", "mlflow.keras", "tensorboard.plugins.hparams.api")


def warm_worker(tensorflow: bool) -> int:
    """Import what a job will need, in a worker process, before its first job arrives. TensorFlow is
    left out when GPUs are visible: a job can pin its GPU only before TensorFlow starts."""
    for name in WARM_MODULES + (WARM_TENSORFLOW if tensorflow else ()):
        importlib.import_module(name)
    from dlx import plots

    plots.pyplot()
    # the imports live as long as the worker: keep them out of every later garbage collection
    # (loky collects after tasks; Keras at each job's start)
    gc.freeze()
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
    """How many worker processes joblib starts for `n_jobs` (-1: one per core)."""
    import joblib

    return n_jobs if n_jobs > 0 else max(joblib.cpu_count() + 1 + n_jobs, 1)


class JoblibLauncher(PluginJoblibLauncher):
    """The joblib plugin's launcher; its workers warm up while the sweep is being prepared."""

    _warming: threading.Thread | None = None
    warmed: list[int] = []  # the process ids of the warmed workers

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        settings = self.settings()
        if isinstance(settings.get("n_jobs"), int) and workers(settings["n_jobs"]) > 1 and self._warming is None:
            self._warming = threading.Thread(target=self._warm, args=(settings,), name="dlx-warm-workers", daemon=True)
            self._warming.start()

    def settings(self) -> dict[str, Any]:
        """joblib.Parallel's arguments, exactly as the plugin's launch makes them (the same
        settings are what lets the launch reuse the warmed workers)."""
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

        settings = dict(self.joblib) | {"backend": "loky"}
        process_joblib_cfg(settings)
        return settings

    def _warm(self, settings: dict[str, Any]) -> None:
        from joblib import Parallel, delayed

        from dlx.training import device

        tensorflow = not device.visible_gpus()
        try:
            self.warmed = Parallel(**settings)(delayed(warm_worker)(tensorflow) for _ in range(workers(settings["n_jobs"])))
        except Exception as exc:  # the launch itself reports whatever keeps workers from starting
            log.debug("warming the joblib workers failed: %s", exc)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        if self._warming is not None:
            self._warming.join()
        return super().launch(job_overrides, initial_job_idx)
