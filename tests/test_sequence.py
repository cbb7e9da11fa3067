"""Sequence families: char_rnn, lstm_rows, text_classifier (lstm_sentiment), captioning."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, keras_npz, tiny_cfg, write_coco, write_text_folder

from dlx.commands.train import train

from dlx.config import ns

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

VERSE = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
SMALL_CHAR = ["model=char_rnn", "model.layers=1", "model.hidden=64", "model.embedding=16", "model.sample_every=0"]


def run_dir(workdir: Path, name: str) -> str:
    return f"hydra.run.dir={workdir / name}"


# --------------------------------------------------------------------------- data
def test_character_corpus_windows_and_split(tmp_path):
    from dlx.data import datasets

    text = "abcdefghij" * 40  # 400 characters: 360 train, 20 validation, 20 test
    (tmp_path / "t.txt").write_text(text)
    data = datasets.load(ns(tiny_cfg("dataset=tinyshakespeare", f"dataset.path={tmp_path / 't.txt'}", "dataset.seq_length=7")["dataset"]))
    assert data.spec.kind == "chars" and data.spec.class_names == sorted(set(text))
    assert data.train.x.shape == (359 // 7, 7) and data.val.x.shape == data.test.x.shape == (19 // 7, 7)
    decode = np.array(data.spec.class_names)
    assert "".join(decode[data.train.x[0]]) == "abcdefg" and "".join(decode[data.train.y[0]]) == "bcdefgh"
    assert "".join(decode[data.val.x[0]]) == text[360:367]  # validation: the next 5 %, by position
    assert "".join(decode[data.test.x[0]]) == text[380:387]  # test: the last 5 %, which nothing else sees


def test_character_vocabulary_comes_from_the_training_text_only(tmp_path):
    from dlx.data import datasets

    text = "abcab" * 72 + "abcXYabcab" * 4  # X and Y appear only after the first 90 %
    (tmp_path / "t.txt").write_text(text)
    data = datasets.load(ns(tiny_cfg("dataset=tinyshakespeare", f"dataset.path={tmp_path / 't.txt'}", "dataset.seq_length=5")["dataset"]))
    assert data.spec.class_names == ["a", "b", "c", "\ufffd"]  # unseen characters share one id
    unseen = data.spec.class_names.index("\ufffd")
    assert unseen not in data.train.x and (data.test.x == unseen).sum() + (data.val.x == unseen).sum() == 8


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"caf\xe9 au lait", "not UTF-8 text (byte 3 is 0xe9)"),
    (b"tiny", "too few for one window"),
])
def test_bad_text_files_are_one_line_errors(dlx, workdir, content, message):
    (workdir / "bad.txt").write_bytes(content)
    proc = dlx("train", *SMALL_CHAR, "dataset=tinyshakespeare", "dataset.path=bad.txt", "logger=none", run_dir(workdir, "run"))
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir / "run").exists()


def test_pad_matches_keras_pad_sequences():
    import keras

    from dlx.data.sequences import pad

    seqs = [[1, 2, 3, 4, 5], [6], [], [7, 8, 9]]
    for padding in ("pre", "post"):
        for truncating in ("pre", "post"):
            want = keras.utils.pad_sequences(seqs, maxlen=3, padding=padding, truncating=truncating)
            np.testing.assert_array_equal(pad(seqs, 3, padding, truncating), want)


def test_imdb_as_word_ids(tmp_path):
    from dlx.data import datasets

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 60, size=rng.integers(3, 20)).tolist() for _ in range(50)]
    labels = rng.integers(0, 2, size=50)
    keras_npz(tmp_path / "imdb.npz", x_train=seqs[:30], y_train=labels[:30], x_test=seqs[30:], y_test=labels[30:])
    cfg = tiny_cfg("dataset=imdb", f"dataset.path={tmp_path}", "dataset.vocab_size=12", "dataset.max_length=8",
                   "dataset.val_size=5")["dataset"]
    data = datasets.load(ns(cfg), words=True)
    order = np.arange(30)
    np.random.RandomState(113).shuffle(order)  # keras.datasets.imdb's shuffle
    ranks = np.array(seqs[order[0]][-8:])  # truncating=pre keeps the last 8 words
    want = np.where(ranks <= 10, ranks + 1, 1)  # ranks 1..vocab_size-2 -> ids 2.., rarer -> 1
    np.testing.assert_array_equal(data.train.x[0][-len(want):], want)
    assert data.spec.kind == "words" and data.train.x.shape[1] == 8 and len(data.spec.feature_names) == 12
    assert data.spec.feature_names[:3] == ["<pad>", "<unk>", "<rank 1>"]


def test_text_folder_as_word_ids_uses_its_own_vocabulary(tmp_path):
    from dlx.data import datasets

    root = write_text_folder(tmp_path / "corpus")
    cfg = tiny_cfg("dataset=text_folder", f"dataset.path={root}", "dataset.max_length=12", "dataset.vocab_size=20",
                   "dataset.padding=post", "dataset.test_size=20", "dataset.val_size=10")["dataset"]
    data = datasets.load(ns(cfg), words=True)
    names = data.spec.feature_names
    assert names[:2] == ["<pad>", "<unk>"] and len(names) == 20
    first = data.train.x[0]
    assert first[0] != 0 and set(first.tolist()) <= set(range(20))  # post-padding: words first


# --------------------------------------------------------------------------- char_rnn
def test_char_rnn_trains_and_samples_through_the_cli(dlx, workdir):
    (workdir / "verse.txt").write_text(VERSE * 8)
    dlx("train", *SMALL_CHAR, "dataset=tinyshakespeare", "dataset.path=verse.txt", "dataset.seq_length=20",
        "trainer.epochs=2", "trainer.batch_size=8", "model.sample_every=1", "model.sample_length=30",
        "logger=tensorboard", run_dir(workdir, "run"), check=True)
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert metrics["test_bits_per_char"] == pytest.approx(metrics["test_loss"] / math.log(2), rel=1e-4)
    assert json.loads((workdir / "run" / "data_spec.json").read_text())["class_names"] == sorted(set(VERSE))
    assert "sample after epoch 2" in (workdir / "run" / "train.log").read_text()

    args = ("sample", "run=run", "prime=First", "length=40", "temperature=0.8")
    first, again, other = (dlx(*args, f"seed={s}", check=True) for s in (1, 1, 2))
    text = (workdir / "run" / "samples" / "text_seed1_t0.8.txt").read_text()
    assert text.startswith("First") and len(text) == 45
    assert text in first.stdout and text in again.stdout  # streamed, and reproducible with a seed
    assert (workdir / "run" / "samples" / "text_seed2_t0.8.txt").read_text() != text

    proc = dlx("sample", "run=run", "prime=FirstQ", "length=5")
    assert proc.returncode == 2 and "prime: 'Q' not in the run's vocabulary" in proc.stderr
    proc = dlx("predict", "run=run", "inputs=verse.txt")
    assert proc.returncode == 2 and "use dlx sample" in proc.stderr


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_by_step_generation_matches_the_whole_sequence_model(cell):
    """The stepper's logits after each character equal the trained model's on the whole sequence."""
    from types import SimpleNamespace

    from dlx.models import char_rnn

    spec = SimpleNamespace(num_classes=11)
    reg = SimpleNamespace(l1=0.0, l2=0.0, dropout=0.0)
    model = char_rnn.build(SimpleNamespace(cell=cell, layers=2, hidden=8, embedding=4), reg, spec)
    ids = np.random.default_rng(0).integers(0, 11, size=(1, 9)).astype(np.int32)
    whole = model(ids).numpy()[0]
    steps = char_rnn.stepper(model)
    states = steps.zero_states(1)
    for t in range(ids.shape[1]):
        logits, states = steps.step(ids[:, t], states)
        np.testing.assert_allclose(logits.numpy()[0], whole[t], rtol=1e-4, atol=1e-5)


def test_char_rnn_overfits_a_text_and_recites_it_greedily(workdir):
    from dlx.models.char_rnn import generate

    (workdir / "verse.txt").write_text(VERSE * 20)
    cfg = tiny_cfg(*SMALL_CHAR, "dataset=tinyshakespeare", "dataset.path=verse.txt", "dataset.seq_length=60",
                   "trainer.epochs=60", "trainer.batch_size=6", "optimizer.lr=0.01", "trainer.early_stopping.enabled=false")
    metrics, objects = train(cfg, workdir / "run")
    assert metrics["test_accuracy"] == 1.0
    prime = "First"
    text = generate(objects["model"], objects["data"].spec.class_names, prime, 2 * len(VERSE), temperature=0)
    assert prime + text == (VERSE * 3)[: len(prime) + 2 * len(VERSE)]


def unigram_bits_per_char(train: str, val: str) -> float:
    counts, vocab = Counter(train), set(train) | set(val)
    total = len(train) + len(vocab)
    return -sum(math.log2((counts[c] + 1) / total) for c in val) / len(val)


def test_char_rnn_beats_a_unigram_model_on_tiny_shakespeare(workdir):
    corpus = SHARED_DATA / "tinyshakespeare" / "input.txt"
    if not corpus.is_file():
        pytest.skip(f"tiny-shakespeare not found at {corpus} (the ../shared checkout is absent)")
    text = corpus.read_text()
    unigram = unigram_bits_per_char(text[: int(len(text) * 0.9)], text[int(len(text) * 0.95) :])  # train vs test
    cfg = tiny_cfg("model=char_rnn", "model.layers=1", "model.hidden=128", "model.embedding=32", "model.sample_every=0",
                   "dataset=tinyshakespeare", f"dataset.path={corpus}", "dataset.subset=2000", "optimizer.lr=0.01",
                   "optimizer.clipnorm=5", "trainer.epochs=2", "trainer.batch_size=64")
    metrics, _ = train(cfg, workdir / "run")
    assert metrics["test_bits_per_char"] < unigram - 1.0, (metrics["test_bits_per_char"], unigram)


# --------------------------------------------------------------------------- lstm_rows, lstm_sentiment
def test_lstm_rows_and_lstm_sentiment_through_the_cli(dlx, workdir):
    dlx("train", "model=lstm_rows", "model.cell=gru", "model.hidden=32", "dataset=digits", "trainer.epochs=12",
        "optimizer.lr=0.01", "logger=none", run_dir(workdir, "rows"), check=True)
    assert json.loads((workdir / "rows" / "metrics.json").read_text())["test_accuracy"] >= 0.6  # chance: 0.1

    write_text_folder(workdir / "corpus")
    dlx("train", "model=lstm_sentiment", "model.hidden=16", "model.embedding=16", "dataset=text_folder",
        "dataset.path=corpus", "dataset.max_length=30", "dataset.test_size=20", "dataset.val_size=10",
        "trainer.epochs=8", "trainer.batch_size=16", "optimizer.lr=0.01", "logger=none", run_dir(workdir, "sent"), check=True)
    metrics = json.loads((workdir / "sent" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_auc"] >= 0.9  # two vocabularies: easy to separate
    proc = dlx("eval", "run=sent", check=True)
    assert f"{metrics['test_auc']:.4f}" in proc.stdout
    (workdir / "doc.txt").write_text("The striker scored a late goal and the team won the cup.")
    proc = dlx("predict", "run=sent", "inputs=doc.txt", check=True)  # tokenised and padded like training
    assert proc.stdout.split()[1] == "sport"

    proc = dlx("train", "model=lstm_sentiment", "dataset=digits")
    assert proc.returncode == 2 and "needs text, but dataset=digits is images" in proc.stderr


# --------------------------------------------------------------------------- captioning
def test_caption_loss_ignores_null_positions():
    import tensorflow as tf

    from dlx.models.recurrent import MaskedCaptionLoss

    rng = np.random.default_rng(0)
    y = np.array([[5, 6, 2, 0, 0], [7, 2, 0, 0, 0]])
    logits = rng.normal(size=(2, 5, 9)).astype(np.float32)
    changed = logits.copy()
    changed[y == 0] = rng.normal(size=((y == 0).sum(), 9)) * 10
    loss = MaskedCaptionLoss(null=0)
    assert float(loss(y, logits)) == pytest.approx(float(loss(y, changed)), rel=1e-6)
    # the book's normalisation: summed over real time steps, averaged over captions
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits).numpy()
    assert float(loss(y, logits)) == pytest.approx((ce * (y != 0)).sum() / 2, rel=1e-5)
    changed[0, 0, 5] += 1.0  # a real word's target logit does count
    assert float(loss(y, changed)) != pytest.approx(float(loss(y, logits)), rel=1e-6)


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    """The book's overfit check: 50 captions, Adam 5e-3, batch 25, 50 epochs = 100 iterations."""
    root = tmp_path_factory.mktemp("captions")
    write_coco(root / "coco", n_train=50, n_val=10)
    cfg = tiny_cfg("model=captioning", "dataset=coco_captions", f"dataset.path={root / 'coco'}", "optimizer.lr=5e-3",
                   "trainer.batch_size=25", "trainer.epochs=50", "trainer.early_stopping.enabled=false", "model.bleu_images=10",
                   "trainer.early_stopping.monitor=loss",  # keep the last weights: the best training loss
                   "logger=tensorboard")
    metrics, objects = train(cfg, root / "run")
    from omegaconf import OmegaConf

    (root / "run" / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(cfg), root / "run" / ".hydra" / "config.yaml")  # what `dlx train` keeps
    return metrics, objects | {"run": root / "run"}


def test_captioning_overfits_fifty_captions(caption_run):
    metrics, objects = caption_run
    history, model, data = objects["history"], objects["model"], objects["data"]
    assert 65 < history["loss"][0] < 85  # ~ log(1004) per word of ~11 words + <END>
    final = model.evaluate(data.train.x, data.train.y, batch_size=50, verbose=0, return_dict=True)["loss"]
    assert final < 0.1
    assert 0.0 <= metrics["test_bleu4"] <= 1.0

    from dlx.models.captioning import Decoder, bleu4

    decoder = Decoder(model, data.spec.class_names)
    features, captions, _ = data.extra["images"]["train"]
    got = decoder.decode(features[:5], 1, captions.shape[1] - 1)
    assert got == [decoder._cut(c[1:]) for c in captions[:5]]  # memorised: greedy decoding recites them
    assert bleu4(model, data, "train", 50, 1) > 0.95


def test_caption_beam_width_one_is_greedy_and_wider_beams_score_at_least_as_well(caption_run):
    import tensorflow as tf

    from dlx.models.captioning import Decoder

    _, objects = caption_run
    model, data = objects["model"], objects["data"]
    decoder = Decoder(model, data.spec.class_names)
    features = data.extra["images"]["val"][0]
    greedy = decoder.greedy(features, 16)
    assert [decoder.beam(f, 1, 16) for f in features] == greedy

    def log_prob(feature, ids):
        states = decoder._initial(feature[None])
        total, word = 0.0, decoder.start
        for token in [*ids, decoder.end]:
            logits, states = decoder.steps.step(np.array([word], np.int32), states)
            total += float(tf.nn.log_softmax(tf.cast(logits, tf.float64))[0, token])
            word = token
        return total

    ended = [i for i, g in enumerate(greedy) if len(g) < 16][:4]
    assert ended
    for i in ended:
        wide = decoder.beam(features[i], 3, 16)
        if len(wide) < 16:  # ended with <END> (what log_prob scores)
            assert log_prob(features[i], wide) >= log_prob(features[i], greedy[i]) - 1e-9


def test_captioning_sample_and_bad_files(caption_run, dlx, workdir):
    run = caption_run[1]["run"]
    proc = dlx("sample", f"run={run}", "split=train", "n=3", "seed=4", check=True)
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("  generated: ") for line in lines) == 3
    for i, line in enumerate(lines):  # memorised: each generated caption equals its reference
        if line.startswith("  generated: "):
            assert lines[i + 1] == "  reference: " + line[len("  generated: "):]
    assert (run / "samples" / "captions_train_seed4_beam1.txt").is_file()

    write_coco(workdir / "tiny", n_train=20, n_val=5, vocab_size=50, dim=16, per_image=2)
    dlx("train", "model=captioning", "model.cell=rnn", "model.hidden=16", "model.embedding=8", "dataset=coco_captions",
        "dataset.path=tiny", "trainer.epochs=2", "trainer.batch_size=8", "logger=none", run_dir(workdir, "cap"), check=True)
    assert 0 <= json.loads((workdir / "cap" / "metrics.json").read_text())["test_bleu4"] <= 1
    assert "val_bleu4" in dlx("eval", "run=cap", "split=val", check=True).stdout

    write_coco(workdir / "broken", n_train=5, n_val=2, dim=8, drop="val_image_idxs")
    proc = dlx("train", "model=captioning", "dataset=coco_captions", "dataset.path=broken", "logger=none", run_dir(workdir, "x"))
    assert proc.returncode == 2 and "missing key(s) val_image_idxs" in proc.stderr and not (workdir / "x").exists()


def table_step(table: np.ndarray):
    """A constructed language model: the next word's log-probabilities depend only on the last word,
    which is the whole state (one row per hypothesis)."""
    import tensorflow as tf

    def step(words, states):
        return tf.constant(np.log(table[np.asarray(words)])), tf.constant(np.asarray(words))

    return step


def sequence_log_prob(table: np.ndarray, start: int, ids: list[int]) -> float:
    words = [start, *ids]
    return float(sum(np.log(table[a, b]) for a, b in zip(words, words[1:])))


def test_beam_search_finds_what_greedy_decoding_misses():
    """Greedy takes the likelier first word A (0.55) into a flat continuation (0.2 each, then <END>):
    0.11 in all; the beam keeps B (0.45), which ends at once with 0.99: 0.45. Finished hypotheses are
    set aside, the beam goes on `width` wide, and a full-width beam is the exhaustive optimum."""
    import itertools

    from dlx.models.captioning import beam_search

    start, end, a, b, fillers = 1, 2, 3, 4, [5, 6, 7, 8, 9]
    table = np.full((10, 10), 1e-6)
    table[start, a], table[start, b] = 0.55, 0.45
    table[a, fillers] = 0.2
    table[fillers, end] = 1.0
    table[b, end] = 0.99
    table /= table.sum(axis=1, keepdims=True)
    step = table_step(table)
    greedy = beam_search(step, np.array([start]), start, end, 1, 6)
    assert greedy == [a, 5, end]
    beam = beam_search(step, np.array([start]), start, end, 2, 6)
    assert beam == [b, end]
    assert sequence_log_prob(table, start, beam) > sequence_log_prob(table, start, greedy) + 1.0
    best = max((list(seq) + [end] for n in range(0, 4) for seq in itertools.product(range(3, 10), repeat=n)),
               key=lambda ids: sequence_log_prob(table, start, ids))
    assert beam_search(step, np.array([start]), start, end, 10, 6) == best == beam


def test_beam_length_penalty_lets_a_longer_caption_win():
    """<END> at once has 0.4; A B <END> has 0.6 * 0.6 * 1 = 0.36 (log -1.02 vs -0.92): raw scores pick
    the short one; with length_penalty 2 the long one's score is divided by (8/6)^2 and wins (-0.57)."""
    from dlx.models.captioning import beam_search

    start, end, a, b = 1, 2, 3, 4
    table = np.full((6, 6), 1e-9)
    table[start, end], table[start, a] = 0.4, 0.6
    table[a, b], table[a, end] = 0.6, 0.4
    table[b, end] = 1.0
    table /= table.sum(axis=1, keepdims=True)
    step = table_step(table)
    assert beam_search(step, np.array([start]), start, end, 3, 8) == [end]
    assert beam_search(step, np.array([start]), start, end, 3, 8, length_penalty=2.0) == [a, b, end]


def write_learnable_coco(root: Path, per_kind: int = 30, kinds: int = 4, dim: int = 16, seed: int = 0) -> Path:
    """COCO-format captions that can be learned: each image is one of `kinds` prototypes plus noise,
    and its caption is that kind's own 6-word sentence."""
    import h5py

    rng = np.random.default_rng(seed)
    words = ["<NULL>", "<START>", "<END>", "<UNK>", *(f"w{i}" for i in range(40))]
    sentences = [4 + rng.choice(40, 6, replace=False) for _ in range(kinds)]
    prototypes = rng.normal(size=(kinds, dim)) * 3
    root.mkdir(parents=True, exist_ok=True)
    (root / "coco2014_vocab.json").write_text(json.dumps({"idx_to_word": words, "word_to_idx": {w: i for i, w in enumerate(words)}}))
    with h5py.File(root / "coco2014_captions.h5", "w") as f:
        for part in ("train", "val"):
            kind = rng.permutation(np.repeat(np.arange(kinds), per_kind))
            f[f"{part}_features"] = (prototypes[kind] + rng.normal(size=(len(kind), dim))).astype(np.float32)
            captions = np.zeros((len(kind), 9), np.int32)
            captions[:, 0], captions[:, 7] = 1, 2
            captions[:, 1:7] = np.stack([sentences[k] for k in kind])
            f[f"{part}_captions"], f[f"{part}_image_idxs"] = captions, np.arange(len(kind))
    return root


def test_captioning_scores_held_out_images_well_above_chance(tmp_path):
    """Trained on images whose caption follows from their features, the captioner's BLEU-4 on the
    held-out test images (the second half of the format's val images, never used for model selection)
    is high; random captions would score about 0."""
    data_dir = write_learnable_coco(tmp_path / "coco")
    metrics, objects = train(tiny_cfg("model=captioning", "model.cell=lstm", "model.hidden=32", "model.embedding=16",
                                      "dataset=coco_captions", f"dataset.path={data_dir}", "trainer.epochs=40",
                                      "trainer.batch_size=16", "optimizer.lr=0.01", "model.bleu_images=100"), tmp_path / "run")
    data = objects["data"]
    val_images, test_images = set(data.extra["images"]["val"][2]), set(data.extra["images"]["test"][2])
    assert len(val_images) == len(test_images) == 60 and not val_images & test_images
    assert metrics["test_bleu4"] > 0.8, metrics
