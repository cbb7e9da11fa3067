"""An image as a sequence of its rows: (H, W, 1) -> H time steps of W pixels -> one recurrent
layer (lstm | gru | rnn) -> its last state -> softmax. The book's "LSTM on MNIST" (28 steps of 28)."""

import keras
from keras import layers

from dlx.models.layers import inputs, maybe_dropout, softmax_head
from dlx.models.recurrent import recurrent


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    x_in = inputs(spec)
    rows, cols = spec.input_shape[0], spec.input_shape[1] * spec.input_shape[2]
    x = layers.Reshape((rows, cols), name="rows")(x_in)
    x = recurrent(cfg.cell, cfg.hidden, reg, name="rnn")(x)
    x = maybe_dropout(x, reg)
    return keras.Model(x_in, softmax_head(x, spec, reg), name="lstm_rows")
