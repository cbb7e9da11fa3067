"""Character-level RNN language model (the book's min-char-rnn, in Keras):

    characters -> embedding -> (rnn | lstm | gru) x layers -> logits of the next character

Trained on windows of `dataset.seq_length` characters with the loss at every position; reports
bits per character. Generation (`dlx sample`, and a sample every `model.sample_every` epochs
in train.log and TensorBoard) runs the trained layers one character at a time with explicit
states, so a long text costs one step per character.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import keras
import numpy as np
from keras import layers

from dlx.errors import DlxError
from dlx.models.layers import maybe_dropout
from dlx.models.recurrent import Stepper, choose, recurrent

log = logging.getLogger(__name__)


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    ids = keras.Input((None,), dtype="int32", name="chars")
    x = layers.Embedding(spec.num_classes, cfg.embedding, name="embedding")(ids)
    for i in range(1, cfg.layers + 1):
        x = recurrent(cfg.cell, cfg.hidden, reg, return_sequences=True, name=f"rnn{i}")(x)
        x = maybe_dropout(x, reg)
    logits = layers.Dense(spec.num_classes, dtype="float32", name="logits")(x)
    return keras.Model(ids, logits, name="char_rnn")


def stepper(model: keras.Model) -> Stepper:
    rnns = [layer for layer in model.layers if layer.name.startswith("rnn")]
    return Stepper(model.get_layer("embedding"), rnns, model.get_layer("logits"))


def default_prime(vocabulary: list[str]) -> str:
    return "\n" if "\n" in vocabulary else vocabulary[0]


def encode(text: str, vocabulary: list[str], key: str = "prime") -> list[int]:
    index = {c: i for i, c in enumerate(vocabulary)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise DlxError(f"{key}: {''.join(unknown)!r} not in the run's vocabulary of {len(vocabulary)} characters "
                       f"(the characters of its training text); leave them out")
    return [index[c] for c in text]


def generate(model: keras.Model, vocabulary: list[str], prime: str, length: int, temperature: float = 1.0,
             top_k: int = 0, seed: int = 0, emit=None, steps: Stepper | None = None) -> str:
    """`length` characters following `prime`; `emit(char)` is called for each as it is drawn.
    The same seed gives the same text; temperature 0 is greedy."""
    if not prime:
        raise DlxError("prime: expected at least one character to start from")
    ids = encode(prime, vocabulary)
    steps = steps or stepper(model)
    rng = np.random.default_rng(seed)
    states = steps.zero_states(1)
    for i in ids[:-1]:
        _, states = steps.step(np.array([i], np.int32), states)
    out, current = [], ids[-1]
    for _ in range(length):
        logits, states = steps.step(np.array([current], np.int32), states)
        current = choose(logits.numpy()[0], temperature, top_k, rng)
        out.append(vocabulary[current])
        if emit:
            emit(vocabulary[current])
    return "".join(out)


class TextSamples(keras.callbacks.Callback):
    """A generated text every `every` epochs, into train.log and (when given) TensorBoard's Text tab."""

    def __init__(self, vocabulary: list[str], every: int, length: int, log_dir: Path | None, seed: int):
        super().__init__()
        self.vocabulary, self.every, self.length, self.log_dir, self.seed = vocabulary, every, length, log_dir, seed
        self.writer, self.steps = None, None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        self.steps = self.steps or stepper(self.model)  # traced once, reads the current weights
        text = generate(self.model, self.vocabulary, default_prime(self.vocabulary), self.length, 0.8, seed=self.seed + epoch,
                        steps=self.steps)
        log.info("sample after epoch %d (temperature 0.8):\n%s", epoch + 1, text)
        if self.log_dir is not None:
            import tensorflow as tf

            self.writer = self.writer or tf.summary.create_file_writer(str(self.log_dir))
            with self.writer.as_default():
                tf.summary.text("sample", "    " + text.replace("\n", "\n    "), step=epoch + 1)  # markdown code block
            self.writer.flush()


def callbacks(model, data, cfg: dict, run_dir: Path) -> list:
    every = cfg["model"]["sample_every"]
    if not every:
        return []
    tb = run_dir / "tb" / "samples" if cfg["logger"]["tensorboard"] else None
    return [TextSamples(data.spec.class_names, every, cfg["model"]["sample_length"], tb, cfg["trainer"]["seed"])]


def figures(model, data, plot_dir: Path) -> dict:
    return {}  # learning curves (loss, bits/char) are drawn for every family


def sample(model, run_path: Path, data, cfg, out_dir: Path) -> dict[str, Path]:
    """Stream the generated text to stdout and save it (prime included) under out_dir."""
    vocabulary = data.spec.class_names
    prime = cfg.prime if cfg.prime is not None else default_prime(vocabulary)
    encode(prime, vocabulary)  # unknown characters fail before anything is printed
    sys.stdout.write(prime)

    def emit(ch: str) -> None:
        sys.stdout.write(ch)
        sys.stdout.flush()

    text = generate(model, vocabulary, prime, cfg.length, cfg.temperature, cfg.top_k, cfg.seed, emit)
    sys.stdout.write("\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"text_seed{cfg.seed}_t{cfg.temperature:g}.txt"
    path.write_text(prime + text, encoding="utf-8")
    return {"text": path}
