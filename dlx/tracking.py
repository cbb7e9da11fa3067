"""TensorBoard and MLflow wiring for a training run.

TensorBoard: Keras' own callback writes per-epoch scalars (train/ and validation/), the model
graph and, at the end, the confusion-matrix image (test/). MLflow: params = the flattened config,
per-epoch metrics through mlflow's Keras callback, final test metrics and the run's artifacts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dlx.errors import DlxError

log = logging.getLogger(__name__)

DEFAULT_STORE = "outputs/mlflow.db"


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


class Tracker:
    def __init__(self, cfg: dict, run_dir: Path, run_name: str):
        self.run_dir = run_dir
        self.tb_dir = run_dir / "tb" if cfg["logger"]["tensorboard"] else None
        self.mlflow_cfg = cfg["logger"]["mlflow"]
        self.run_id: str | None = None
        self.uri: str | None = None
        self._phase_writer = None
        if self.mlflow_cfg["enabled"]:
            try:
                self._start_mlflow(cfg, run_name)
            except Exception as exc:  # unreachable server, unknown scheme, unwritable store, ...
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DlxError(f"logger.mlflow: cannot use tracking store {self.uri}: {first}") from None

    # ------------------------------------------------------------------ mlflow
    def _start_mlflow(self, cfg: dict, run_name: str) -> None:
        import mlflow

        self.uri = tracking_uri(self.mlflow_cfg["tracking_uri"])
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.uri)
        name = self.mlflow_cfg["experiment"]
        if mlflow.get_experiment_by_name(name) is None and self.uri.startswith("sqlite:///"):
            # keep artifacts next to the database instead of ./mlruns of whichever directory
            store = Path(self.uri.removeprefix("sqlite:///")).parent
            mlflow.create_experiment(name, artifact_location=(store / "mlartifacts").resolve().as_uri())
        mlflow.set_experiment(name)
        tags = {k: str(v) for k, v in cfg.get("tags", {}).items()} | {"dlx.run_dir": str(self.run_dir.resolve())}
        run = mlflow.start_run(run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        mlflow.log_params({k: str(v) for k, v in flatten(cfg).items()})

    # ------------------------------------------------------------------ callbacks
    def callbacks(self) -> list:
        from dlx.training.loop import EpochTensorBoard

        cbs: list = []
        if self.tb_dir is not None:
            cbs.append(EpochTensorBoard(log_dir=str(self.tb_dir), write_graph=True))
        if self.run_id is not None:
            from mlflow.keras import MlflowCallback

            cbs.append(MlflowCallback())
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

            mlflow.log_metrics(values, step=step)

    # ------------------------------------------------------------------ end of run
    def log_image(self, tag: str, png: Path, step: int) -> None:
        """A PNG (e.g. the confusion matrix) as a TensorBoard image under tb/test."""
        if self.tb_dir is not None:
            tensorboard_image(self.tb_dir / "test", tag, png, step)

    def finish(self, metrics: dict[str, float], artifacts: list[Path]) -> None:
        if self.run_id is None:
            return
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        for path in artifacts:
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            elif path.exists():
                mlflow.log_artifact(str(path))
        mlflow.end_run("FINISHED")

    def fail(self) -> None:
        if self.run_id is not None:
            import mlflow

            mlflow.end_run("FAILED")

    def describe(self) -> list[str]:
        lines = [f"run directory: {self.run_dir}"]
        if self.tb_dir is not None:
            lines.append(f"tensorboard:   tensorboard --logdir {self.tb_dir}")
        if self.run_id is not None:
            lines.append(f"mlflow run:    {self.run_id} (experiment '{self.mlflow_cfg['experiment']}')")
            lines.append(f"mlflow ui:     mlflow ui --backend-store-uri {self.uri}")
        return lines
