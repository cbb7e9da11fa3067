"""The loop's checkpoint bookkeeping, on a tiny model."""

import keras
import numpy as np

from dlx.training.loop import Checkpoints


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
