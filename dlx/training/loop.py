"""The one training loop: `model.fit` on tf.data pipelines, with checkpoints, early stopping,
NaN guard, a log line per epoch, and whatever tracking callbacks the run adds."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dlx.errors import DlxError

log = logging.getLogger(__name__)


def make_dataset(split, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y)).cache()
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class EpochLog(keras.callbacks.Callback):
    """One `train.log` line per epoch: every metric Keras reports, and the epoch's wall time."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)
        parts = [f"{k}={v:.4f}" for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))]
        log.info("epoch %d/%d %s (%.1fs)", epoch + 1, self.params["epochs"], " ".join(parts), self.seconds[-1])


class LastGoodCheckpoint(keras.callbacks.Callback):
    """Save the model after every epoch whose loss is finite, so a diverged run keeps the last good one."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and math.isfinite(loss):
            self.model.save(self.path)


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


def monitor_mode(metric: str) -> str:
    """'max' for scores (accuracy, AUC, ...), 'min' for losses and errors."""
    return "max" if any(s in metric for s in ("acc", "auc", "precision", "recall", "r2")) else "min"


@dataclass
class FitResult:
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    best_value: float
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    checkpoints: dict[str, Path] = field(default_factory=dict)


def fit(model: keras.Model, data, trainer, run_dir: Path, callbacks: list | None = None) -> FitResult:
    """Train `model` on `data.train`, validate on `data.val`; leave the best weights in `model`."""
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best, last = ckpt_dir / "best.keras", ckpt_dir / "last.keras"
    es = trainer["early_stopping"]
    monitor = es["monitor"]
    mode = monitor_mode(monitor)
    nan_guard = StopOnNaN()
    checkpoint = keras.callbacks.ModelCheckpoint(best, monitor=monitor, mode=mode, save_best_only=True)
    epoch_log = EpochLog()
    cbs = [nan_guard, checkpoint, LastGoodCheckpoint(last), epoch_log]
    if es["enabled"]:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=es["patience"], min_delta=es["min_delta"]))
    cbs += callbacks or []

    train_ds = make_dataset(data.train, trainer["batch_size"], shuffle=trainer["shuffle"], seed=trainer["seed"])
    val_ds = make_dataset(data.val, trainer["batch_size"])
    verbose = 1 if trainer["progress"] and sys.stdout.isatty() else 0
    t0 = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=trainer["epochs"], callbacks=cbs, verbose=verbose, shuffle=False
    )  # shuffled by the pipeline
    seconds = time.perf_counter() - t0
    hist = {k: [float(v) for v in vs] for k, vs in history.history.items()}

    if nan_guard.where is not None:
        kept = f"last good checkpoint: {last}" if last.exists() else "no epoch finished, no checkpoint kept"
        raise DlxError(f"training diverged: loss became NaN/inf at {nan_guard.where} (try a lower optimizer.lr); {kept}")
    if monitor not in hist:
        raise DlxError(f"trainer.early_stopping.monitor: '{monitor}' is not a logged metric; logged: {', '.join(hist)}")
    if not best.exists():
        raise DlxError(f"no epoch improved {monitor} (it was never finite); no best checkpoint")
    model.load_weights(best)  # the best epoch, whether or not early stopping ended the run
    values = np.array(hist[monitor])
    best_idx = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
    return FitResult(
        hist, len(values), best_idx + 1, float(values[best_idx]), seconds, epoch_log.seconds, {"best": best, "last": last}
    )
