"""Deep belief net: `hidden` sigmoid layers + softmax, the layers first pretrained greedily as RBMs.

With `pretrain.enabled` (default) layer i is trained alone as an RBM (CD-`pretrain.k`) on what
layers 1..i-1 make of the data, and its weights *are* `hidden{i}`'s initial weights for
fine-tuning. Each phase logs as `pretrain/layer{i}/...` (train.log, TensorBoard, MLflow); the
pretrained stack is kept in `pretrained.npz` (`pretrain.from_run=DIR` starts from one).
`dlx sample` runs Gibbs chains in the pretrained stack. Run: `dlx train model=dbn dataset=fashion_mnist`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List

from dlx.families._shared import PretrainConfig, check_stack, from_models, keras_builder
from dlx.family import Family, positive
from dlx.ranges import ranged


@dataclass
class DBN(Family):
    generates: ClassVar[bool] = True

    name: str = "dbn"
    hidden: List[int] = ranged([500, 500], "[1, 1e7]")
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_stack("dbn", cfg, reg, data)
        positive("model.pretrain.k", cfg.pretrain.k, "1 or more Gibbs steps")

    sample = from_models("dbn", "sample")


build = keras_builder("dbn")
