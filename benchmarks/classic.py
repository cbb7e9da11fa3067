"""`make bench` (part 2): the classic families against their scikit-learn counterparts.

Same data, same split, same process, measured one after the other: fit time (best of
`--repeat`) and test accuracy (R^2 for regression). dlx's fit time is the training loop's wall time
minus its end-of-epoch validation passes and checkpoint writes (what remains: the statistics pass
or solver, the parameter solve, tf.function tracing, data conversion, callbacks), next to the
loop's total; scikit-learn's is
`estimator.fit`. The large rows use full Fashion-MNIST (55,000 x 784 after the 5,000 validation
images; Debian's dataset-fashion-mnist) and a 10,000-image subset for the SVM, where the algorithm
dominates; the small bundled datasets are reported without a target (scikit-learn fits them in
milliseconds, dlx's fixed per-fit cost dominates). Writes benchmarks/results/classic.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import tables  # benchmarks/tables.py: the script's directory is on sys.path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
sys.path.insert(0, str(ROOT / "tests"))


def sklearn_model(family: str, overrides: list[str]):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.naive_bayes import BernoulliNB, MultinomialNB
    from sklearn.svm import SVC

    if family == "gda":
        return LinearDiscriminantAnalysis(), "LinearDiscriminantAnalysis (svd)"
    if family == "naive_bayes":
        if "model.event=bernoulli" in overrides:
            return BernoulliNB(alpha=1.0, binarize=0.0), "BernoulliNB"
        return MultinomialNB(alpha=1.0), "MultinomialNB"
    if family == "logistic_regression":
        # dlx's l2 = 1 / (2 n) is scikit-learn's default C = 1
        return LogisticRegression(C=1.0, max_iter=100), "LogisticRegression (lbfgs, 100 it.)"
    if family == "svm":
        return SVC(kernel="rbf", C=1.0, gamma="scale"), "SVC (rbf)"
    return LinearRegression(), "LinearRegression"


def run_row(family: str, dataset: list[str], overrides: list[str], repeat: int, work: Path) -> dict:
    from conftest import tiny_cfg

    from dlx.commands.train import train
    from dlx.config import ns
    from dlx.family import resolve

    if "regularization.l2=sklearn" in overrides:  # l2 = 1 / (2 n): the objective of scikit-learn's default C = 1
        from dlx.data import datasets

        n = len(datasets.load(ns(tiny_cfg(*dataset)["dataset"])).train)
        overrides = [f"regularization.l2={1.0 / (2 * n)}" if o == "regularization.l2=sklearn" else o for o in overrides]
    common = ["trainer.epochs=20", "trainer.batch_size=1024", "trainer.progress=false", f"model={family}", *dataset, *overrides]
    best_dlx, best_loop, metrics, data = float("inf"), float("inf"), None, None
    for i in range(repeat):
        metrics, objects = train(tiny_cfg(*common), work / f"{family}-{len(list(work.iterdir()))}")
        result = objects["fit"]
        best_dlx = min(best_dlx, result.seconds - result.validation_seconds - result.checkpoint_seconds)
        best_loop = min(best_loop, result.seconds)
        data = objects["data"]
    n = len(data.train)
    x, y = data.train.x.reshape(n, -1), data.train.y
    test_x = data.test.x.reshape(len(data.test), -1)
    best_sk, score = float("inf"), 0.0
    for _ in range(repeat):
        est, name = sklearn_model(family, overrides)
        t0 = time.perf_counter()
        est.fit(x, y.ravel() if data.spec.task == "regression" else y)
        best_sk = min(best_sk, time.perf_counter() - t0)
        score = est.score(test_x, data.test.y.ravel() if data.spec.task == "regression" else data.test.y)
    warm = None
    model = objects["model"]
    cfg = tiny_cfg(*common)
    if resolve(cfg["model"]).fit_mode(ns(cfg["model"]), ns(cfg["optimizer"])) == "statistics":  # the pass again, already traced
        warm = float("inf")
        for _ in range(repeat):
            model.reset_statistics()
            t0 = time.perf_counter()
            model.statistics_pass(data.train.x, data.train.y)  # accumulates, then solves the parameters
            warm = min(warm, time.perf_counter() - t0)
    key = "test_r2" if data.spec.task == "regression" else "test_accuracy"
    shown = [o.split(".", 1)[-1] for o in overrides if o.startswith(("model.", "optimizer.")) or o == "optimizer=newton"]
    return {"family": " ".join([family, *shown]),
            "dataset": data.spec.name, "shape": f"{n:,} x {x.shape[1]}", "dlx_s": best_dlx, "loop_s": best_loop, "warm_s": warm, "sk_name": name, "sk_s": best_sk,
            "dlx_score": metrics[key], "sk_score": score, "metric": "R^2" if key == "test_r2" else "accuracy",
            "epochs": metrics["epochs_run"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--small-only", action="store_true", help="skip the Fashion-MNIST rows")
    parser.add_argument("--family", help="only the rows of this model family (prints, writes no table)")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    fashion = ["dataset=fashion_mnist", f"dataset.path={FASHION}"]
    big = [
        # (family, overrides, target: "faster" = no slower than scikit-learn, or a max slowdown factor)
        ("gda", [], "faster"),
        ("naive_bayes", ["model.event=bernoulli"], "faster"),
        ("naive_bayes", ["model.event=multinomial"], "faster"),
        ("logistic_regression", ["optimizer=newton", "regularization=l2", "regularization.l2=sklearn",
                                 "optimizer.hessian_fraction=0.1", "optimizer.max_cg=50", "trainer.early_stopping.patience=3"], "faster"),
        ("logistic_regression", ["optimizer=newton", "regularization=l2", "regularization.l2=sklearn",
                                 "trainer.early_stopping.patience=3"], "faster"),
        ("svm", ["dataset.subset=10000"], 3.0),
    ]
    small = [
        ("linear_regression", ["dataset=diabetes"], []),
        ("gda", ["dataset=cancer_synthetic"], []),
        ("gda", ["dataset=breast_cancer"], []),
        ("gda", ["dataset=digits"], []),
        ("naive_bayes", ["dataset=digits"], ["model.event=multinomial"]),
        ("logistic_regression", ["dataset=breast_cancer"], ["optimizer=newton", "regularization=l2", "regularization.l2=sklearn"]),
        ("svm", ["dataset=breast_cancer"], []),
        ("svm", ["dataset=digits"], []),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        if not args.small_only:
            if not FASHION.is_dir():
                sys.exit(f"{FASHION} not found: install Debian's dataset-fashion-mnist (or pass --small-only)")
            for family, overrides, target in big:
                if args.family and family != args.family:
                    continue
                subset = [o for o in overrides if o.startswith("dataset.")]
                rest = [o for o in overrides if not o.startswith("dataset.")]
                row = run_row(family, fashion + subset, rest, args.repeat, work)
                row["target"] = target
                rows.append(row)
                print(row, flush=True)
        for family, dataset, overrides in small:
            if args.family and family != args.family:
                continue
            row = run_row(family, dataset, overrides, args.repeat, work)
            row["target"] = None
            rows.append(row)
            print(row, flush=True)
    if not args.family:
        write(rows, args.repeat)


def write(rows: list[dict], repeat: int) -> None:
    import keras
    import sklearn
    import tensorflow as tf

    lines = [
        "# Classic families vs scikit-learn",
        "",
        f"`make bench` on {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; TensorFlow {tf.__version__},"
        f" Keras {keras.__version__}, scikit-learn {sklearn.__version__}. Best of {repeat} fits each, same data and split,"
        " measured one after the other in one process. dlx fit = the training loop's wall time minus its end-of-epoch"
        " validation and checkpoint writes (what remains: statistics pass or solver, parameter solve, tf.function"
        " tracing, numpy-to-tensor copies, callbacks); dlx loop = all of it; dlx warm pass = the statistics pass and"
        " parameter solve of a one-pass family run again on the same model, its tf.function already traced (scikit-learn's best of 3 likewise excludes its first-call"
        " warm-up); scikit-learn = `fit`. Score = test accuracy (R^2 for regression). The target is judged on dlx fit.",
        "",
        "| family | dataset | train rows x features | dlx fit (s) | dlx loop (s) | dlx warm pass (s) | scikit-learn | sk fit (s) | dlx / sk fit time | dlx score | sk score | diff (points) | target | met |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        ratio = r["dlx_s"] / r["sk_s"] if r["sk_s"] > 0 else float("inf")
        diff = 100 * (r["dlx_score"] - r["sk_score"])
        if r["target"] is None:
            target, met = "none (fixed cost dominates)", ""
        else:
            limit = 1.0 if r["target"] == "faster" else r["target"]
            target = f"score within 0.5; time <= {limit:g}x sk"
            met = "yes" if abs(diff) <= 0.5 and ratio <= limit else "**no**"
        warm = f"{r['warm_s']:.3f}" if r["warm_s"] is not None else ""
        lines.append(f"| {r['family']} | {r['dataset']} | {r['shape']} | {r['dlx_s']:.2f} | {r['loop_s']:.2f} | {warm} | {r['sk_name']} | {r['sk_s']:.3f} |"
                     f" {ratio:.2f}x | {r['dlx_score']:.4f} | {r['sk_score']:.4f} | {diff:+.2f} | {target} | {met} |")
    lines += ["", "dlx's logistic regression rows are Newton's method (multinomial on Fashion-MNIST) with l2 = 1/(2n), the"
              " same objective as scikit-learn's default C = 1, stopped by validation loss (patience 3); 'epochs' = Newton"
              " iterations run: " + ", ".join(f"{r['family']} on {r['dataset']}: {r['epochs']}" for r in rows
                                                if r["family"].startswith("logistic")) + ". `hessian_fraction=0.1` takes the"
              " curvature (Hessian-vector products and preconditioner) from every 10th example; the gradient stays exact."]
    tables.write("classic.md", lines)


if __name__ == "__main__":
    main()
