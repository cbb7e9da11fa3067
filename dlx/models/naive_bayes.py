"""Naive Bayes from one pass of counts, scored in log space (counts in float64).

- multinomial: theta_kd = (count_kd + alpha) / (sum_d count_kd + alpha D), count = summed feature
  values (word counts); score_k = log phi_k + x . log theta_k.
- bernoulli: b = x > binarize; p_kd = (docs_kd + alpha) / (n_k + 2 alpha);
  score_k = log phi_k + sum_d log(1 - p_kd) + b . (log p_kd - log(1 - p_kd)).

Both are linear in the (binarised) input, so scoring is one matmul. Priors are the class
frequencies. Works on word counts (text datasets) and on images (pixels as counts, or binarised).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dlx.models.classic import OnePass, features_of, flat


@keras.saving.register_keras_serializable("dlx")
class NaiveBayes(OnePass):
    def __init__(self, n_inputs: int, n_classes: int, event: str = "multinomial", alpha: float = 1.0, binarize: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_inputs, self.n_classes, self.event, self.alpha, self.binarize = n_inputs, n_classes, event, alpha, binarize

    def build(self, input_shape):
        super().build(input_shape)
        d, k = self.n_inputs, self.n_classes
        self.class_count = self.statistic((k,), "class_count")
        self.feature_count = self.statistic((k, d), "feature_count")
        self.kernel = self.add_weight(shape=(d, k), initializer="zeros", trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(k,), initializer="zeros", trainable=False, name="bias")

    def events(self, x):
        x = flat(x)
        return tf.cast(x > self.binarize, tf.float32) if self.event == "bernoulli" else x

    def accumulate(self, x, y):
        onehot = tf.one_hot(tf.reshape(tf.cast(y, tf.int32), (-1,)), self.n_classes)
        self.class_count.assign_add(tf.cast(tf.reduce_sum(onehot, axis=0), tf.float64))
        # float32 sums within a batch (exact for whole counts below 2^24), float64 across batches
        self.feature_count.assign_add(tf.cast(tf.matmul(onehot, self.events(x), transpose_a=True), tf.float64))
        return tf.reduce_sum(self.class_count)

    def finalize(self):
        a = self.alpha
        log_prior = tf.math.log(self.class_count) - tf.math.log(tf.reduce_sum(self.class_count))
        if self.event == "bernoulli":
            p = (self.feature_count + a) / (self.class_count[:, None] + 2.0 * a)
            log_p, log_q = tf.math.log(p), tf.math.log1p(-p)
            kernel, bias = tf.transpose(log_p - log_q), log_prior + tf.reduce_sum(log_q, axis=1)
        else:
            total = tf.reduce_sum(self.feature_count, axis=1, keepdims=True)
            kernel = tf.transpose(tf.math.log(self.feature_count + a) - tf.math.log(total + a * self.n_inputs))
            bias = log_prior
        self.kernel.assign(tf.cast(kernel, tf.float32))
        self.bias.assign(tf.cast(bias, tf.float32))

    def call(self, x):
        return tf.nn.softmax(tf.matmul(self.events(x), self.kernel) + self.bias)

    def get_config(self):
        return {**super().get_config(), "n_inputs": self.n_inputs, "n_classes": self.n_classes, "event": self.event,
                "alpha": self.alpha, "binarize": self.binarize}


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    model = NaiveBayes(features_of(spec), spec.num_classes, str(cfg.event), cfg.alpha, cfg.binarize, name="naive_bayes")
    model.build((None, *spec.input_shape))
    return model
