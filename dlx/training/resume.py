"""The callback that saves a run's state after every epoch and puts it back on resume."""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import keras

from dlx.errors import DlxError
from dlx.training import state as state_file
from dlx.training.callbacks import Checkpoints, EpochLog

log = logging.getLogger("dlx.training.loop")


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
    next epoch trains (writing them in line slowed short epochs); one
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
    def restore(self, state: dict, source: Path | None = None) -> None:
        """Put the saved variables back into the (built, compiled) model; the callbacks' state
        follows in on_train_begin, after they have reset themselves. `source`: the folder the
        state was read from, when not this run's own (another multi_worker process's)."""
        source = source or self.dir
        model = self.model
        self.checkpoints.set_model(model)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        saved = state_file.load_groups(source / state["variables"])
        assign(model.variables, saved["v"], "model")
        assign(self.checkpoints._optimizer_variables(), saved["o"], "optimizer")
        if state.get("best"):
            best = state_file.load_groups(source / state["best"])
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
                setattr(cb, attr, state_file.from_json(value))

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
            "callbacks": {name: {a: state_file.to_json(getattr(cb, a, None)) for a in attrs} for name, cb, attrs in self._stateful()},
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
            state_file.save_groups(self.dir / name, **arrays)
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


def assign(variables: list, values: list, what: str) -> None:
    if len(variables) != len(values) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise DlxError(f"resume: the saved {what} state does not fit this model ({len(values)} arrays for {len(variables)} variables)")
    for var, value in zip(variables, values):
        var.assign(value)
