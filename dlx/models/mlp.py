"""Multi-layer perceptron: flatten -> (dense -> [batch norm] -> activation -> [dropout]) x N -> softmax."""

import keras
from keras import layers

from dlx.models.layers import activation, dense, inputs, maybe_dropout, softmax_head


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    x_in = inputs(spec)
    x = layers.Flatten()(x_in)
    for i, units in enumerate(cfg.hidden, start=1):
        x = dense(units, None, reg, name=f"hidden{i}")(x)
        if cfg.batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation(activation(cfg.activation))(x)
        x = maybe_dropout(x, reg)
    return keras.Model(x_in, softmax_head(x, spec, reg), name="mlp")
