"""Gaussian discriminant analysis: p(x | y=k) = N(mu_k, Sigma_k), p(y=k) = phi_k.

One pass accumulates, per class, the count, the sum of x and the scatter sum x x^T (float64);
the maximum-likelihood estimates follow: phi_k = n_k / n, mu_k = sum_k / n_k, and Sigma the
within-class covariance (shared: sum over classes / n, the book's and LDA's estimate) or one per
class (per_class: / n_k, QDA). `reg_covar` times the mean variance is added to the diagonal so
constant features (border pixels) keep the covariance invertible.

Scores are log-joint densities log phi_k + log N(x; mu_k, Sigma_k), computed in log space
through Cholesky factors; with a shared covariance they are linear in x (W x + b). The output
is their softmax: the class posteriors.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from dlx.models.classic import OnePass, features_of, flat


@keras.saving.register_keras_serializable("dlx")
class GDA(OnePass):
    def __init__(self, n_inputs: int, n_classes: int, per_class: bool = False, reg_covar: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.n_inputs, self.n_classes, self.per_class, self.reg_covar = n_inputs, n_classes, per_class, reg_covar

    def build(self, input_shape):
        super().build(input_shape)
        d, k = self.n_inputs, self.n_classes

        stat = self.statistic

        def param(shape, name):
            return self.add_weight(shape=shape, initializer="zeros", trainable=False, name=name)

        self.counts, self.sums = stat((k,), "counts"), stat((k, d), "sums")
        self.scatter = stat((k, d, d) if self.per_class else (d, d), "scatter")
        if self.per_class:  # z = L_k^-1 (x - mu_k); score = -|z|^2 / 2 + offset_k
            self.whiten = param((k, d, d), "whiten")
            self.shift = param((k, d), "shift")  # L_k^-1 mu_k
            self.offset = param((k,), "offset")
        else:
            self.kernel = param((d, k), "kernel")
            self.bias = param((k,), "bias")

    def accumulate(self, x, y):
        x = flat(x)
        onehot = tf.one_hot(tf.reshape(tf.cast(y, tf.int32), (-1,)), self.n_classes)
        self.counts.assign_add(tf.cast(tf.reduce_sum(onehot, axis=0), tf.float64))
        self.sums.assign_add(tf.cast(tf.matmul(onehot, x, transpose_a=True), tf.float64))
        # float32 products per batch, float64 running sums
        if self.per_class:
            scatter = tf.einsum("nk,nd,ne->kde", onehot, x, x)
        else:
            scatter = tf.matmul(x, x, transpose_a=True)
        self.scatter.assign_add(tf.cast(scatter, tf.float64))
        return tf.reduce_sum(self.counts)

    def estimates(self):
        """(priors, means, covariance(s)) by maximum likelihood, before `reg_covar`."""
        n_k = tf.maximum(self.counts, 1.0)
        means = self.sums / n_k[:, None]
        outer = means[:, :, None] * means[:, None, :] * n_k[:, None, None]  # n_k mu_k mu_k^T
        if self.per_class:
            cov = (self.scatter - outer) / n_k[:, None, None]
        else:
            cov = (self.scatter - tf.reduce_sum(outer, axis=0)) / tf.reduce_sum(self.counts)
        return self.counts / tf.reduce_sum(self.counts), means, cov

    def finalize(self):
        priors, means, cov = self.estimates()
        d = self.n_inputs
        eye = tf.eye(d, dtype=tf.float64)
        var = tf.reduce_mean(tf.linalg.diag_part(cov), axis=-1)
        cov = cov + (self.reg_covar * var)[..., None, None] * eye if self.per_class else cov + self.reg_covar * var * eye
        chol = tf.linalg.cholesky(cov)
        log_prior = tf.math.log(tf.maximum(priors, 1e-300))
        if self.per_class:
            whiten = tf.linalg.triangular_solve(chol, tf.broadcast_to(eye, tf.shape(chol)), lower=True)  # L^-1
            log_det = 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)), axis=-1)
            self.whiten.assign(tf.cast(whiten, tf.float32))
            self.shift.assign(tf.cast(tf.einsum("kde,ke->kd", whiten, means), tf.float32))
            self.offset.assign(tf.cast(log_prior - 0.5 * log_det - 0.5 * d * math.log(2 * math.pi), tf.float32))
        else:
            w = tf.linalg.cholesky_solve(chol, tf.transpose(means))  # Sigma^-1 mu_k, (d, k)
            b = log_prior - 0.5 * tf.reduce_sum(tf.transpose(means) * w, axis=0)
            self.kernel.assign(tf.cast(w, tf.float32))
            self.bias.assign(tf.cast(b, tf.float32))

    def call(self, x):
        x = flat(x)
        if self.per_class:
            z = tf.einsum("kde,ne->nkd", self.whiten, x) - self.shift[None]
            scores = self.offset - 0.5 * tf.reduce_sum(tf.square(z), axis=-1)
        else:
            scores = tf.matmul(x, self.kernel) + self.bias
        return tf.nn.softmax(scores)

    def get_config(self):
        return {**super().get_config(), "n_inputs": self.n_inputs, "n_classes": self.n_classes,
                "per_class": self.per_class, "reg_covar": self.reg_covar}


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    model = GDA(features_of(spec), spec.num_classes, str(cfg.covariance) == "per_class", cfg.reg_covar, name="gda")
    model.build((None, *spec.input_shape))
    return model
