"""The loop's own Keras callbacks: a log line per epoch, in-memory checkpoints, per-phase metrics,
the NaN guard and the book's batch-counted early stopping."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dlx.config import higher_is_better
from dlx.errors import DlxError

log = logging.getLogger("dlx.training.loop")


class EpochLog(keras.callbacks.Callback):
    """One `train.log` line per epoch: every metric Keras reports, and the epoch's wall time
    (and how much of it the end-of-epoch validation took)."""

    def __init__(self, prefix: str = ""):
        super().__init__()
        self.prefix = f"{prefix} " if prefix else ""
        self.seconds: list[float] = []
        self.validation_seconds: list[float] = []
        self._val_t0: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0, self._val_t0 = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self._val_t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.seconds.append(now - self._t0)
        self.validation_seconds.append(now - self._val_t0 if self._val_t0 is not None else 0.0)
        parts = [f"{k}={v:.4f}" for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))]
        log.info("%sepoch %d/%d %s (%.2fs, validation %.2fs)", self.prefix, epoch + 1, self.params["epochs"], " ".join(parts),
                 self.seconds[-1], self.validation_seconds[-1])


class Checkpoints(keras.callbacks.Callback):
    """`best.keras` (best `monitor` so far) and `last.keras` (last epoch with a finite loss).

    Both are snapshotted in memory at every epoch end (weights and optimizer state, well under a
    millisecond for small models) and written to disk at most every `interval_s` seconds and when
    training ends. Keras' ModelCheckpoint writes a file per epoch, which on short epochs costs
    throughput (benchmarks/results/overhead.md); a diverged run still gets its last good
    epoch on disk, because the snapshot is taken before the weights went bad.
    """

    def __init__(self, best: Path, last: Path, monitor: str, mode: str, interval_s: float):
        super().__init__()
        self.paths = {"best": best, "last": last}
        self.monitor, self.mode, self.interval_s = monitor, mode, interval_s
        self.best_value = -math.inf if mode == "max" else math.inf
        self.best_epoch: int | None = None
        self.snapshots: dict[str, tuple] = {}
        self._dirty: set[str] = set()
        self._written = time.monotonic()
        self.write_seconds = 0.0  # time spent writing checkpoint files

    def _optimizer_variables(self) -> list:
        return self.model.optimizer.variables if self.model.optimizer is not None else []

    def _snapshot(self) -> tuple:
        return self.model.get_weights(), [v.numpy() for v in self._optimizer_variables()]

    def restore(self, name: str = "best") -> None:
        self._apply(self.snapshots[name])

    def _apply(self, snapshot: tuple) -> None:
        weights, opt_vars = snapshot
        self.model.set_weights(weights)
        for var, value in zip(self._optimizer_variables(), opt_vars):
            var.assign(value)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(logs.get("loss", 0.0)):  # statistics passes log no training loss
            return
        snap = self.snapshots["last"] = self._snapshot()
        self._dirty.add("last")
        value = logs.get(self.monitor)
        if value is not None and math.isfinite(value):
            if (value > self.best_value) if self.mode == "max" else (value < self.best_value):
                self.best_value, self.best_epoch = float(value), epoch
                self.snapshots["best"] = snap
                self._dirty.add("best")
        if time.monotonic() - self._written >= self.interval_s:
            self.write()

    def write(self) -> None:
        """Write the snapshots that changed since the last write; the model's state is kept."""
        if not self._dirty:
            return
        t0 = time.perf_counter()
        current = self._snapshot()
        for name in sorted(self._dirty):
            self.restore(name)
            save_keras(self.model, self.paths[name])
        self._apply(current)
        self._dirty.clear()
        self._written = time.monotonic()
        self.write_seconds += time.perf_counter() - t0

    def on_train_end(self, logs=None):
        self.write()


class PhaseMetrics(keras.callbacks.Callback):
    """Per-epoch metrics of a training phase under its own prefix (`pretrain/layer1/loss`), handed
    to `sink(values, step)` (the run's TensorBoard and MLflow)."""

    def __init__(self, prefix: str, sink):
        super().__init__()
        self.prefix, self.sink = prefix, sink

    def on_epoch_end(self, epoch, logs=None):
        self.sink({f"{self.prefix}/{k}": float(v) for k, v in (logs or {}).items()}, epoch)


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN/inf and remember where it happened."""

    async_safe = True  # only reads logs and sets a flag: Keras may run it off the training thread

    def __init__(self):
        super().__init__()
        self.where: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = f"epoch {self._epoch + 1}, batch {batch + 1}"
            self.model.stop_training = True


class BookEarlyStopping(keras.callbacks.Callback):
    """The textbook's early stopping, in batches rather than epochs.

    Every `every` training batches the model is validated; an evaluation is an improvement when it
    beats the best so far by `ratio` (best/current >= ratio for a loss, current/best for a score),
    and the first evaluation always is (the book's own code compares it with 0 and misses it).
    Training stops once `patience` batches have passed since the last improvement.
    `validate()` returns the monitored value; it is a parameter so tests can script the curve.
    """

    def __init__(self, validate, mode: str, patience: int, every: int, ratio: float):
        super().__init__()
        self.validate, self.mode = validate, mode
        self.patience, self.every, self.ratio = patience, every, ratio
        self.best: float | None = None
        self.best_step = 0
        self.stopped_step: int | None = None
        self.evaluations: list[tuple[int, float]] = []
        self._done = 0  # batches finished before the current epoch
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._done = self._steps

    def on_train_batch_end(self, batch, logs=None):
        # with steps_per_execution > 1 Keras calls this once per execution, `batch` being its last
        step = self._done + batch + 1
        crossed = step // self.every > self._steps // self.every
        self._steps = step
        if not crossed:
            return
        value = float(self.validate())
        self.evaluations.append((step, value))
        if self.best is None or self._improves(value):
            self.best, self.best_step = value, step
        elif step - self.best_step >= self.patience:
            self.stopped_step = step
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_step is not None:
            log.info("early stopping (book rule): no %.1f %% improvement in %d batches; stopped at batch %d, best %.4f at batch %d",
                     (self.ratio - 1) * 100, self.patience, self.stopped_step, self.best, self.best_step)

    def _improves(self, value: float) -> bool:
        if self.mode == "max":
            return value >= self.best * self.ratio
        return value > 0 and self.best / value >= self.ratio


def validation_metric(model: keras.Model, x: np.ndarray, y: np.ndarray, monitor: str, batch_size: int = 1024):
    """A fast `val_loss` / `val_accuracy` for mid-epoch checks (no Keras metric state is touched)."""
    forward = tf.function(lambda inputs: model(inputs, training=False))

    def validate() -> float:
        probs = np.concatenate([forward(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)])
        if monitor == "val_accuracy":
            return float((probs.argmax(axis=1) == y).mean())
        picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)  # as Keras' crossentropy clips
        return float(-np.log(picked).mean())

    if monitor not in ("val_loss", "val_accuracy"):
        raise DlxError(f"trainer.early_stopping.monitor: rule=book watches val_loss or val_accuracy, got '{monitor}'")
    return validate


def monitor_mode(metric: str) -> str:
    """'max' for scores (accuracy, AUC, ...), 'min' for losses and errors."""
    return "max" if higher_is_better(metric) else "min"


def save_keras(model, path: Path) -> None:
    """`model.save(path)` through a temporary file: the previous file survives a failed write."""
    from dlx.training.state import atomic

    with atomic(path, ".tmp.keras") as tmp:
        model.save(tmp)
