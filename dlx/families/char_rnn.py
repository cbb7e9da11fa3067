"""Character-level language model: embedding -> `layers` x `cell` (rnn/lstm/gru) -> next-character logits.

The vocabulary is the corpus's sorted characters (the run's class names); the first 90 % of the
text trains, the last 10 % validates and tests. Examples are windows of `dataset.seq_length`
characters. Metrics: loss, accuracy, `bits_per_char`. Every `sample_every` epochs a sample goes to
train.log and TensorBoard's Text tab. `dlx sample prime="ROMEO:" temperature=0.8 top_k=K seed=1`
streams text. Gradient clipping: `optimizer.clipvalue` (the book's 5) or `optimizer.clipnorm`.
Run: `dlx train model=char_rnn dataset=tinyshakespeare optimizer.clipvalue=5`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlx.errors import DlxError
from dlx.families._shared import (
    RecurrentFamily,
    check_recurrent,
    from_models,
    keras_builder,
)
from dlx.family import positive
from dlx.ranges import ranged


@dataclass
class CharRNN(RecurrentFamily):
    kinds: ClassVar[tuple] = ("chars",)
    generates: ClassVar[bool] = True

    name: str = "char_rnn"
    layers: int = ranged(2, "[1, 64]")
    hidden: int = ranged(256, "[1, 1e6]")
    embedding: int = ranged(64, "[1, 1e6]")
    # a text sample in train.log and TensorBoard every N epochs (0 = never)
    sample_every: int = ranged(5, "[0, 1e6]")
    sample_length: int = ranged(200, "[1, 1e7]")

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_recurrent("char_rnn", cfg, reg)
        positive("model.layers", cfg.layers, "1 or more")
        positive("model.embedding", cfg.embedding, "a positive embedding size")
        if cfg.sample_every < 0 or cfg.sample_length < 1:
            raise DlxError(f"model.sample_every / sample_length: expected >= 0 / >= 1, got {cfg.sample_every} / {cfg.sample_length}")

    callbacks = from_models("char_rnn", "callbacks")
    figures = from_models("char_rnn", "figures")
    sample = from_models("char_rnn", "sample")


build = keras_builder("char_rnn")
