"""Multinomial logistic regression: flatten -> one dense layer -> softmax (the book's first model)."""

from __future__ import annotations

from dataclasses import dataclass

from dlx.families._shared import keras_builder
from dlx.family import Family


@dataclass
class Softmax(Family):
    name: str = "softmax"
    zero_init: bool = False  # the book initialises W and b to zeros


build = keras_builder("softmax")
