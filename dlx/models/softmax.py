"""Multinomial logistic regression: p(y | x) = softmax(W x + b)."""

import keras
from keras import layers

from dlx.models.layers import inputs, softmax_head


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    x_in = inputs(spec)
    x = layers.Flatten()(x_in)
    init = {"kernel_initializer": "zeros"} if cfg.zero_init else {}
    return keras.Model(x_in, softmax_head(x, spec, reg, **init), name="softmax")
