"""The plain-Keras baseline both benchmarks compare dlx with: what one would write by hand."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from dlx.data.idx import read_idx


def load(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """`prefix`-images/labels IDX files -> (N, 28, 28, 1) float32 in [0, 1], int32 labels."""
    x = read_idx(next(Path(directory).glob(f"{prefix}-images*"))).astype("float32")[..., None] / 255.0
    return x, read_idx(next(Path(directory).glob(f"{prefix}-labels*"))).astype("int32")


def fit(layers: list, x: np.ndarray, y: np.ndarray, *, batch: int, epochs: int, spe: int, jit) -> tuple[keras.Model, list[float]]:
    """Sequential(layers + softmax), Adam 1e-3, `model.fit` on arrays with the last 5,000 as validation;
    returns the model and each epoch's wall time (a timer is the only callback)."""
    keras.utils.set_random_seed(42)
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers, keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=spe, jit_compile=jit)
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(x[:-5000], y[:-5000], batch_size=batch, epochs=epochs, validation_data=(x[-5000:], y[-5000:]),
              callbacks=[Timer()], verbose=0)
    return model, times
