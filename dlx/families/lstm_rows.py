"""An image read as a sequence of its rows (28 steps of 28 pixels for MNIST) by one recurrent layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlx.families._shared import RecurrentFamily, check_recurrent, keras_builder
from dlx.ranges import ranged


@dataclass
class LSTMRows(RecurrentFamily):
    kinds: ClassVar[tuple] = ("image",)

    name: str = "lstm_rows"
    hidden: int = ranged(128, "[1, 1e6]")

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_recurrent("lstm_rows", cfg, reg)


build = keras_builder("lstm_rows")
