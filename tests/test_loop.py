"""The loop's checkpoint bookkeeping, on a tiny model."""

import time

import keras
import numpy as np
import pytest

from dlx.data.datasets import Data, DataSpec, Split
from dlx.training import loop
from dlx.training import state as state_file
from dlx.training.batches import EpochBatches, in_order
from dlx.training.callbacks import Checkpoints


def _model():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    m.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    return m


def test_checkpoints_written_at_end_hold_the_best_epoch(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4)).astype("float32"), rng.integers(0, 3, 64)
    m = _model()
    ck = Checkpoints(tmp_path / "best.keras", tmp_path / "last.keras", "val_loss", "min", interval_s=1e9)
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((tmp_path / "best.keras").exists())

    hist = m.fit(x, y, validation_data=(x[::-1], y), epochs=4, verbose=0, callbacks=[ck, Probe()]).history
    assert seen == [False] * 4  # throttled: nothing on disk during training
    assert ck.best_epoch == int(np.argmin(hist["val_loss"]))
    best = keras.saving.load_model(tmp_path / "best.keras")
    last = keras.saving.load_model(tmp_path / "last.keras")
    for a, b in zip(best.get_weights(), ck.snapshots["best"][0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(last.get_weights(), m.get_weights()):  # writing did not disturb the live model
        np.testing.assert_array_equal(a, b)


def test_interval_zero_writes_every_epoch_and_skips_nan(tmp_path):
    m = _model()
    m.fit(np.zeros((8, 4)), np.zeros(8), epochs=1, verbose=0)  # build optimizer state
    ck = Checkpoints(tmp_path / "b.keras", tmp_path / "l.keras", "loss", "min", interval_s=0)
    ck.set_model(m)
    ck.on_epoch_end(0, {"loss": float("nan")})
    assert not (tmp_path / "l.keras").exists()
    ck.on_epoch_end(1, {"loss": 1.0})
    assert (tmp_path / "l.keras").exists() and (tmp_path / "b.keras").exists() and ck.best_epoch == 1


def _trainer(**kw):
    es = {"enabled": False, "monitor": "val_loss", "rule": "epochs", "patience": 5, "min_delta": 0.0}
    return {"batch_size": 16, "seed": 0, "shuffle": True, "checkpoint_interval_s": 1e9, "progress": False,
            "epochs": 5, "early_stopping": es} | kw


def _toy_data(seed: int) -> Data:
    """64 random 4-feature examples of 3 classes; validation and test: the first 16."""
    rng = np.random.default_rng(seed)
    x, y = rng.random((64, 4)).astype("float32"), rng.integers(0, 3, 64)
    return Data(Split(x, y), Split(x[:16], y[:16]), Split(x[:16], y[:16]), DataSpec("toy", (4,), 3, ["a", "b", "c"], 1.0))


def test_resume_state_of_the_last_epoch_is_on_disk_when_training_is_interrupted(tmp_path, monkeypatch):
    """The state is written in the background; an interrupt (a preemption) must still leave the
    last completed epoch's state whole, even when writing is slower than training."""
    save = state_file.save_groups

    def slow_save(path, **groups):
        time.sleep(0.3)
        save(path, **groups)

    monkeypatch.setattr(state_file, "save_groups", slow_save)
    data = _toy_data(0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    m = _model()
    with pytest.raises(KeyboardInterrupt):
        loop.fit(m, data, _trainer(), tmp_path, callbacks=[Interrupt()], extra_state={"mlflow_run_id": "r1"})
    state = state_file.read(state_file.resume_dir(tmp_path))
    assert state["epoch"] == 2 and state["mlflow_run_id"] == "r1" and len(state["history"]["loss"]) == 2
    files = sorted(p.name for p in state_file.resume_dir(tmp_path).iterdir())
    assert files == sorted(["state.json", state["variables"], state["best"]])  # older epochs' files removed
    with np.load(state_file.resume_dir(tmp_path) / state["variables"]) as saved:
        np.testing.assert_array_equal(saved["v0"], m.variables[0].numpy())  # nothing trained after epoch 2


def test_resume_state_after_a_normal_fit_holds_its_last_epoch(tmp_path):
    m = _model()
    result = loop.fit(m, _toy_data(1), _trainer(epochs=3), tmp_path)
    state = state_file.read(state_file.resume_dir(tmp_path))
    assert state["epoch"] == 3 == result.epochs_run
    assert state["history"]["val_loss"] == result.history["val_loss"]


def test_epoch_batches_cover_every_example_once_in_an_order_fixed_by_seed_and_epoch():
    x = np.arange(70, dtype="float32")[:, None]
    y = np.arange(70, dtype="int32")

    def epoch(batches, e):
        batches.on_epoch_begin(e)
        return [by.numpy().tolist() for _, by in batches.dataset]

    a, b = EpochBatches(x, y, 16, seed=3, shuffle=True), EpochBatches(x, y, 16, seed=3, shuffle=True)
    e0, e1 = epoch(a, 0), epoch(a, 1)
    assert [len(batch) for batch in e0] == [16, 16, 16, 16, 6]  # the partial batch last
    assert sorted(sum(e0, [])) == list(range(70)) == sorted(sum(e1, []))
    assert e0 != e1
    assert epoch(b, 1) == e1 and epoch(b, 0) == e0  # any epoch, in any order: a function of (seed, epoch)
    assert sum(epoch(EpochBatches(x, y, 10, seed=3, shuffle=False), 0), []) == list(range(70))


def test_validation_and_test_batches_come_in_order_without_the_autotuner():
    x = np.arange(70, dtype="float32")[:, None]
    y = np.arange(70, dtype="int32")
    data = in_order(x, y, 16)
    assert [by.numpy().tolist() for _, by in data] == [list(range(i, min(i + 16, 70))) for i in range(0, 70, 16)]
    # tf.data's autotuner thread stalls training steps where every core is busy (parallel jobs)
    assert data.options().autotune.enabled is False
    assert EpochBatches(x, y, 16, seed=3, shuffle=True).dataset.options().autotune.enabled is False
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    assert np.allclose(model.predict(data, verbose=0), model.predict(x, verbose=0))  # predict takes the x part
