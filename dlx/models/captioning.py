"""Image captioning (the book's RNN/LSTM captioner on COCO image features):

    image features -> dense -> initial hidden state (LSTM: cell state 0)
    caption words  -> embedding -> rnn | lstm -> logits of the next word at every step

Trained by teacher forcing on the temporal softmax loss that skips `<NULL>` padding (summed over
time, averaged over captions). Decoding starts from `<START>` and stops at `<END>`: greedy, or
beam search (`model.beam_width`). After training, BLEU-4 of the decoded test captions
against all of each image's reference captions: NLTK's `corpus_bleu`, uniform 1- to 4-gram
weights, no smoothing, special tokens removed.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from dlx.errors import DlxError
from dlx.models.layers import kernel_regularizer
from dlx.models.recurrent import Stepper, recurrent

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable("dlx")
class ZeroState(layers.Layer):
    """A zero tensor shaped like its input (the LSTM's initial cell state)."""

    def call(self, x):
        return keras.ops.zeros_like(x)


def normal(fan_in: int):
    return keras.initializers.RandomNormal(stddev=fan_in ** -0.5)


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    """Weights start as in the book's captioner: N(0, 1/fan_in) kernels, N(0, 0.01^2) word
    vectors, zero biases (no forget-gate bias of 1)."""
    features = keras.Input(spec.input_shape, name="features")
    words = keras.Input((None,), dtype="int32", name="captions")
    penalty = kernel_regularizer(reg)
    h0 = layers.Dense(cfg.hidden, kernel_initializer=normal(spec.input_shape[0]), kernel_regularizer=penalty, name="project")(features)
    x = layers.Embedding(spec.num_classes, cfg.embedding, embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
                         name="embedding")(words)
    extra = {"unit_forget_bias": False} if str(cfg.cell) == "lstm" else {}
    rnn = recurrent(cfg.cell, cfg.hidden, reg, return_sequences=True, name="rnn", kernel_initializer=normal(cfg.embedding),
                    recurrent_initializer=normal(cfg.hidden), **extra)
    x = rnn(x, initial_state=[h0, ZeroState(name="c0")(h0)] if str(cfg.cell) == "lstm" else [h0])
    logits = layers.Dense(spec.num_classes, kernel_initializer=normal(cfg.hidden), kernel_regularizer=penalty,
                          dtype="float32", name="logits")(x)
    return keras.Model({"features": features, "captions": words}, logits, name="captioning")


def beam_search(step, states, start: int, end: int, width: int, max_length: int,
                length_penalty: float = 0.0) -> list[int]:
    """The likeliest word sequence by beam search; `step(words, states) -> (logits, states)` runs the
    model one word on for each live hypothesis, `states` a nest of tensors with one row per hypothesis.

    Every step ranks all continuations of the live hypotheses by total log-probability; those that
    pick `end` are set aside as finished and the best `width` others live on, so the beam stays
    `width` wide. A finished hypothesis competes with its score divided by ((5 + length) / 6) **
    `length_penalty` (0: raw log-probabilities, which favour short captions; Wu et al. 2016). The
    search stops when no live hypothesis can still beat the best finished one, or after `max_length`
    words, when the live ones compete as they are. Returns the ids up to and including `end`."""

    def norm(score: float, length: int) -> float:
        return score / ((5 + length) / 6) ** length_penalty

    alive_tokens, alive_scores = [[]], np.zeros(1)
    word = np.array([start], np.int32)
    finished: list[tuple[float, list[int]]] = []  # (normalised score, ids)
    for t in range(1, max_length + 1):
        logits, states = step(word, states)
        logp = tf.nn.log_softmax(tf.cast(logits, tf.float64)).numpy()
        total = (alive_scores[:, None] + logp).ravel()
        keep = []
        for i in np.argsort(-total, kind="stable"):
            parent, token = divmod(int(i), logp.shape[1])
            if token == end:
                finished.append((norm(float(total[i]), t), alive_tokens[parent] + [token]))
            else:
                keep.append((float(total[i]), alive_tokens[parent] + [token], parent, token))
                if len(keep) == width:
                    break
        # log-probabilities only fall as a caption grows; a normalised score can rise by at most the
        # longest caption's penalty, so this bound is safe for any length_penalty >= 0
        best_possible = norm(keep[0][0], max_length) if length_penalty > 0 else keep[0][0]
        if finished and max(f[0] for f in finished) >= best_possible:
            break
        alive_scores = np.array([k[0] for k in keep])
        alive_tokens = [k[1] for k in keep]
        index = tf.constant([k[2] for k in keep])
        states = tf.nest.map_structure(lambda s: tf.gather(s, index), states)
        word = np.array([k[3] for k in keep], np.int32)
    else:  # out of steps: the live captions compete as they are
        finished += [(norm(float(s), len(t)), t) for s, t in zip(alive_scores, alive_tokens)]
    return max(finished, key=lambda f: f[0])[1]


class Decoder:
    def __init__(self, model: keras.Model, vocabulary: list[str]):
        rnn = model.get_layer("rnn")
        self.steps = Stepper(model.get_layer("embedding"), [rnn], model.get_layer("logits"))
        self.project, self.lstm = model.get_layer("project"), isinstance(rnn, layers.LSTM)
        self.words = vocabulary
        self.start, self.end = vocabulary.index("<START>"), vocabulary.index("<END>")
        self.skip = {vocabulary.index(t) for t in ("<NULL>", "<START>", "<END>")}

    def _initial(self, features: np.ndarray) -> list:
        h0 = self.project(tf.constant(features, tf.float32))
        return [[h0, tf.zeros_like(h0)] if self.lstm else [h0]]

    def greedy(self, features: np.ndarray, max_length: int) -> list[list[int]]:
        """The likeliest word at every step, for a batch of images; each caption up to `<END>`."""
        states = self._initial(features)
        word = np.full(len(features), self.start, np.int32)
        steps = []
        for _ in range(max_length):
            logits, states = self.steps.step(word, states)
            word = np.argmax(logits.numpy(), axis=1).astype(np.int32)
            steps.append(word)
        return [self._cut(row) for row in np.stack(steps, axis=1)]

    def beam(self, feature: np.ndarray, width: int, max_length: int, length_penalty: float = 0.0) -> list[int]:
        """Beam search for one image (`beam_search`); width 1 is greedy decoding."""
        return self._cut(beam_search(self.steps.step, self._initial(feature[None]), self.start, self.end, width,
                                     max_length, length_penalty))

    def decode(self, features: np.ndarray, width: int, max_length: int, length_penalty: float = 0.0,
               batch: int = 512) -> list[list[int]]:
        if width == 1:
            return [c for i in range(0, len(features), batch) for c in self.greedy(features[i : i + batch], max_length)]
        return [self.beam(f, width, max_length, length_penalty) for f in features]

    def _cut(self, ids) -> list[int]:
        ids = [int(i) for i in ids]
        return ids[: ids.index(self.end)] if self.end in ids else ids

    def text(self, ids) -> list[str]:
        return [self.words[i] for i in ids if i not in self.skip]


def references(captions: np.ndarray, images: np.ndarray, decoder: Decoder) -> dict[int, list[list[str]]]:
    refs: dict[int, list[list[str]]] = {}
    for caption, image in zip(captions, images):
        refs.setdefault(int(image), []).append(decoder.text(decoder._cut(caption)))
    return refs


def bleu4(model, data, part: str, n_images: int, width: int, length_penalty: float = 0.0) -> float:
    from nltk.translate.bleu_score import corpus_bleu

    features, captions, images = data.extra["images"][part]
    decoder = Decoder(model, data.spec.class_names)
    refs = references(captions, images, decoder)
    chosen = sorted(refs)[:n_images]
    hyps = [decoder.text(c) for c in decoder.decode(features[chosen], width, captions.shape[1] - 1, length_penalty)]
    with warnings.catch_warnings():  # NLTK warns (and scores 0) when an n-gram order has no match
        warnings.simplefilter("ignore")
        return float(corpus_bleu([refs[i] for i in chosen], hyps))


def scores(model, data, cfg: dict, split: str = "test") -> dict[str, float]:
    """BLEU-4 on the held-out test images, after training and in eval."""
    n = cfg["model"]["bleu_images"]
    if not n:
        return {}
    value = bleu4(model, data, "test", n, cfg["model"]["beam_width"], cfg["model"].get("length_penalty", 0.0))
    log.info("BLEU-4 (NLTK corpus_bleu) of %d test images, beam width %d: %.4f",
             min(n, len(np.unique(data.extra["images"]["test"][2]))), cfg["model"]["beam_width"], value)
    return {f"{split}_bleu4": value}


def figures(model, data, plot_dir: Path) -> dict:
    return {}


def sample(model, run_path: Path, data, cfg, out_dir: Path) -> dict[str, Path]:
    """Captions for `n` images of `split` (drawn with `seed`), printed next to their references."""
    if cfg.split not in ("train", "val", "test"):
        raise DlxError(f"split: expected train, val or test for captioning, got '{cfg.split}'")
    import yaml

    run_cfg = yaml.safe_load((run_path / ".hydra" / "config.yaml").read_text())
    width = cfg.beam_width or run_cfg["model"]["beam_width"]
    features, captions, images = data.extra["images"][cfg.split]
    decoder = Decoder(model, data.spec.class_names)
    refs = references(captions, images, decoder)
    chosen = sorted(np.random.default_rng(cfg.seed).choice(sorted(refs), size=min(cfg.n, len(refs)), replace=False))
    lines = []
    for image, ids in zip(chosen, decoder.decode(features[chosen], width, captions.shape[1] - 1,
                                                     run_cfg["model"].get("length_penalty", 0.0))):
        lines += [f"{cfg.split} image {image}", f"  generated: {' '.join(decoder.text(ids))}"]
        lines += [f"  reference: {' '.join(r)}" for r in refs[image]]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"captions_{cfg.split}_seed{cfg.seed}_beam{width}.txt"
    path.write_text(text, encoding="utf-8")
    return {"captions": path}
