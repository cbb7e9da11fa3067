"""The one training loop: `model.fit` on tf.data pipelines, with checkpoints, early stopping,
NaN guard, a log line per epoch, and whatever tracking callbacks the run adds."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dlx.config import higher_is_better, steps_per_execution
from dlx.errors import DlxError
from dlx.training import state as state_file

log = logging.getLogger(__name__)


class _NoRetracingNotice(logging.Filter):
    """TF warns when its tracing detector sees the same Python function traced several times; with
    pretraining, every stage model traces Keras' one step function once, which is not retracing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_NoRetracingNotice())


class EpochBatches(keras.callbacks.Callback):
    """Training batches as a tf.data pipeline whose epoch e is a pure function of (seed, e).

    Keras' array adapter does the same work (a permutation of indices per epoch, whole batches
    gathered from the in-memory arrays), but its permutations depend on how many epochs the
    process has run, so a run resumed at epoch k would see other batches than the run that was
    never stopped. Here the epoch number lives in a variable that this callback sets at each
    epoch's start, before Keras opens the epoch's iterator. Unshuffled, the same pipeline feeds
    the validation and test splits, in order (`in_order`).
    """

    def __init__(self, x, y, batch_size: int, seed: int, shuffle: bool):
        super().__init__()
        n = len(keras.tree.flatten(y)[0])
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        arrays = tf.data.Dataset.from_tensors((x, y)).repeat()  # one copy of the data, not a graph constant

        full, rest = divmod(n, batch_size)

        def order(_):
            indices = tf.range(n, dtype=tf.int64)
            if shuffle:
                indices = tf.random.experimental.stateless_shuffle(indices, seed=tf.stack([tf.constant(seed, tf.int64), self.epoch.read_value()]))
            # whole batches as rows of one reshaped tensor (what Keras does: far cheaper than
            # batching n scalar elements), the partial batch after them
            batches = tf.data.Dataset.from_tensor_slices(tf.reshape(indices[: full * batch_size], (full, batch_size)))
            return batches.concatenate(tf.data.Dataset.from_tensors(indices[full * batch_size :])) if rest else batches

        batches = tf.data.Dataset.range(1).flat_map(order).apply(tf.data.experimental.assert_cardinality(full + bool(rest)))
        gather = lambda idx, xy: keras.tree.map_structure(lambda a: tf.gather(a, idx), xy)  # noqa: E731
        dataset = tf.data.Dataset.zip((batches, arrays)).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        # no static graph rewrites: they serialise the pipeline, the training arrays included, each
        # time Keras opens an epoch's iterator (Keras' array adapter turns them off for this reason)
        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        # and no autotuner: its background thread re-plans the pipeline while it runs, and where
        # every core is busy (jobs of a parallel sweep) its wake-ups stall the training steps. An
        # 8-epoch digits MLP fitted in 1.3-1.6 s beside a second job, 1.1 s alone; without the
        # autotuner in 1.05 s either way, and Fashion-MNIST alone a little faster too. The
        # AUTOTUNE sizes below then take tf.data's fixed defaults.
        options.autotune.enabled = False
        self.dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def in_order(x, y, batch_size: int) -> tf.data.Dataset:
    """A split batch by batch, in order, through the training batches' pipeline (validation, test)."""
    return EpochBatches(x, y, batch_size, 0, shuffle=False).dataset


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
        log.info("%sepoch %d/%d %s (%.1fs, validation %.1fs)", self.prefix, epoch + 1, self.params["epochs"], " ".join(parts),
                 self.seconds[-1], self.validation_seconds[-1])


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, per epoch only, plus the model's op graph.

    With update_freq='epoch' Keras' `on_train_batch_end` still calls `tf.summary.scalar` for every
    logged value of every batch (recording nothing: no writer is active); those eager calls cost
    ~15 % of steps/s at steps_per_execution=1, so they are dropped. Keras' own train-graph export
    finds no graph on Keras 3's train function; the forward pass's graph is written instead, next to
    the Keras model summary ("conceptual graph") that `write_graph` already gives.
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


class Checkpoints(keras.callbacks.Callback):
    """`best.keras` (best `monitor` so far) and `last.keras` (last epoch with a finite loss).

    Both are snapshotted in memory at every epoch end (weights and optimizer state, well under a
    millisecond for small models) and written to disk at most every `interval_s` seconds and when
    training ends. Keras' ModelCheckpoint writes a file per epoch, which on short epochs cost ~7 %
    of dlx's throughput (benchmarks/results/overhead.md); a diverged run still gets its last good
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
            self.model.save(self.paths[name])
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


class ResumeState(keras.callbacks.Callback):
    """What a killed run needs to go on from its last completed epoch as if it had never stopped.

    After every epoch, into `<run>/checkpoints/resume/`: every model variable (weights and the
    dropout layers' random-generator states), the optimizer's variables (step counter, moments),
    the best epoch's snapshot when it changed, and a JSON file with the epoch counter, the metric
    history, the stopping rules' state and `extra` (the MLflow run id). The JSON file is written
    last, through a rename, so a kill at any moment leaves the previous epoch's state whole.
    The batches an epoch sees are a function of (seed, epoch) (`EpochBatches`), so the
    continued run trains on exactly what the uninterrupted one would have.

    The arrays are copied on the training thread and written by one background thread while the
    next epoch trains (a few MB per epoch were ~3 % of an MLP's epoch time on Fashion-MNIST); one
    write is in flight at most, in epoch order, and training ends only after the last one.
    """

    STATE = {  # callback class -> the attributes that make up its state
        "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
        "BookEarlyStopping": ("best", "best_step", "stopped_step", "evaluations", "_steps"),
        "Checkpoints": ("best_value", "best_epoch"),
    }

    def __init__(self, directory: Path, callbacks: list, checkpoints: Checkpoints, epoch_log: EpochLog, extra: dict):
        super().__init__()
        self.dir, self.callbacks, self.checkpoints, self.epoch_log = directory, callbacks, checkpoints, epoch_log
        self.extra = extra
        self.history: dict[str, list[float]] = {}
        self.restored: dict | None = None
        self.files: dict[str, str | None] = {"variables": None, "best": None}  # what state.json points at
        self.write_seconds = 0.0  # training-thread time: copying the arrays, waiting for the previous write
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def _stateful(self):
        for cb in self.callbacks:
            attrs = self.STATE.get(type(cb).__name__)
            if attrs:
                yield type(cb).__name__, cb, attrs

    # ---------------------------------------------------------------- restore
    def restore(self, state: dict) -> None:
        """Put the saved variables back into the (built, compiled) model; the callbacks' state
        follows in on_train_begin, after they have reset themselves."""
        model = self.model
        self.checkpoints.set_model(model)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        saved = _load_groups(self.dir / state["variables"])
        _assign(model.variables, saved["v"], "model")
        _assign(self.checkpoints._optimizer_variables(), saved["o"], "optimizer")
        if state.get("best"):
            best = _load_groups(self.dir / state["best"])
            self.checkpoints.snapshots["best"] = (best["w"], best["o"])
        self.files = {"variables": state["variables"], "best": state.get("best")}
        self.checkpoints.snapshots["last"] = self.checkpoints._snapshot()
        self.checkpoints._dirty |= set(self.checkpoints.snapshots)
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch_log.seconds = list(state["epoch_seconds"])
        self.epoch_log.validation_seconds = list(state["epoch_validation_seconds"])
        self.restored = state
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        if self.restored is None:
            return
        # after the callbacks' own on_train_begin, which resets them (this one runs last)
        for name, cb, attrs in self._stateful():
            for attr, value in self.restored["callbacks"].get(name, {}).items():
                setattr(cb, attr, _from_json(value))

    # ---------------------------------------------------------------- save
    def on_epoch_end(self, epoch, logs=None):
        t0 = time.perf_counter()
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        tag = f"epoch{epoch + 1}"
        previous = dict(self.files)
        self.files["variables"] = f"state-{tag}.npz"
        groups = {self.files["variables"]: {"v": [v.numpy() for v in self.model.variables],
                                            "o": [v.numpy() for v in self.checkpoints._optimizer_variables()]}}
        if self.checkpoints.best_epoch == epoch and "best" in self.checkpoints.snapshots:
            weights, best_opt = self.checkpoints.snapshots["best"]
            self.files["best"] = f"best-{tag}.npz"
            groups[self.files["best"]] = {"w": weights, "o": best_opt}
        state = {
            "epoch": epoch + 1,
            "stopped": bool(self.model.stop_training),
            **self.files,
            "history": self.history,
            "epoch_seconds": self.epoch_log.seconds,
            "epoch_validation_seconds": self.epoch_log.validation_seconds,
            "callbacks": {name: {a: _to_json(getattr(cb, a, None)) for a in attrs} for name, cb, attrs in self._stateful()},
            **self.extra,
        }
        text = json.dumps(state)  # now: the lists in it keep growing
        stale = [old for old in previous.values() if old and old not in self.files.values()]
        self.wait()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlx-resume-state")
        self._pending = self._writer.submit(self._write, groups, text, stale)
        self.write_seconds += time.perf_counter() - t0

    def _write(self, groups: dict[str, dict], text: str, stale: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, arrays in groups.items():
            _save_groups(self.dir / name, **arrays)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.dir / "state.json")  # the epoch's state is complete only from here
        for old in stale:  # files state.json no longer points at
            (self.dir / old).unlink(missing_ok=True)

    def wait(self) -> None:
        """Until the last epoch's state is on disk (raises what writing it raised)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self, quiet: bool = False) -> None:
        """Wait for the last write and stop the writer thread. `quiet` (training is already
        failing or being preempted): a write error is logged, not raised over that exception."""
        try:
            self.wait()
        except Exception as exc:
            if not quiet:
                raise
            log.warning("could not save the resume state in %s: %s", self.dir, exc)
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None

    def on_train_end(self, logs=None):
        self.close()


def _save_groups(path: Path, **groups: list) -> None:
    """Lists of arrays in one .npz (group g's i-th array as `g{i}`, its length as `n_g`), written
    through a rename."""
    arrays = {f"{g}{i}": a for g, values in groups.items() for i, a in enumerate(values)}
    counts = {f"n_{g}": len(values) for g, values in groups.items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays, **counts)
    os.replace(tmp, path)


def _load_groups(path: Path) -> dict[str, list]:
    with np.load(path) as saved:
        groups = [k[2:] for k in saved.files if k.startswith("n_")]
        return {g: [saved[f"{g}{i}"] for i in range(int(saved[f"n_{g}"]))] for g in groups}


def _assign(variables: list, values: list, what: str) -> None:
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise DlxError(f"resume: the saved {what} state does not fit this model ({len(values)} arrays for {len(variables)} variables)")
    for var, value in zip(variables, values):
        var.assign(value)


def _to_json(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "inf", "-inf", "nan"
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value):
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


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


def fit(model: keras.Model, data, trainer, run_dir: Path, callbacks: list | None = None, *,
        resume: bool = False, extra_state: dict | None = None) -> FitResult:
    """Train `model` on `data.train`, validate on `data.val`; leave the best weights in `model`.

    A family shapes its fit with attributes (dlx/models/classic.py): `passes` (epochs it needs,
    e.g. 1 for a statistics pass), `full_batch` (each step sees the whole split), `fit_callbacks()`
    (its own stopping rule), `data_init(x)` (initial values from the training inputs), or
    `solve(x, y)` for a solver that is not a sequence of steps.

    Mini-batch training saves its state after every epoch (ResumeState); with `resume` it goes
    on from the state a killed run left in `run_dir`. `extra_state` is saved with it.
    """
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    best, last = ckpt_dir / "best.keras", ckpt_dir / "last.keras"
    es = trainer["early_stopping"]
    monitor = es["monitor"]
    mode = monitor_mode(monitor)
    nan_guard = StopOnNaN()
    checkpoints = Checkpoints(best, last, monitor, mode, trainer["checkpoint_interval_s"])
    epoch_log = EpochLog()
    cbs = [nan_guard, checkpoints, epoch_log]
    if es["enabled"] and es["rule"] == "book":
        validate = validation_metric(model, data.val.x, data.val.y, monitor)
        cbs.append(BookEarlyStopping(validate, mode, es["patience_batches"], es["eval_every_batches"], es["improvement_ratio"]))
    elif es["enabled"]:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=es["patience"], min_delta=es["min_delta"]))
    cbs += getattr(model, "fit_callbacks", list)()
    cbs += callbacks or []

    verbose = 1 if trainer["progress"] and sys.stdout.isatty() else 0
    passes = getattr(model, "passes", None)
    if getattr(model, "full_batch", False):
        batch_size = len(data.train)
    elif passes == 1:
        batch_size = model.stats_batch_size
    else:
        batch_size = trainer["batch_size"]
    # the order of examples matters only to mini-batch gradient steps
    shuffle = trainer["shuffle"] and batch_size < len(data.train) and passes != 1
    t0 = time.perf_counter()
    if hasattr(model, "data_init"):  # a family that starts from statistics of the training data
        model.data_init(data.train.x)
    resumed_from = 0
    saver = None
    if hasattr(model, "solve"):
        hist = _solve(model, data, batch_size, cbs, model.solve)
    elif passes == 1:
        hist = _solve(model, data, batch_size, cbs, model.statistics_pass)
    else:
        epochs = passes or trainer["epochs"]
        saver = ResumeState(state_file.resume_dir(run_dir), cbs, checkpoints, epoch_log, extra_state or {})
        saver.set_model(model)
        state = state_file.read(saver.dir) if resume else None
        if state is not None:
            saver.restore(state)
            resumed_from = state["epoch"]
            log.info("resuming from the end of epoch %d (%s)", resumed_from, saver.dir)
        if state is None or (resumed_from < epochs and not state["stopped"]):
            batches = EpochBatches(data.train.x, data.train.y, batch_size, trainer["seed"], shuffle)
            try:
                model.fit(
                    batches.dataset, initial_epoch=resumed_from, epochs=epochs, shuffle=False,
                    validation_data=in_order(data.val.x, data.val.y, batch_size),
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
        raise DlxError(f"no epoch improved {monitor} (it was never finite); no best checkpoint")
    checkpoints.write()  # a resumed run that had nothing left to train still leaves best/last files
    checkpoints.restore("best")  # the best epoch, whether or not early stopping ended the run
    return FitResult(
        hist, len(hist[monitor]), checkpoints.best_epoch + 1, checkpoints.best_value, seconds, epoch_log.seconds,
        epoch_log.validation_seconds, sum(epoch_log.validation_seconds),
        checkpoints.write_seconds + (saver.write_seconds if saver else 0.0), {"best": best, "last": last}, resumed_from,
    )


def pretrain(model: keras.Model, data, trainer, run_dir: Path, sink=None) -> float:
    """Greedy layer-wise pretraining of `model.pretraining` (dlx/models/stacked.py).

    Stage i is fitted (plain SGD) on what the pretrained layers below make of the training and
    validation splits, logging under `pretrain/layer{i}/` (train.log, TensorBoard, MLflow); its
    weights become hidden{i}'s, and all layers are saved to <run>/pretrained.npz. With
    `from_run` the layers of an earlier run are used instead. Returns the seconds it took.
    """
    from dlx import models
    from dlx.models import stacked

    pre = model.pretraining
    x_train, x_val = _flat(data.train.x), _flat(data.val.x)
    t0 = time.perf_counter()
    if pre.from_run:
        stack = stacked.load_stack(Path(pre.from_run).expanduser() / stacked.PRETRAINED_FILE)  # sizes checked with the config
        log.info("pretrained layers from %s", pre.from_run)
    else:
        stack = []
        verbose = 1 if trainer["progress"] and sys.stdout.isatty() else 0
        for i, units in enumerate(pre.sizes, 1):
            prefix = f"pretrain/layer{i}"
            stage = pre.make_stage(i, x_train.shape[1], units)
            models.compile(stage, data.spec, keras.optimizers.SGD(pre.lr), steps_per_execution(trainer, model.name))
            if hasattr(stage, "data_init"):
                stage.data_init(x_train)
            log.info("%s: %s %d-%d, %d epochs, SGD lr %g", prefix, type(stage).__name__, x_train.shape[1], units, pre.epochs, pre.lr)
            nan_guard = StopOnNaN()
            cbs = [nan_guard, EpochLog(prefix)] + ([PhaseMetrics(prefix, sink)] if sink else [])
            stage.fit(x_train, data.train.y, batch_size=pre.batch_size, epochs=pre.epochs, shuffle=trainer["shuffle"],
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
