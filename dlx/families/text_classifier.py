"""Word ids -> embedding -> (bidirectional) LSTM/GRU -> softmax; `lstm_sentiment` is its preset.

Text datasets load as word ids for it: id 0 pads, 1 is any word outside the vocabulary, 2.. the
`vocab_size - 2` most frequent training words, padded/truncated to `dataset.max_length`
(`padding`, `truncating` pre/post, as `keras.utils.pad_sequences`); the padding is masked.
Metrics: accuracy, and ROC AUC for two classes.
Run: `dlx train model=lstm_sentiment dataset=imdb dataset.vocab_size=20000`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlx.families._shared import RecurrentFamily, check_recurrent, keras_builder
from dlx.family import positive
from dlx.ranges import ranged


@dataclass
class TextClassifier(RecurrentFamily):
    kinds: ClassVar[tuple] = ("words",)

    name: str = "text_classifier"
    hidden: int = ranged(64, "[1, 1e6]")
    embedding: int = ranged(64, "[1, 1e6]")
    bidirectional: bool = True

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_recurrent("text_classifier", cfg, reg)
        positive("model.embedding", cfg.embedding, "a positive embedding size")


build = keras_builder("text_classifier")
