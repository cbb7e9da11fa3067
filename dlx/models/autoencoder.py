"""Autoencoders: plain, denoising (masking or Gaussian noise) and sparse (KL penalty).

    x -> [corrupt, while training] -> encoder (hidden sizes) -> decoder (mirrored) -> x_hat

The target is always the clean input, so `fit(x, labels)` trains it like any other family: the
loss and metrics read `x` where a classifier reads its labels. The reconstruction loss is summed
over the input's pixels/features and averaged over the batch, as in the book (binary
cross-entropy with sigmoid outputs, or squared error). Tied weights: decoder layer i uses the
transpose of the matching encoder kernel, and has only a bias of its own. The sparse penalty
beta * sum_j KL(rho || rho_hat_j) is added for every hidden layer, rho_hat_j being unit j's mean
activation over the batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from dlx.models.classic import flat
from dlx.models.layers import activation, kernel_regularizer


def summed_bce(x, x_hat):
    x, p = flat(x), tf.clip_by_value(flat(x_hat), 1e-7, 1 - 1e-7)
    return -tf.reduce_sum(x * tf.math.log(p) + (1 - x) * tf.math.log(1 - p), axis=1)


def summed_squared_error(x, x_hat):
    return tf.reduce_sum(tf.square(flat(x) - flat(x_hat)), axis=1)


def kl_sparsity(h, rho: float):
    rho_hat = tf.clip_by_value(tf.reduce_mean(h, axis=0), 1e-7, 1 - 1e-7)
    return tf.reduce_sum(rho * tf.math.log(rho / rho_hat) + (1 - rho) * tf.math.log((1 - rho) / (1 - rho_hat)))


def corrupt(v, noise: str, level: float, seed):
    """Masking noise zeroes each input with probability `level`; Gaussian adds N(0, level^2)."""
    if noise == "mask":
        return v * tf.cast(keras.random.uniform(tf.shape(v), seed=seed) >= level, v.dtype)
    if noise == "gaussian":
        return v + level * keras.random.normal(tf.shape(v), seed=seed)
    return v


@keras.saving.register_keras_serializable("dlx")
class AutoEncoder(keras.Model):
    def __init__(self, visible_shape, hidden, activation_name="sigmoid", tied=False, noise="none", noise_level=0.0,
                 sparsity_target=0.05, sparsity_weight=0.0, loss="bce", l1=0.0, l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.visible_shape, self.hidden = tuple(visible_shape), list(hidden)
        self.activation_name, self.tied, self.noise, self.noise_level = activation_name, tied, noise, noise_level
        self.sparsity_target, self.sparsity_weight, self.loss_name, self.l1, self.l2 = sparsity_target, sparsity_weight, loss, l1, l2
        d = math.prod(self.visible_shape)
        reg = kernel_regularizer(SimpleNamespace(l1=l1, l2=l2))
        act = activation(activation_name)
        self.encoders = [layers.Dense(n, act, kernel_regularizer=reg, name=f"encoder{i}") for i, n in enumerate(self.hidden, 1)]
        # decoder: back through the hidden sizes to the input; sigmoid outputs for cross-entropy
        self.decoder_sizes = [*reversed(self.hidden[:-1]), d]
        self.decoder_activations = [act] * (len(self.hidden) - 1) + [tf.sigmoid if loss == "bce" else None]
        self.decoders = [] if tied else [
            layers.Dense(n, a, kernel_regularizer=reg, name=f"decoder{i}")
            for i, (n, a) in enumerate(zip(self.decoder_sizes, self.decoder_activations), 1)]
        self.seeds = keras.random.SeedGenerator()

    def build(self, input_shape=None):
        n = math.prod(self.visible_shape)
        for enc in self.encoders:
            enc.build((None, n))
            n = enc.units
        if self.tied:
            self.decoder_biases = [self.add_weight(shape=(s,), initializer="zeros", name=f"decoder{i}_bias")
                                   for i, s in enumerate(self.decoder_sizes, 1)]
        else:
            for dec in self.decoders:
                dec.build((None, n))
                n = dec.units
        self.built = True

    def encode(self, x):
        """The code (last hidden layer) of clean inputs."""
        h = flat(x)
        for enc in self.encoders:
            h = enc(h)
        return h

    def decode(self, h):
        if not self.tied:
            for dec in self.decoders:
                h = dec(h)
            return h
        for enc, bias, act in zip(reversed(self.encoders), self.decoder_biases, self.decoder_activations):
            h = tf.matmul(h, enc.kernel, transpose_b=True) + bias
            h = act(h) if act is not None else h
        return h

    def corrupt(self, x):
        return tf.reshape(corrupt(flat(x), self.noise, self.noise_level, self.seeds), tf.shape(x))

    def call(self, x, training=False):
        h = self.corrupt(x) if training else x
        h = flat(h)
        for enc in self.encoders:
            h = enc(h)
            if self.sparsity_weight:
                self.add_loss(self.sparsity_weight * kl_sparsity(h, self.sparsity_target))
        return tf.reshape(self.decode(h), tf.shape(x))

    # the target of an autoencoder is its (clean) input, whatever labels the dataset has
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, x, y_pred, sample_weight, training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, x, y_pred, sample_weight)

    def objective(self):
        """(loss, metrics) to compile with: the summed reconstruction loss, and per-pixel MSE."""
        loss = summed_bce if self.loss_name == "bce" else summed_squared_error
        return loss, [keras.metrics.MeanSquaredError(name="mse")]

    def pretrained_layer(self):
        """(W, decoder bias, encoder bias) of a one-layer tied autoencoder: what an SDAE layer keeps."""
        enc = self.encoders[0]
        return enc.kernel.numpy(), self.decoder_biases[-1].numpy(), enc.bias.numpy()

    def first_layer_filters(self):
        return self.encoders[0].kernel.numpy().T  # (units, inputs)

    def get_config(self):
        return {**super().get_config(), "visible_shape": list(self.visible_shape), "hidden": self.hidden,
                "activation_name": self.activation_name, "tied": self.tied, "noise": self.noise,
                "noise_level": self.noise_level, "sparsity_target": self.sparsity_target,
                "sparsity_weight": self.sparsity_weight, "loss": self.loss_name, "l1": self.l1, "l2": self.l2}


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    model = AutoEncoder(spec.input_shape, cfg.hidden, cfg.activation, cfg.tied, str(cfg.noise), cfg.noise_level,
                        cfg.sparsity_target, cfg.sparsity_weight, str(cfg.loss), reg.l1, reg.l2, name="autoencoder")
    model.build((None, *spec.input_shape))
    return model



def sample(model, run_dir, data, cfg, out_dir: Path) -> dict[str, Path]:
    """Original / corrupted / reconstructed rows for `cfg.n` test inputs (reconstructions.png),
    and the first layer's filters (filters.png)."""
    from dlx import plots

    shape = plots.picture_shape(data.spec.input_shape)
    rng = np.random.default_rng(cfg.seed)
    x = data.test.x[np.sort(rng.choice(len(data.test), min(cfg.n, len(data.test)), replace=False))]
    clean = flat(x)
    noisy = corrupt(clean, model.noise, model.noise_level, seed=cfg.seed)
    recon = flat(model(tf.reshape(noisy, tf.shape(x)), training=False))
    rows = np.stack([clean.numpy(), noisy.numpy(), recon.numpy()]).reshape(3, len(x), *shape)
    filters = plots.tiles(model.first_layer_filters()[: cfg.n_filters], shape, normalise=True)
    return {"reconstructions": plots.image_grid(rows, out_dir / "reconstructions.png"),
            "filters": plots.image_grid(filters, out_dir / "filters.png")}


def figures(model, data, plot_dir: Path) -> dict[str, Path]:
    return sample(model, None, data, SimpleNamespace(seed=0, n=10, n_filters=100), plot_dir)
