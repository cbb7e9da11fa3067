"""Pieces shared by the classifier families: inputs, penalties, dropout, the softmax head."""

from __future__ import annotations

import keras
from keras import layers

from dlx.errors import DlxError


def kernel_regularizer(reg):
    """L1/L2 penalty on a kernel, or None when both weights are zero."""
    if reg.l1 or reg.l2:
        return keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)
    return None


def dense(units: int, activation, reg, **kwargs):
    return layers.Dense(units, activation=activation, kernel_regularizer=kernel_regularizer(reg), **kwargs)


def maybe_dropout(x, reg):
    return layers.Dropout(reg.dropout)(x) if reg.dropout > 0 else x


def softmax_head(x, spec, reg, **kwargs):
    """Class probabilities; float32 even under mixed precision, for a stable loss."""
    return dense(spec.num_classes, "softmax", reg, dtype="float32", name="probs", **kwargs)(x)


def inputs(spec):
    return keras.Input(shape=spec.input_shape, name="image" if spec.kind == "image" else "features")


def activation(name: str):
    """The Keras activation called `name`, or a one-line error naming the key."""
    try:
        return keras.activations.get(name)
    except ValueError:
        raise DlxError(f"model.activation: unknown activation '{name}' (try relu, sigmoid, tanh, gelu)") from None
