"""LeNet-style CNN: (conv -> activation -> max-pool) per `conv` entry, dense layers, softmax."""

import keras
from keras import layers

from dlx.errors import DlxError
from dlx.models.layers import activation, dense, inputs, kernel_regularizer, maybe_dropout, softmax_head


def _check_fits(cfg, spec) -> None:
    """Fail with the offending layer named, before Keras fails with a negative dimension."""
    size = min(spec.input_shape[:2])
    for i, c in enumerate(cfg.conv):
        if c.padding == "valid":
            if size < c.kernel:
                raise DlxError(
                    f"model.conv[{i}]: a {c.kernel}x{c.kernel} 'valid' conv needs {c.kernel}x{c.kernel} input, "
                    f"gets {size}x{size} on {spec.name}; use padding: same or a smaller kernel"
                )
            size = size - c.kernel + 1
        if c.pool > 1:
            if size < c.pool:
                raise DlxError(f"model.conv[{i}]: pool {c.pool} on a {size}x{size} map; use pool: 1")
            size //= c.pool


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    _check_fits(cfg, spec)
    act = activation(cfg.activation)
    x_in = inputs(spec)
    x = x_in
    for i, c in enumerate(cfg.conv, start=1):
        x = layers.Conv2D(
            c.filters, c.kernel, padding=c.padding, activation=act,
            kernel_regularizer=kernel_regularizer(reg), name=f"conv{i}",
        )(x)
        if c.pool > 1:
            x = layers.MaxPooling2D(c.pool, name=f"pool{i}")(x)
    x = maybe_dropout(layers.Flatten()(x), reg)  # dropout after the conv stack too (LeNet's C5)
    for i, units in enumerate(cfg.dense, start=1):
        x = dense(units, act, reg, name=f"dense{i}")(x)
        x = maybe_dropout(x, reg)
    return keras.Model(x_in, softmax_head(x, spec, reg), name="cnn")
