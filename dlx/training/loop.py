"""The one training loop: `model.fit` on tf.data pipelines (or the family's statistics pass or
solver), with checkpoints, early stopping, NaN guard, a log line per epoch, resume state, and
whatever tracking callbacks the run adds; and greedy layer-wise pretraining."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from dlx.errors import DlxError
from dlx.family import model_hook
from dlx.training import state as state_file
from dlx.training.batches import EpochBatches, in_order
from dlx.training.resume import ResumeState
from dlx.training.callbacks import (BookEarlyStopping, Checkpoints, EpochLog, PhaseMetrics, StopOnNaN, monitor_mode,
                                    validation_metric)

log = logging.getLogger(__name__)


class _NoRetracingNotice(logging.Filter):
    """TF warns when its tracing detector sees the same Python function traced several times; with
    pretraining, every stage model traces Keras' one step function once, which is not retracing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_NoRetracingNotice())


@dataclass
class FitResult:
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    best_value: float
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_validation_seconds: list[float] = field(default_factory=list)  # the validation part of each epoch
    validation_seconds: float = 0.0  # the part of `seconds` spent in end-of-epoch validation
    checkpoint_seconds: float = 0.0  # ... and in writing checkpoint files
    checkpoints: dict[str, Path] = field(default_factory=dict)
    resumed_from: int = 0  # completed epochs restored from a killed run (0: a fresh run)


def fit(model: keras.Model, data, trainer, run_dir: Path, callbacks: list | None = None, *, mode: str = "steps",
        resume: bool = False, extra_state: dict | None = None, resume_from: Path | None = None) -> FitResult:
    """Train `model` on `data.train`, validate on `data.val`; leave the best weights in `model`.

    `mode` is the family's fit mode (dlx/family.py FIT_MODES): mini-batch `steps`, `full_batch`
    steps, one `statistics` pass, or the model's own `solver`. The model's documented hooks
    (`data_init`, `fit_callbacks`) are used where it has them.

    Gradient training saves its state after every epoch (ResumeState); with `resume` it goes
    on from the state a killed run left in `run_dir`. `extra_state` is saved with it.
    """
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best, last = ckpt_dir / "best.keras", ckpt_dir / "last.keras"
    es = trainer["early_stopping"]
    monitor = es["monitor"]
    mode_ = monitor_mode(monitor)
    nan_guard = StopOnNaN()
    checkpoints = Checkpoints(best, last, monitor, mode_, trainer["checkpoint_interval_s"])
    epoch_log = EpochLog()
    cbs = [nan_guard, checkpoints, epoch_log]
    if es["enabled"] and es["rule"] == "book":
        validate = validation_metric(model, data.val.x, data.val.y, monitor)
        cbs.append(BookEarlyStopping(validate, mode_, es["patience_batches"], es["eval_every_batches"], es["improvement_ratio"]))
    elif es["enabled"]:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode_, patience=es["patience"], min_delta=es["min_delta"]))
    cbs += model_hook(model, "fit_callbacks", list)()
    cbs += callbacks or []

    verbose = 1 if trainer["progress"] and sys.stdout.isatty() else 0
    if mode == "full_batch":
        batch_size = len(data.train)
    elif mode == "statistics":
        batch_size = model_hook(model, "stats_batch_size") or trainer["batch_size"]
    else:
        batch_size = trainer["batch_size"]
    # the order of examples matters only to mini-batch gradient steps
    shuffle = trainer["shuffle"] and batch_size < len(data.train) and mode == "steps"
    t0 = time.perf_counter()
    data_init = model_hook(model, "data_init")
    if data_init is not None:  # a family that starts from statistics of the training data
        data_init(data.train.x)
    resumed_from = 0
    saver = None
    if mode in ("solver", "statistics"):
        hook = "solve" if mode == "solver" else "statistics_pass"
        solver = model_hook(model, hook)
        if solver is None:
            raise DlxError(f"model: fit mode {mode} needs the model's {hook}(x, y) (dlx/family.py MODEL_HOOKS)")
        hist = _solve(model, data, batch_size, cbs, solver)
    else:
        epochs = trainer["epochs"]
        saver = ResumeState(state_file.resume_dir(run_dir), cbs, checkpoints, epoch_log, extra_state or {})
        saver.set_model(model)
        source = resume_from or saver.dir  # another process's saved state (multi_worker) or this run's own
        state = state_file.read(source) if resume else None
        if state is not None:
            with model.distribute_strategy.scope():  # restored variables belong to the model's strategy
                saver.restore(state, source)
            resumed_from = state["epoch"]
            log.info("resuming from the end of epoch %d (%s)", resumed_from, source)
        if state is None or (resumed_from < epochs and not state["stopped"]):
            batches = EpochBatches(data.train.x, data.train.y, batch_size, trainer["seed"], shuffle,
                                   augment=data.extra.get("augment"), cache=data.extra.get("cache"))
            try:
                model.fit(
                    batches.dataset, initial_epoch=resumed_from, epochs=epochs, shuffle=False,
                    validation_data=in_order(data.val.x, data.val.y, trainer.get("eval_batch_size") or batch_size),
                    callbacks=[batches] + cbs + [saver], verbose=verbose,
                )
            except BaseException:  # preempted, interrupted, failed: the last epoch's state still reaches the disk
                saver.close(quiet=True)
                raise
        hist = saver.history
    seconds = time.perf_counter() - t0

    if nan_guard.where is not None:
        kept = f"last good checkpoint: {last}" if last.exists() else "no epoch finished, no checkpoint kept"
        raise DlxError(f"training diverged: loss became NaN/inf at {nan_guard.where} (try a lower optimizer.lr); {kept}")
    if monitor not in hist:
        raise DlxError(f"trainer.early_stopping.monitor: '{monitor}' is not a logged metric; logged: {', '.join(hist)}")
    if checkpoints.best_epoch is None:
        hint = (f"; the fitted statistics are not finite: {len(data.train)} training examples for "
                f"{int(np.prod(data.spec.input_shape))} features (more examples, fewer features, or for gda a larger "
                "model.reg_covar)") if mode == "statistics" else ""
        raise DlxError(f"no epoch improved {monitor} (it was never finite); no best checkpoint{hint}")
    checkpoints.write()  # a resumed run that had nothing left to train still leaves best/last files
    checkpoints.restore("best")  # the best epoch, whether or not early stopping ended the run
    return FitResult(
        hist, len(hist[monitor]), checkpoints.best_epoch + 1, checkpoints.best_value, seconds, epoch_log.seconds,
        epoch_log.validation_seconds, sum(epoch_log.validation_seconds),
        checkpoints.write_seconds + (saver.write_seconds if saver else 0.0), {"best": best, "last": last}, resumed_from,
    )


def pretrain(model: keras.Model, data, trainer, run_dir: Path, sink=None, steps_per_execution: int = 1) -> float:
    """Greedy layer-wise pretraining of the model's `pretraining` hook (dlx/models/stacked.py).

    Stage i is fitted (plain SGD) on what the pretrained layers below make of the training and
    validation splits, logging under `pretrain/layer{i}/` (train.log, TensorBoard, MLflow); its
    weights become hidden{i}'s, and all layers are saved to <run>/pretrained.npz. With
    `from_run` the layers of an earlier run are used instead. Returns the seconds it took.
    """
    from dlx import models
    from dlx.models import stacked

    pre = model_hook(model, "pretraining")
    x_train, x_val = _flat(data.train.x), _flat(data.val.x)
    t0 = time.perf_counter()
    if pre.from_run:
        stack = stacked.load_stack(Path(pre.from_run).expanduser() / stacked.PRETRAINED_FILE)  # sizes checked with the config
        log.info("pretrained layers from %s", pre.from_run)
    else:
        stack = []
        verbose = 1 if trainer["progress"] and sys.stdout.isatty() else 0
        epochs = pre.epochs_for(len(x_train))
        for i, units in enumerate(pre.sizes, 1):
            prefix = f"pretrain/layer{i}"
            stage = pre.make_stage(i, x_train.shape[1], units)
            # a stage is an RBM or a denoising autoencoder: it brings its own objective
            models.compile(stage, data.spec, keras.optimizers.SGD(pre.lr), steps_per_execution, objective=stage.objective())
            init = model_hook(stage, "data_init")
            if init is not None:
                init(x_train)
            log.info("%s: %s %d-%d, %d epochs, SGD lr %g", prefix, type(stage).__name__, x_train.shape[1], units, epochs, pre.lr)
            nan_guard = StopOnNaN()
            cbs = [nan_guard, EpochLog(prefix)] + ([PhaseMetrics(prefix, sink)] if sink else [])
            stage.fit(x_train, data.train.y, batch_size=pre.batch_size, epochs=epochs, shuffle=trainer["shuffle"],
                      validation_data=(x_val, data.val.y), validation_batch_size=max(pre.batch_size, 1024),
                      callbacks=cbs, verbose=verbose)
            if nan_guard.where is not None:
                raise DlxError(f"pretraining layer {i} diverged at {nan_guard.where} (try a lower model.pretrain.lr)")
            stack.append(stage.pretrained_layer())
            x_train, x_val = _encode(stage, x_train), _encode(stage, x_val)
    stacked.save_stack(run_dir / stacked.PRETRAINED_FILE, stack)
    pre.adopt(model, stack)
    return time.perf_counter() - t0


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1)


def _encode(stage: keras.Model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    return np.concatenate([stage.encode(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)])


def _solve(model: keras.Model, data, batch_size: int, callbacks: list, solver) -> dict[str, list[float]]:
    """One "epoch" that is `solver(x, y)` (SMO, a statistics pass), with the same callbacks and
    validation as fit."""
    cbl = keras.callbacks.CallbackList(callbacks, model=model, epochs=1, steps=1, verbose=0)
    cbl.on_train_begin()
    cbl.on_epoch_begin(0)
    logs = dict(solver(data.train.x, data.train.y))
    val = model.evaluate(data.val.x, data.val.y, batch_size=batch_size, return_dict=True, verbose=0, callbacks=cbl)
    logs |= {f"val_{k}": float(v) for k, v in val.items()}
    cbl.on_epoch_end(0, logs)
    cbl.on_train_end(logs)
    return {k: [float(v)] for k, v in logs.items()}
