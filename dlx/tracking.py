"""TensorBoard and MLflow wiring for a training run.

TensorBoard: Keras' own callback writes per-epoch scalars (train/ and validation/), the model
graph and, at the end, the confusion-matrix image (test/). MLflow: params = the flattened config,
per-epoch metrics through mlflow's Keras callback, final test metrics and the run's artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, TypeVar

from dlx.errors import DlxError

PARENT_FILE = "mlflow_parent.json"  # <sweep dir>/: the sweep's MLflow parent run, for every job
T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_STORE = "outputs/mlflow.db"



def retry_locked(fn: Callable[[], T], attempts: int = 30, what: str = "mlflow") -> T:
    """Call `fn`, retrying while an SQLite store is locked by another process (random backoff)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # mlflow wraps sqlalchemy's OperationalError in its own types
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
            log.debug("%s store locked, retrying in %.2fs", what, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def sweep_dir_of_job() -> Path | None:
    """The sweep directory when running as a multirun job, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    return Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None


def job_number() -> int:
    from hydra.core.hydra_config import HydraConfig

    try:
        return int(HydraConfig.get().job.num)
    except (ValueError, TypeError):
        return 0


def parent_run(sweep_dir: Path | None) -> dict | None:
    path = sweep_dir / PARENT_FILE if sweep_dir is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': 1, 'c': [1, 2]} (lists stay whole, as MLflow params)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def tracking_uri(cfg_uri: str | None) -> str:
    """Config key, else $MLFLOW_TRACKING_URI, else an SQLite store under ./outputs."""
    uri = cfg_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return "sqlite:///" + str(Path(DEFAULT_STORE).resolve())


def tensorboard_image(log_dir: Path, tag: str, png: Path, step: int) -> None:
    """Write a PNG file as a TensorBoard image summary into `log_dir`."""
    import tensorflow as tf

    image = tf.io.decode_png(tf.io.read_file(str(png)), channels=4)
    with tf.summary.create_file_writer(str(log_dir)).as_default():
        tf.summary.image(tag, image[None], step=step)


def tensorboard_text(log_dir: Path, tag: str, path: Path, step: int) -> None:
    """Write a text file as a TensorBoard text summary (shown verbatim, as a code block)."""
    import tensorflow as tf

    text = path.read_text(encoding="utf-8")
    with tf.summary.create_file_writer(str(log_dir)).as_default():
        tf.summary.text(tag, "    " + text.replace("\n", "\n    "), step=step)


def experiment_id(uri: str, name: str) -> str:
    """The MLflow experiment `name` in store `uri`, created if needed. With an SQLite store its
    artifacts go next to the database instead of ./mlruns of whichever directory, and the store
    is created (or checked) by one process at a time: several jobs starting at once against a new
    store would otherwise each run MLflow's schema migrations on it."""
    from mlflow.tracking import MlflowClient

    store = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    with store_lock(uri):
        try:
            client = MlflowClient(uri)  # opening an SQLite store creates or migrates its tables
            found = retry_locked(lambda: client.get_experiment_by_name(name))
        except Exception as exc:
            if store is None:
                raise
            _repair_store(Path(uri.removeprefix("sqlite:///")), exc)
            client = MlflowClient(uri)
            found = retry_locked(lambda: client.get_experiment_by_name(name))
        if found is not None:
            return found.experiment_id
        location = (store / "mlartifacts").resolve().as_uri() if store is not None else None
        try:
            return retry_locked(lambda: client.create_experiment(name, artifact_location=location))
        except Exception:  # another process (a server's client, another host) created it first
            found = retry_locked(lambda: client.get_experiment_by_name(name))
            if found is None:
                raise
            return found.experiment_id


@contextmanager
def store_lock(uri: str):
    """An exclusive lock next to an SQLite store (`<db>.lock`) while it is created or checked."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _repair_store(db: Path, exc: Exception) -> None:
    """A store that MLflow cannot open: one left half-created by a process killed while making it
    holds no run and is made again; one that holds runs is left alone, with one line."""
    import sqlite3

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        with sqlite3.connect(db) as conn:
            runs = conn.execute("select count(*) from runs").fetchone()[0]
    except sqlite3.Error:
        runs = 0  # no runs table: the schema was never completed
    if runs:
        raise DlxError(f"{db}: MLflow cannot open this tracking store ({first}); it holds {runs} run(s), so it is left as it "
                       f"is: back it up, then `mlflow db upgrade sqlite:///{db}` or move it away")
    log.warning("%s: an incomplete MLflow store without runs (%s); making it again", db, first)
    # emptied in place, not deleted: MLflow keeps its engine (and open connections) per store URI
    with sqlite3.connect(db) as conn:
        tables = [row[0] for row in conn.execute("select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")]
        for table in tables:
            conn.execute(f'drop table if exists "{table}"')


def hparams(cfg: dict, overrides: list[str]) -> dict[str, Any]:
    """The hyperparameters shown in TensorBoard's HParams dashboard: the keys a sweep varies
    (the job's overrides) and the usual suspects, as bool/int/float/str."""
    flat = flatten(cfg)
    keys = ["model.name", "dataset.name", "optimizer.name", "optimizer.lr", "trainer.batch_size", "regularization.name"]
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in flat and key not in keys and not key.startswith(("hydra", "sweep")):
            keys.append(key)
        elif key not in flat and f"{key}.name" in flat and f"{key}.name" not in keys:  # model=cnn
            keys.append(f"{key}.name")
    out = {}
    for key in keys:
        value = flat.get(key)
        if value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def provenance(directory: Path | None = None) -> dict[str, Any]:
    """What produced a run: the git commit of the working directory (and whether it had
    uncommitted changes) when it is a repository, and the versions of dlx, Python, TensorFlow,
    Keras and MLflow (read from the installed packages: nothing is imported)."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from dlx import __version__

    out: dict[str, Any] = {"dlx_version": __version__, "python_version": platform.python_version()}
    for package in ("tensorflow", "keras", "mlflow"):
        try:
            out[f"{package}_version"] = version(package)
        except PackageNotFoundError:
            pass
    where = str(directory or Path.cwd())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                    capture_output=True, text=True, timeout=10)
            out["git_commit"] = commit.stdout.strip()
            out["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):  # no git here: no commit to record
        pass
    return out


def provenance_tags(record: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of `provenance()`: the commit under MLflow's own tag (the UI links it)."""
    tags = {f"dlx.{k}": str(v) for k, v in record.items() if k not in ("git_commit",)}
    if "git_commit" in record:
        tags["mlflow.source.git.commit"] = record["git_commit"]
    return tags


def installed_packages() -> str:
    """`pip freeze` of the running environment, from its package metadata."""
    from importlib.metadata import distributions

    names = {f"{d.metadata['Name']}=={d.version}" for d in distributions() if d.metadata["Name"]}
    return "\n".join(sorted(names, key=str.lower)) + "\n"


class Tracker:
    def __init__(self, cfg: dict, run_dir: Path, run_name: str, *, resume_run_id: str | None = None,
                 overrides: list[str] | None = None):
        self.run_dir = run_dir
        self.tb_dir = run_dir / "tb" if cfg["logger"]["tensorboard"] else None
        self.mlflow_cfg = cfg["logger"]["mlflow"]
        self.run_name = run_name
        self.cfg = cfg
        self.hparams = hparams(cfg, overrides or [])
        self.run_id: str | None = None
        self.uri: str | None = None
        self.experiment = self.mlflow_cfg["experiment"]
        self.provenance = provenance()
        self._phase_writer = None
        if self.mlflow_cfg["enabled"]:
            try:
                self._start_mlflow(cfg, run_name, resume_run_id)
            except DlxError:
                raise
            except Exception as exc:  # unreachable server, unknown scheme, unwritable store, ...
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DlxError(f"logger.mlflow: cannot use tracking store {self.uri}: {first}") from None

    # ------------------------------------------------------------------ mlflow
    def _start_mlflow(self, cfg: dict, run_name: str, resume_run_id: str | None) -> None:
        import mlflow

        self.uri = tracking_uri(self.mlflow_cfg["tracking_uri"])
        mlflow.set_tracking_uri(self.uri)
        exp = experiment_id(self.uri, self.mlflow_cfg["experiment"])
        if resume_run_id is not None:  # a resumed run goes on in its own MLflow run
            run = retry_locked(lambda: mlflow.start_run(run_id=resume_run_id))
            self.run_id = run.info.run_id
            return
        tags = {k: str(v) for k, v in cfg.get("tags", {}).items()} | {"dlx.run_dir": str(self.run_dir.resolve())}
        tags |= provenance_tags(self.provenance)
        sweep_dir = sweep_dir_of_job()
        parent = parent_run(sweep_dir)
        if sweep_dir is not None:
            tags |= {"dlx.sweep_id": sweep_dir.name, "dlx.job_num": str(job_number())}
            if cfg.get("sweep") and cfg["sweep"].get("trial") is not None:
                tags["dlx.trial"] = str(cfg["sweep"]["trial"])
        if parent is not None and parent["tracking_uri"] == self.uri:
            tags["mlflow.parentRunId"] = parent["run_id"]
        run = retry_locked(lambda: mlflow.start_run(run_name=run_name, tags=tags, experiment_id=exp))
        self.run_id = run.info.run_id
        params = {k: str(v) for k, v in flatten(cfg).items()}
        retry_locked(lambda: mlflow.log_params(params))
        retry_locked(lambda: mlflow.log_text(installed_packages(), "requirements.txt"))

    def write_run_json(self) -> None:
        """<run>/run.json: where the run is tracked and what produced it (dlx promote reads it)."""
        record = {"mlflow": {"run_id": self.run_id, "tracking_uri": self.uri, "experiment": self.experiment},
                  **self.provenance}
        (self.run_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")

    def log_model(self, spec, task: str, raw_example) -> None:
        """The run's model as an MLflow model (dlx/mlflow_model.py), or a tag saying why not."""
        if self.run_id is None:
            return
        import mlflow

        from dlx import mlflow_model

        why_not = mlflow_model.should_log(spec, task)
        if why_not is not None:
            log.info("mlflow: model.keras kept as an artifact, no MLflow model: %s", why_not)
            retry_locked(lambda: mlflow.set_tag("dlx.mlflow_model", f"none: {why_not}"))
            return
        try:
            retry_locked(lambda: mlflow_model.log_model(self.run_dir, spec, raw_example, self.cfg))
        except Exception as exc:  # the run's own files are complete; the tracking server lacks the model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("mlflow: could not log the run's MLflow model: %s", first)
            retry_locked(lambda: mlflow.set_tag("dlx.mlflow_model", f"failed: {first[:200]}"))
            return
        retry_locked(lambda: mlflow.set_tag("dlx.mlflow_model", "model (pyfunc)"))

    # ------------------------------------------------------------------ callbacks
    def callbacks(self) -> list:
        cbs: list = []
        if self.tb_dir is not None:
            cbs.append(_epoch_tensorboard(str(self.tb_dir)))
        if self.run_id is not None:
            cbs.append(_retrying_mlflow_callback())
        # Both log per epoch and their per-batch hooks do nothing; marked async-safe, they do not
        # make Keras run every batch's callbacks synchronously on the training thread.
        for cb in cbs:
            cb.async_safe = True
        return cbs

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Metrics of a phase outside the main fit (pretrain/layer1/loss, ...): TensorBoard run
        `pretrain`, and the MLflow run, under their own names."""
        if self.tb_dir is not None:
            import tensorflow as tf

            if self._phase_writer is None:
                self._phase_writer = tf.summary.create_file_writer(str(self.tb_dir / "pretrain"))
            with self._phase_writer.as_default():
                for name, value in values.items():
                    tf.summary.scalar(name, value, step=step)
            self._phase_writer.flush()
        if self.run_id is not None:
            import mlflow

            retry_locked(lambda: mlflow.log_metrics(values, step=step))

    # ------------------------------------------------------------------ end of run
    def log_image(self, tag: str, png: Path, step: int) -> None:
        """A PNG (e.g. the confusion matrix) as a TensorBoard image under tb/test."""
        if self.tb_dir is not None:
            tensorboard_image(self.tb_dir / "test", tag, png, step)

    def finish(self, metrics: dict[str, float], artifacts: list[Path], pruned: bool = False) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if self.tb_dir is not None:
            self._write_hparams(numbers)
        if self.run_id is None:
            return
        import mlflow

        retry_locked(lambda: mlflow.log_metrics(numbers))
        if pruned:
            retry_locked(lambda: mlflow.set_tag("dlx.status", "pruned"))
        for path in artifacts:
            if path.is_dir():
                retry_locked(lambda: mlflow.log_artifacts(str(path), artifact_path=path.name))
            elif path.exists():
                retry_locked(lambda: mlflow.log_artifact(str(path)))
        # a pruned trial is stopped on purpose: KILLED in MLflow's run states, tagged dlx.status=pruned
        retry_locked(lambda: mlflow.end_run("KILLED" if pruned else "FINISHED"))

    def _write_hparams(self, metrics: dict[str, float]) -> None:
        """The run's hyperparameters and final metrics for TensorBoard's HParams dashboard (a
        sweep's jobs side by side: `tensorboard --logdir <sweep dir>`)."""
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        with tf.summary.create_file_writer(str(self.tb_dir)).as_default():
            hp.hparams(self.hparams, trial_id=self.run_name)
            for name, value in metrics.items():
                if name.startswith(("test_", "best_")):
                    tf.summary.scalar(f"final/{name}", value, step=0)

    def fail(self) -> None:
        if self.run_id is not None:
            import mlflow

            mlflow.end_run("FAILED")

    def suspend(self) -> None:
        """Leave the MLflow run open (RUNNING) for `dlx train resume=DIR` to continue."""
        if self.run_id is not None:
            import mlflow

            mlflow.end_run("RUNNING")

    def describe(self) -> list[str]:
        lines = [f"run directory: {self.run_dir}"]
        if self.tb_dir is not None:
            lines.append(f"tensorboard:   tensorboard --logdir {self.tb_dir}")
        if self.run_id is not None:
            lines.append(f"mlflow run:    {self.run_id} (experiment '{self.mlflow_cfg['experiment']}')")
            lines.append(f"mlflow ui:     mlflow ui --backend-store-uri {self.uri}")
        return lines


def _epoch_tensorboard(log_dir: str):
    import keras
    import tensorflow as tf

    class EpochTensorBoard(keras.callbacks.TensorBoard):
        """Keras' TensorBoard callback, per epoch only, plus the model's op graph.

        With update_freq='epoch' Keras' `on_train_batch_end` still calls `tf.summary.scalar` for
        every value of every batch (recording nothing), and those eager calls slow small models
        (benchmarks/results/overhead.md): dropped. Keras' own train-graph export finds no graph
        on Keras 3's train function; the forward pass's graph is written instead.
        """

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self._should_write_train_graph = False
            if self.write_graph:
                self._write_forward_graph()

        def on_train_batch_end(self, batch, logs=None):
            pass

        def _write_forward_graph(self) -> None:
            try:
                specs = [tf.TensorSpec((None, *x.shape[1:]), x.dtype) for x in self.model.inputs]
            except (AttributeError, ValueError):  # a subclassed model without symbolic inputs
                return
            # model.inputs is the flattened input structure (a dict for named multi-input models)
            struct = getattr(self.model, "_inputs_struct", None)

            def forward(*xs):
                if struct is not None:
                    return self.model(keras.tree.pack_sequence_as(struct, list(xs)), training=False)
                return self.model(xs[0] if len(xs) == 1 else list(xs), training=False)

            forward = tf.function(forward)
            with self._train_writer.as_default():
                tf.summary.graph(forward.get_concrete_function(*specs).graph)

    return EpochTensorBoard(log_dir=log_dir, write_graph=True)


def _retrying_mlflow_callback():
    import mlflow
    from mlflow.keras import MlflowCallback

    class RetryingMlflowCallback(MlflowCallback):
        """mlflow's Keras callback (optimizer params and the model summary at the start), with each
        epoch's metrics written at once, waiting out a store locked by a parallel job.

        mlflow's own callback queues them for a background thread: its errors escape any retry,
        and the end of every run waited for that thread's polling timeout."""

        def on_epoch_end(self, epoch, logs=None):
            if logs:
                retry_locked(lambda: mlflow.log_metrics(dict(logs), step=epoch))

        def on_test_end(self, logs=None):
            pass  # the validation metrics are in the epoch's, as val_*, with their step

    return RetryingMlflowCallback()
