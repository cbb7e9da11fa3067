"""Stacked denoising autoencoders: `hidden` sigmoid layers + softmax, pretrained greedily.

Layer i is first trained alone as a tied sigmoid denoising autoencoder (masking noise
`pretrain.corruption[i]`, one level or one per layer) on what layers 1..i-1 make of the data;
then the whole stack + softmax is fine-tuned. `pretrain.enabled=false`: the same network from
random initialisation. Run: `dlx train model=sdae dataset=fashion_mnist`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from dlx.errors import DlxError
from dlx.families._shared import PretrainConfig, check_stack, keras_builder
from dlx.family import Family
from dlx.ranges import ranged


@dataclass
class SDAE(Family):
    name: str = "sdae"
    hidden: List[int] = ranged([500, 500], "[1, 1e7]")
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(lr=0.001))

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_stack("sdae", cfg, reg, data)
        levels = cfg.pretrain.corruption
        if len(levels) not in (1, len(cfg.hidden)):
            raise DlxError(f"model.pretrain.corruption: {len(levels)} levels for {len(cfg.hidden)} hidden layers "
                           f"(model.hidden={list(cfg.hidden)}); give one level, or one per layer")
        if any(not 0 <= c < 1 for c in levels):
            raise DlxError(f"model.pretrain.corruption: expected fractions in [0, 1), got {list(levels)}")


build = keras_builder("sdae")
