"""What the classic (non-deep) families share.

They are Keras models, so the one training loop, evaluation, saving, `dlx eval` and
`dlx predict` treat them like any other family; only how they *fit* differs, and each family says
so with its `fit_mode` (dlx/family.py):

- statistics: one pass of sufficient statistics (GDA, naive Bayes, the normal equation),
  `accumulate(x, y)` per chunk: the loop runs it with `statistics_pass`, straight over the arrays
  (`model.fit` runs the same accumulation in `train_step`, at the price of Keras' per-fit dataset
  set-up). The parameters are solved from the statistics lazily, once, before the next
  `evaluate` or `predict` (`refresh`), not after every batch. `stats_batch_size`: rows per step.
- full_batch: every step sees the whole training split (Newton's method).
- solver: `solve(x, y)`, not a sequence of batch steps at all (SMO).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def flat(x):
    """(N, ...) -> (N, D) float32: images and rows alike."""
    return tf.reshape(tf.cast(x, tf.float32), (tf.shape(x)[0], -1))


def features_of(spec) -> int:
    return math.prod(spec.input_shape)


class Classic(keras.Model):
    """A model whose train_step reports its own values (statistics, Newton steps), not compiled metrics."""

    def get_metrics_result(self):
        # report the compiled metrics evaluation has built; a custom train step builds none
        out = {}
        for m in self.metrics:
            if getattr(m, "built", True):
                r = m.result()
                out.update(r if isinstance(r, dict) else {m.name: r})
        return out


class OnePass(Classic):
    """Fitting = accumulating statistics; `finalize()` turns them into the parameters."""

    # rows summed per step: any size gives the same statistics; large chunks cut per-step overhead
    stats_batch_size = 8192

    _pass_fn = None

    def build(self, input_shape):
        self._statistics = []
        # 1 while the statistics changed since the parameters were last solved from them
        self.stale = self.statistic((), "stale", "float32")

    def statistic(self, shape, name: str, dtype="float64"):
        """A running sum kept for fitting (float64), not a model parameter."""
        var = self.add_weight(shape=shape, initializer="zeros", trainable=False, dtype=dtype, name=name)
        self._statistics.append(var)
        return var

    def count_params(self) -> int:
        return super().count_params() - sum(int(v.numpy().size) for v in self._statistics)

    def reset_statistics(self) -> None:
        """Forget the data seen so far (a later fit starts from nothing)."""
        for var in self._statistics:
            var.assign(tf.zeros_like(var))

    def accumulate(self, x, y):
        raise NotImplementedError

    def finalize(self):
        raise NotImplementedError

    def train_step(self, data):
        x, y = data[0], data[1]
        n = self.accumulate(x, y)
        self.stale.assign(1.0)
        return {"examples": n}

    def statistics_pass(self, x, y) -> dict:
        """Accumulate the statistics of (x, y) chunk by chunk, then solve the parameters."""
        if self._pass_fn is None:
            spec = [tf.TensorSpec((None, *x.shape[1:]), tf.float32), tf.TensorSpec((None, *y.shape[1:]), y.dtype)]
            self._pass_fn = tf.function(self.accumulate, input_signature=spec)
        n = None
        for i in range(0, len(x), self.stats_batch_size):
            n = self._pass_fn(x[i : i + self.stats_batch_size], y[i : i + self.stats_batch_size])
        self.stale.assign(1.0)
        self.refresh()
        return {"examples": float(n)}

    def refresh(self) -> None:
        """Solve the parameters from the statistics if they changed (eagerly: tracing the solve
        into every test/predict function cost more than running it once)."""
        if float(self.stale.numpy()) > 0:
            self.finalize()
            self.stale.assign(0.0)

    # fit's validation goes through `evaluate`, so the parameters are fresh for every evaluation
    def evaluate(self, *args, **kwargs):
        self.refresh()
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self.refresh()
        return super().predict(*args, **kwargs)
