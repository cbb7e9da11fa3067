"""`make bench` (part 4): the sequence families.

1. char-RNN on tiny-shakespeare, dlx against a plain Keras script of the same model (embedding 64,
   2 x LSTM 256, next-character logits; Adam 2e-3, batch 64, windows of 100 characters, the same
   windows, the same loss and metrics: accuracy and dlx's bits-per-character metric), in the same run:
   - characters trained per second: the training part of each epoch (epoch time minus the
     validation pass), over the epochs after each round's first (which also traces the step) of
     `--rounds` alternating rounds, pooled: the median of the faster half. On this shared
     machine epochs of either program run at one of two speeds (about 9 s, or twice that when
     something else takes the CPUs), and the faster half is the undisturbed speed;
   - characters sampled per second (temperature 1, after a 20-character warm-up): dlx's generator
     runs the trained cells one step at a time with explicit states in one traced function; the
     plain script does what a Keras user writes for this, a stateful copy of the model
     (batch 1, one character in) called once per character.
2. lstm_rows (128 LSTM units, Adam 1e-3) on full Fashion-MNIST (Debian's dataset-fashion-mnist):
   test accuracy.

Writes benchmarks/results/sequence.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tables  # benchmarks/tables.py: the script's directory is on sys.path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
sys.path.insert(0, str(ROOT / "tests"))

CHAR = dict(embedding=64, hidden=256, layers=2, batch=64, lr=2e-3, seq=100)


def char_overrides(corpus: Path, windows: int, epochs: int) -> list[str]:
    return ["model=char_rnn", f"model.layers={CHAR['layers']}", f"model.hidden={CHAR['hidden']}",
            f"model.embedding={CHAR['embedding']}", "model.sample_every=0", "dataset=tinyshakespeare",
            f"dataset.path={corpus}", f"dataset.seq_length={CHAR['seq']}", f"dataset.subset={windows}",
            f"optimizer.lr={CHAR['lr']}", f"trainer.batch_size={CHAR['batch']}", f"trainer.epochs={epochs}",
            "trainer.early_stopping.enabled=false", "trainer.progress=false"]


def steady(runs: list[list[float]]) -> float:
    """Median of the faster half of the epochs after each run's first."""
    pooled = sorted(s for epochs in runs for s in (epochs[1:] or epochs))
    return statistics.median(pooled[: (len(pooled) + 1) // 2])


def dlx_char(corpus: Path, windows: int, epochs: int, work: Path, n_sample: int):
    from conftest import tiny_cfg

    from dlx.commands.train import train
    from dlx.models.char_rnn import generate, stepper

    metrics, objects = train(tiny_cfg(*char_overrides(corpus, windows, epochs)), work / f"dlx-{time.monotonic_ns()}")
    fit, data, model = objects["fit"], objects["data"], objects["model"]
    train_s = [t - v for t, v in zip(fit.epoch_seconds, fit.epoch_validation_seconds)]
    vocab = data.spec.class_names
    steps = stepper(model)
    generate(model, vocab, "ROMEO:", 20, seed=0, steps=steps)  # trace the step
    t0 = time.perf_counter()
    generate(model, vocab, "ROMEO:", n_sample, seed=0, steps=steps)
    return {"train_s": train_s, "chars": data.train.x.size, "sample_s": time.perf_counter() - t0,
            "val_bpc": metrics["test_bits_per_char"], "data": data}


def plain_char(data, epochs: int, n_sample: int):
    """What one writes by hand in Keras for the same model, data and budget."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(42)
    vocab = data.spec.num_classes

    def network(stateful: bool = False):
        inputs = keras.Input(batch_shape=(1, 1)) if stateful else keras.Input((None,))
        x = keras.layers.Embedding(vocab, CHAR["embedding"])(inputs)
        for _ in range(CHAR["layers"]):
            x = keras.layers.LSTM(CHAR["hidden"], return_sequences=True, stateful=stateful)(x)
        return keras.Model(inputs, keras.layers.Dense(vocab)(x))

    from dlx.models.recurrent import BitsPerChar

    model = network()
    # the same work per step as dlx: its loss and its two metrics
    model.compile(keras.optimizers.Adam(CHAR["lr"]), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), BitsPerChar()])
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.v0 = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            self.v0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append((self.v0 or time.perf_counter()) - self.t0)

    model.fit(data.train.x, data.train.y, batch_size=CHAR["batch"], epochs=epochs, validation_data=(data.val.x, data.val.y),
              callbacks=[Timer()], verbose=0)
    sampler = network(stateful=True)
    sampler.set_weights(model.get_weights())
    rng = np.random.default_rng(0)

    def draw(n: int) -> None:
        current = 0
        for _ in range(n):
            logits = sampler(np.array([[current]]), training=False).numpy()[0, -1].astype(np.float64)
            p = np.exp(logits - logits.max())
            current = int(rng.choice(vocab, p=p / p.sum()))

    draw(20)
    t0 = time.perf_counter()
    draw(n_sample)
    return {"train_s": times, "sample_s": time.perf_counter() - t0}


def lstm_rows(work: Path, epochs: int) -> dict:
    from conftest import tiny_cfg

    from dlx.commands.train import train

    metrics, _ = train(tiny_cfg("model=lstm_rows", "dataset=fashion_mnist", f"dataset.path={FASHION}", f"trainer.epochs={epochs}",
                                "trainer.progress=false"), work / "rows")
    return {"accuracy": metrics["test_accuracy"], "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
            "train_s": metrics["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="training windows of 100 characters per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=1000, help="characters sampled")
    parser.add_argument("--rows-epochs", type=int, default=20)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    for needed, why in ((CORPUS, "the ../shared checkout"), (FASHION, "Debian's dataset-fashion-mnist")):
        if not needed.exists():
            sys.exit(f"{needed} not found: needs {why}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        rounds = []
        for r in range(args.rounds):
            ours = dlx_char(CORPUS, args.windows, args.epochs, work, args.sample)
            theirs = plain_char(ours.pop("data"), args.epochs, args.sample)
            rounds.append((ours, theirs))
            print(f"round {r + 1}: dlx {ours['train_s']} / plain {theirs['train_s']} s per epoch; "
                  f"sampling {ours['sample_s']:.2f} / {theirs['sample_s']:.2f} s", flush=True)
        rows = lstm_rows(work, args.rows_epochs)
        print(rows, flush=True)
    write(rounds, rows, args)


def write(rounds, rows: dict, args) -> None:
    import keras
    import tensorflow as tf

    chars = rounds[0][0]["chars"]
    dlx_train = steady([o["train_s"] for o, _ in rounds])
    plain_train = steady([t["train_s"] for _, t in rounds])
    dlx_sample = min(o["sample_s"] for o, _ in rounds)
    plain_sample = min(t["sample_s"] for _, t in rounds)
    train_ratio, sample_ratio = plain_train / dlx_train, plain_sample / dlx_sample
    verdict = lambda ratio: "met" if ratio >= 0.98 else "**not met**"  # noqa: E731
    lines = [
        "# Sequence families",
        "",
        f"`make bench` on {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; TensorFlow {tf.__version__},"
        f" Keras {keras.__version__}.",
        "",
        "## char-RNN: dlx vs a plain Keras script",
        "",
        f"Same model (embedding {CHAR['embedding']}, {CHAR['layers']} x LSTM {CHAR['hidden']}, next-character logits), same"
        f" {args.windows:,} windows of {CHAR['seq']} characters of tiny-shakespeare ({chars:,} characters per epoch), Adam"
        f" {CHAR['lr']}, batch {CHAR['batch']}, {args.epochs} epochs, validation on the last 10 % every epoch;"
        f" {args.rounds} alternating rounds. Training speed: the epoch minus its validation pass; the epochs after each round's"
        " first, pooled, median of the faster half (epochs of both programs run at one of two speeds on this shared machine,"
        f" the slower about twice as long; all of them are listed below). Sampling: {args.sample:,} characters at temperature 1"
        " after a 20-character warm-up, best of the rounds; the plain script calls a"
        " stateful batch-1 copy of the model once per character. Both train with steps_per_execution 1 (dlx's choice for"
        " recurrent models, Keras' default) and compute the same metrics (accuracy, bits per character).",
        "",
        "| | characters trained / s | characters sampled / s |",
        "|---|---:|---:|",
        f"| dlx `model=char_rnn` | {chars / dlx_train:,.0f} | {args.sample / dlx_sample:,.0f} |",
        f"| plain Keras | {chars / plain_train:,.0f} | {args.sample / plain_sample:,.0f} |",
        "",
        f"dlx / plain Keras: training **{train_ratio:.2f}x**, sampling **{sample_ratio:.2f}x**. Target >= 0.98x:"
        f" training {verdict(train_ratio)}, sampling {verdict(sample_ratio)}. dlx's validation bits per character after"
        f" {args.epochs} epochs: {rounds[0][0]['val_bpc']:.3f}.",
        "",
        "Per round (s per epoch, training part): " + "; ".join(
            f"dlx {', '.join(f'{s:.2f}' for s in o['train_s'])} / plain {', '.join(f'{s:.2f}' for s in t['train_s'])}"
            for o, t in rounds) + ".",
        "",
        "## lstm_rows on Fashion-MNIST",
        "",
        f"`dlx train model=lstm_rows dataset=fashion_mnist trainer.epochs={args.rows_epochs}`: each image as 28 steps of 28"
        " pixels, 128 LSTM units, Adam 1e-3, batch 128, 55,000 training images (the last 5,000 validate), early stopping on"
        " validation loss.",
        "",
        "| test accuracy | epochs run | best epoch | training time (s) |",
        "|---:|---:|---:|---:|",
        f"| {rows['accuracy']:.4f} | {rows['epochs']} | {rows['best_epoch']} | {rows['train_s']:.0f} |",
    ]
    tables.write("sequence.md", lines)


if __name__ == "__main__":
    main()
