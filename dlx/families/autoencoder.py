"""Autoencoder: flatten -> dense encoder (`hidden`) -> mirrored decoder -> the input again.

`ae`, `dae` and `sparse_ae` (conf/model/) are presets of this one family. The target is the clean
input, whatever labels the dataset has; the loss is binary cross-entropy (`loss=bce`, inputs in
[0, 1]) or squared error summed over the pixels. Options: tied weights, input corruption while
training (`noise=mask|gaussian`, `noise_level`), a KL sparsity penalty on sigmoid hidden layers
(`sparsity_target`, `sparsity_weight`). `dlx sample` writes original / corrupted / reconstructed
test inputs and the first layer's filters. Run: `dlx train model=dae dataset=mnist`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import List

from dlx.errors import DlxError
from dlx.families._shared import (
    Unsupervised,
    from_models,
    keras_builder,
)
from dlx.family import check_penalties, check_unit_interval, positive
from dlx.ranges import ranged


class Noise(Enum):
    none = "none"
    mask = "mask"  # masking noise: each input set to 0 with probability `level`
    gaussian = "gaussian"  # additive N(0, level^2)


class ReconstructionLoss(Enum):
    bce = "bce"  # binary cross-entropy: inputs in [0, 1], sigmoid outputs
    mse = "mse"


@dataclass
class Autoencoder(Unsupervised):
    name: str = "autoencoder"
    hidden: List[int] = ranged([256], "[1, 1e7]")
    activation: str = "sigmoid"
    tied: bool = False  # decoder kernels are the encoder's, transposed
    noise: Noise = Noise.none  # input corruption while training (denoising)
    noise_level: float = ranged(0.0, "[0, 1e6]")  # mask: fraction of inputs zeroed; gaussian: standard deviation
    # sparse: beta * sum_j KL(rho || mean activation of hidden unit j) on every sigmoid hidden layer
    sparsity_target: float = ranged(0.05, "(0, 1)")
    sparsity_weight: float = ranged(0.0, "[0, 1e9]")  # beta; 0 = off
    loss: ReconstructionLoss = ReconstructionLoss.bce

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("autoencoder", reg, ("l1", "l2"))
        if not cfg.hidden or min(cfg.hidden) < 1:
            raise DlxError(f"model.hidden: expected one or more positive layer sizes, got {cfg.hidden}")
        noise = str(cfg.noise)
        if noise == "mask" and not 0 < cfg.noise_level < 1:
            raise DlxError(f"model.noise_level: masking noise needs a fraction in (0, 1), got {cfg.noise_level}")
        if noise == "gaussian":
            positive("model.noise_level", cfg.noise_level, "a positive standard deviation")
        if cfg.sparsity_weight:
            if cfg.activation != "sigmoid":
                raise DlxError(f"model.sparsity_weight: the KL sparsity penalty needs activation=sigmoid "
                               f"(mean activations in (0, 1)), got activation={cfg.activation}")
            if not 0 < cfg.sparsity_target < 1:
                raise DlxError(f"model.sparsity_target: expected a fraction in (0, 1), got {cfg.sparsity_target}")
        if str(cfg.loss) == "bce":
            check_unit_interval("autoencoder", data, "loss=bce compares with pixel intensities")


    figures = from_models("autoencoder", "figures")
    sample = from_models("autoencoder", "sample")


build = keras_builder("autoencoder")
