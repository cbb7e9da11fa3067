"""Stacked denoising autoencoders (Vincent et al. 2010; the book's SDAE chapter): each hidden layer
pretrained greedily as a tied sigmoid autoencoder that reconstructs its clean input from a copy
corrupted by masking noise (`model.pretrain.corruption`, one level per layer), then the sigmoid
stack + softmax fine-tuned by backpropagation.
"""

from __future__ import annotations

import keras

from dlx.models.autoencoder import AutoEncoder
from dlx.models.stacked import build_stack


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    levels = list(cfg.pretrain.corruption)

    def stage(i: int, n_in: int, units: int) -> keras.Model:
        level = levels[min(i, len(levels)) - 1]
        dae = AutoEncoder((n_in,), [units], "sigmoid", tied=True, noise="mask" if level > 0 else "none",
                          noise_level=level, loss="bce", name=f"dae{i}")
        dae.build((None, n_in))
        return dae

    return build_stack(cfg, reg, spec, "sdae", stage, trainer)
