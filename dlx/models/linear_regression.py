"""Least-squares linear regression, y = w.x + b.

`solver=normal_equation`: one streaming pass accumulates X^T X and X^T y (float64, bias column
included); the weights solve (X^T X + n l2 I') w = X^T y, the minimiser of the mean squared error
plus l2 ||w||^2 (I' leaves the bias unpenalised). `solver=gd`: the same model trained by the
configured optimizer on mini-batches (trainer.batch_size=1 gives per-sample updates).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dlx.models.classic import OnePass, features_of, flat


@keras.saving.register_keras_serializable("dlx")
class LinearRegression(OnePass):
    def __init__(self, n_inputs: int, degree: int = 1, solver: str = "normal_equation", l1: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_inputs, self.degree, self.solver, self.l1, self.l2 = n_inputs, degree, solver, l1, l2

    def build(self, input_shape):
        super().build(input_shape)
        p = self.n_inputs * self.degree
        reg = keras.regularizers.L1L2(l1=self.l1, l2=self.l2) if (self.l1 or self.l2) else None
        self.kernel = self.add_weight(shape=(p, 1), initializer="zeros", regularizer=reg, name="kernel")
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")
        # sufficient statistics of [features, 1]
        self.xtx = self.statistic((p + 1, p + 1), "xtx")
        self.xty = self.statistic((p + 1, 1), "xty")

    def features(self, x):
        x = flat(x)
        return tf.concat([x**k for k in range(1, self.degree + 1)], axis=1) if self.degree > 1 else x

    def call(self, x):
        return tf.matmul(self.features(x), self.kernel) + self.bias

    def train_step(self, data):
        if self.solver != "normal_equation":
            return keras.Model.train_step(self, data)
        return super().train_step(data)

    def accumulate(self, x, y):
        f = self.features(x)
        xa = tf.cast(tf.concat([f, tf.ones_like(f[:, :1])], axis=1), tf.float64)
        self.xtx.assign_add(tf.matmul(xa, xa, transpose_a=True))
        self.xty.assign_add(tf.matmul(xa, tf.reshape(tf.cast(y, tf.float64), (-1, 1)), transpose_a=True))
        return self.xtx[-1, -1]

    def finalize(self):
        p = self.n_inputs * self.degree
        n = self.xtx[-1, -1]
        ridge = tf.linalg.diag(tf.concat([tf.fill([p], n * self.l2), tf.zeros([1], tf.float64)], axis=0))
        # least squares rather than a plain solve: a constant or repeated feature stays solvable
        theta = tf.linalg.lstsq(self.xtx + ridge, self.xty, fast=False)
        self.kernel.assign(tf.cast(theta[:p], tf.float32))
        self.bias.assign(tf.cast(theta[p], tf.float32))

    def get_config(self):
        return {**super().get_config(), "n_inputs": self.n_inputs, "degree": self.degree, "solver": self.solver, "l1": self.l1, "l2": self.l2}


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    model = LinearRegression(features_of(spec), cfg.degree, str(cfg.solver), reg.l1, reg.l2, name="linear_regression")
    model.build((None, *spec.input_shape))
    return model
