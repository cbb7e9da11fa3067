"""Image captioning: image features -> the initial hidden state; words -> embedding -> RNN/LSTM -> next-word logits.

The loss is the book's temporal softmax: cross-entropy summed over the steps whose target is not
`<NULL>`, averaged over captions. Data: the COCO feature format (`dataset.path=DIR` with
`coco2014_captions.h5` and `coco2014_vocab.json`). Decoding: greedy or beam search (`beam_width`);
after training, `test_bleu4` (NLTK's corpus BLEU of `bleu_images` held-out test images against
their references; the format's val images are halved into validation and test); `dlx sample split=val n=5` writes captions next to their references.
Run: `dlx train model=captioning dataset=coco_captions dataset.path=coco/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlx.errors import DlxError
from dlx.families._shared import RecurrentFamily, from_models, keras_builder
from dlx.family import check_penalties, positive
from dlx.ranges import ranged


@dataclass
class Captioning(RecurrentFamily):
    kinds: ClassVar[tuple] = ("captions",)
    generates: ClassVar[bool] = True

    name: str = "captioning"
    hidden: int = ranged(512, "[1, 1e6]")
    embedding: int = ranged(256, "[1, 1e6]")  # word vector size
    beam_width: int = ranged(1, "[1, 1000]")  # decoding for BLEU and `dlx sample`; 1 = greedy
    # beam search: finished captions compete by log-probability / ((5 + length) / 6) ** length_penalty
    length_penalty: float = ranged(0.0, "[0, 10]")
    bleu_images: int = ranged(1000, "[0, 1e9]")  # test images captioned for BLEU-4 after training (0 = skip)

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("captioning", reg, ("l1", "l2"))
        positive("model.hidden", cfg.hidden, "a positive number of units")
        positive("model.embedding", cfg.embedding, "a positive word-vector size")
        positive("model.beam_width", cfg.beam_width, "1 or more")
        if cfg.bleu_images < 0:
            raise DlxError(f"model.bleu_images: expected a count >= 0, got {cfg.bleu_images}")

    scores = from_models("captioning", "scores")
    figures = from_models("captioning", "figures")
    sample = from_models("captioning", "sample")


build = keras_builder("captioning")
