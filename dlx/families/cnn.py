"""LeNet-style CNN: (conv -> activation -> max-pool) per `conv` entry, then dense layers, then softmax."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, List

from omegaconf import MISSING

from dlx.families._shared import keras_builder
from dlx.family import Family
from dlx.ranges import ranged


class Padding(Enum):
    same = "same"
    valid = "valid"


@dataclass
class ConvLayer:
    filters: int = ranged(MISSING, "[1, 1e6]")
    kernel: int = ranged(5, "[1, 1000]")
    padding: Padding = Padding.same
    pool: int = ranged(2, "[1, 1000]")  # max-pool size after the conv; 1 = no pooling


@dataclass
class CNN(Family):
    kinds: ClassVar[tuple] = ("image",)

    name: str = "cnn"
    conv: List[ConvLayer] = field(default_factory=lambda: [ConvLayer(filters=6), ConvLayer(filters=16)])
    dense: List[int] = ranged([120, 84], "[1, 1e7]")
    activation: str = "relu"


build = keras_builder("cnn")
