"""Multi-layer perceptron: flatten -> (dense -> [batch norm] -> activation -> [dropout]) x N -> softmax."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from dlx.families._shared import keras_builder
from dlx.family import Family
from dlx.ranges import ranged


@dataclass
class MLP(Family):
    name: str = "mlp"
    hidden: List[int] = ranged([256], "[1, 1e7]")  # one entry per hidden layer, e.g. [512, 256]
    activation: str = "relu"  # any keras activation: relu, sigmoid, tanh, gelu, ...
    batch_norm: bool = False


build = keras_builder("mlp")
