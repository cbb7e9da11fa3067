"""Pieces shared by the sequence families: recurrent layers by name, a one-step function over a
trained model's layers (for generation), and the sequence losses and metrics."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from dlx.models.layers import kernel_regularizer

CELLS = {"rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def recurrent(cell: str, units: int, reg=None, **kwargs):
    """A Keras recurrent layer: rnn (Elman, tanh), lstm or gru."""
    return CELLS[str(cell)](units, kernel_regularizer=kernel_regularizer(reg) if reg else None, **kwargs)


class Stepper:
    """Runs a trained embedding -> recurrent cells -> logits stack one time step at a time, with
    explicit states, in one traced function: generation without re-reading the prefix."""

    def __init__(self, embedding, rnns: list, head):
        self.embedding, self.rnns, self.head = embedding, list(rnns), head
        self.step = tf.function(self._step, reduce_retracing=True)

    def zero_states(self, batch: int) -> list:
        return [[tf.zeros((batch, r.cell.units)) for _ in range(2 if isinstance(r, layers.LSTM) else 1)] for r in self.rnns]

    def _step(self, ids, states):
        x = self.embedding(ids)
        new = []
        for rnn, state in zip(self.rnns, states):
            x, state = rnn.cell(x, state, training=False)
            new.append(list(state) if isinstance(state, (list, tuple)) else [state])
        return self.head(x), new


def choose(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """The next id from one row of logits: argmax at temperature 0, else a draw from
    softmax(logits / temperature), among the top_k likeliest when top_k > 0."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
    if 0 < top_k < len(z):
        z = np.where(z >= np.partition(z, -top_k)[-top_k], z, -np.inf)
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


@keras.saving.register_keras_serializable("dlx")
class BitsPerChar(keras.metrics.Mean):
    """Cross-entropy of the next character in bits (the loss / ln 2), from logits."""

    def __init__(self, name="bits_per_char", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        nats = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return super().update_state(nats / math.log(2.0), sample_weight)


@keras.saving.register_keras_serializable("dlx")
class PositiveClassAUC(keras.metrics.AUC):
    """ROC AUC of a two-class softmax's positive-class probability against 0/1 labels."""

    def __init__(self, name="auc", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred[:, 1], sample_weight)


@keras.saving.register_keras_serializable("dlx")
class MaskedCaptionLoss(keras.losses.Loss):
    """Temporal softmax loss: cross-entropy of each next word, summed over the caption's time steps
    except `<NULL>` padding (id `null`), averaged over the captions of the batch (the book's loss)."""

    def __init__(self, null: int = 0, name="masked_caption_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.null = null

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y_true, logits=tf.cast(y_pred, tf.float32))
        return tf.reduce_sum(ce * tf.cast(y_true != self.null, ce.dtype), axis=-1)

    def get_config(self):
        return {**super().get_config(), "null": self.null}
