"""`make bench` (part 3): the generative families.

1. dlx's RBM against scikit-learn's `BernoulliRBM`: same data (full Fashion-MNIST, 55,000 x 784
   after the 5,000 validation images, pixels in [0, 1]), same hidden units, learning rate, batch
   size and epochs, and the algorithm scikit-learn uses (PCD-1, zero initial biases, N(0, 0.01)
   weights). Time per epoch: dlx's training loop per epoch minus its validation pass, median over
   the epochs after the first (which also traces the step); scikit-learn's `fit` time / epochs.
   Pseudo-likelihood of the test set, for both models' weights, by two estimators: dlx's (one
   flipped bit per image, the same bits for both models) and scikit-learn's `score_samples`
   (random bits).
2. Fine-tuned test accuracy of SDAE and DBN on full Fashion-MNIST next to the same sigmoid network
   trained from random initialisation (`model.pretrain.enabled=false`), same fine-tuning budget.

Writes benchmarks/results/generative.md.
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
sys.path.insert(0, str(ROOT / "tests"))
DATA = ["dataset=fashion_mnist", f"dataset.path={FASHION}", "trainer.progress=false"]


def pseudo_likelihoods(x, w, b, c, seed: int = 0) -> tuple[float, float]:
    """(dlx's estimate with fixed flipped bits, scikit-learn's score_samples) for weights (W, b, c)."""
    import numpy as np
    import tensorflow as tf
    from sklearn.neural_network import BernoulliRBM

    from dlx.models.rbm import pseudo_likelihood

    flips = tf.constant(np.random.default_rng(seed).integers(0, x.shape[1], len(x)), tf.int32)
    ours = float(tf.reduce_mean(pseudo_likelihood(tf.constant(x), tf.constant(w), tf.constant(b), tf.constant(c), flips)))
    ref = BernoulliRBM(n_components=w.shape[1], random_state=seed)
    ref.components_, ref.intercept_visible_, ref.intercept_hidden_ = w.T.astype(np.float64), b.astype(np.float64), c.astype(np.float64)
    ref.random_state_ = np.random.RandomState(seed)
    return ours, float(ref.score_samples(x).mean())


def rbm_row(hidden: int, lr: float, batch: int, epochs: int, work: Path) -> dict:
    import numpy as np
    from conftest import tiny_cfg
    from sklearn.neural_network import BernoulliRBM

    from dlx.commands.train import train

    cfg = tiny_cfg(*DATA, "model=rbm", f"model.hidden={hidden}", "model.k=1", "model.persistent=true",
                   "model.visible_bias_init=zero", "optimizer=sgd", f"optimizer.lr={lr}", f"trainer.batch_size={batch}",
                   f"trainer.epochs={epochs}", "trainer.early_stopping.enabled=false")
    metrics, objects = train(cfg, work / "rbm")
    fit, data, model = objects["fit"], objects["data"], objects["model"]
    per_epoch = [t - v for t, v in zip(fit.epoch_seconds, fit.epoch_validation_seconds)]
    dlx_epoch = statistics.median(per_epoch[1:]) if len(per_epoch) > 1 else per_epoch[0]
    x = data.train.x.reshape(len(data.train), -1).astype(np.float64)
    test = data.test.x.reshape(len(data.test), -1)

    sk = BernoulliRBM(n_components=hidden, learning_rate=lr, batch_size=batch, n_iter=epochs, random_state=0)
    t0 = time.perf_counter()
    sk.fit(x)
    sk_epoch = (time.perf_counter() - t0) / epochs
    # the last epoch's weights for both (dlx's loop keeps the best-validation epoch; with early stopping off it is compared as trained)
    w, b, c = model.w.numpy(), model.b.numpy(), model.c.numpy()
    ours = pseudo_likelihoods(test, w, b, c)
    theirs = pseudo_likelihoods(test, sk.components_.T.astype(np.float32), sk.intercept_visible_.astype(np.float32),
                                sk.intercept_hidden_.astype(np.float32))
    return {"shape": f"{len(x):,} x {x.shape[1]}", "hidden": hidden, "lr": lr, "batch": batch, "epochs": epochs,
            "dlx_epoch": dlx_epoch, "dlx_epochs": per_epoch, "sk_epoch": sk_epoch, "dlx_pl": ours, "sk_pl": theirs,
            "best_epoch": metrics["best_epoch"]}


def stack_rows(hidden: str, pretrain_epochs: int, epochs: int, work: Path) -> list[dict]:
    from conftest import tiny_cfg

    from dlx.commands.train import train

    n_layers = len(hidden.strip("[]").split(","))
    common = [*DATA, f"model.hidden={hidden}", "trainer.batch_size=20", f"trainer.epochs={epochs}", "optimizer=sgd",
              "optimizer.lr=0.1", "trainer.early_stopping.enabled=false"]
    runs = [
        ("sdae", "pretrained", ["model=sdae", f"model.pretrain.epochs={pretrain_epochs}", "model.pretrain.lr=0.01",
                                f"model.pretrain.corruption=[{','.join(['0.1', '0.2', '0.3'][:n_layers] + ['0.3'] * max(0, n_layers - 3))}]"]),
        ("dbn", "pretrained", ["model=dbn", f"model.pretrain.epochs={pretrain_epochs}", "model.pretrain.lr=0.01"]),
        ("same MLP (sigmoid)", "random init", ["model=dbn", "model.pretrain.enabled=false"]),
    ]
    rows = []
    for name, init, overrides in runs:
        metrics, _ = train(tiny_cfg(*common, *overrides), work / f"{name.split()[0]}-{init.split()[0]}")
        rows.append({"model": name, "init": init, "hidden": hidden, "pretrain_epochs": pretrain_epochs if init == "pretrained" else 0,
                     "epochs": epochs, "accuracy": metrics["test_accuracy"], "pretrain_s": metrics.get("pretrain_seconds", 0.0),
                     "train_s": metrics["train_seconds"]})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rbm-hidden", type=int, default=500)
    parser.add_argument("--rbm-epochs", type=int, default=3)
    parser.add_argument("--hidden", default="[1000,1000,1000]", help="SDAE/DBN hidden layers")
    parser.add_argument("--pretrain-epochs", type=int, default=3, help="per layer")
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    parser.add_argument("--skip-stacks", action="store_true", help="only the RBM comparison")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if not FASHION.is_dir():
        sys.exit(f"{FASHION} not found: install Debian's dataset-fashion-mnist")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        rbm = rbm_row(args.rbm_hidden, 0.1, 20, args.rbm_epochs, work)
        print(rbm, flush=True)
        stacks = [] if args.skip_stacks else stack_rows(args.hidden, args.pretrain_epochs, args.epochs, work)
    write(rbm, stacks)


def write(rbm: dict, stacks: list[dict]) -> None:
    import keras
    import sklearn
    import tensorflow as tf

    ratio = rbm["dlx_epoch"] / rbm["sk_epoch"]
    rel = abs(rbm["dlx_pl"][0] - rbm["sk_pl"][0]) / abs(rbm["sk_pl"][0])
    lines = [
        "# Generative families",
        "",
        f"`make bench` on {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; TensorFlow {tf.__version__},"
        f" Keras {keras.__version__}, scikit-learn {sklearn.__version__}. Fashion-MNIST from Debian's dataset-fashion-mnist,"
        " 55,000 training images (the last 5,000 validate), the 10,000 test images score.",
        "",
        "## RBM vs scikit-learn BernoulliRBM",
        "",
        f"Both PCD-1, {rbm['hidden']} hidden units, SGD lr {rbm['lr']}, batch {rbm['batch']}, {rbm['epochs']} epochs on {rbm['shape']},"
        " zero initial biases, N(0, 0.01) weights. dlx time per epoch = the loop's epoch minus its validation pass, median of the"
        " epochs after the first (which also traces the step): " + ", ".join(f"{s:.1f}" for s in rbm["dlx_epochs"]) + " s;"
        " scikit-learn = `fit` time / epochs. Test-set pseudo-likelihood of each model's weights by two estimators:"
        " dlx's (one flipped bit per image, the same bits for both models) and scikit-learn's `score_samples`.",
        "",
        "| | time per epoch (s) | pseudo-likelihood, dlx estimator | pseudo-likelihood, scikit-learn estimator |",
        "|---|---:|---:|---:|",
        f"| dlx `model=rbm` | {rbm['dlx_epoch']:.2f} | {rbm['dlx_pl'][0]:.2f} | {rbm['dlx_pl'][1]:.2f} |",
        f"| scikit-learn `BernoulliRBM` | {rbm['sk_epoch']:.2f} | {rbm['sk_pl'][0]:.2f} | {rbm['sk_pl'][1]:.2f} |",
        "",
        f"dlx / scikit-learn time per epoch: **{ratio:.2f}x**; pseudo-likelihood difference (dlx estimator): {100 * rel:.1f} %."
        f" Target: dlx faster per epoch ({'met' if ratio < 1 else '**not met**'}), pseudo-likelihood within 5 %"
        f" ({'met' if rel <= 0.05 else '**not met**'}).",
    ]
    if stacks:
        s0 = stacks[0]
        lines += [
            "",
            "## Pretraining on Fashion-MNIST",
            "",
            f"784-{s0['hidden'].strip('[]').replace(',', '-')}-10 sigmoid network, fine-tuned with SGD lr 0.1, batch 20, {s0['epochs']}"
            f" epochs, after {s0['pretrain_epochs']} pretraining epochs per layer (plain SGD lr 0.01; SDAE masking noise 0.1/0.2/0.3,"
            " DBN CD-1), against the same network from random initialisation with the same fine-tuning budget.",
            "",
            "| model | initialisation | pretraining epochs / layer | fine-tuning epochs | test accuracy | pretraining (s) | fine-tuning (s) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in stacks:
            lines.append(f"| {r['model']} | {r['init']} | {r['pretrain_epochs']} | {r['epochs']} | {r['accuracy']:.4f} |"
                         f" {r['pretrain_s']:.0f} | {r['train_s']:.0f} |")
    tables.write("generative.md", lines)


if __name__ == "__main__":
    main()
