"""Tabular datasets: rows of features, a class label or a real-valued target.

Generated ones (the book's line and cancer data, two 2-D blobs) draw from their own
`dataset.data_seed`; scikit-learn's bundled `diabetes` and `breast_cancer` are real data that
ship offline. Datasets without an official test split hold out a fixed `dataset.test_size` rows
(stratified for classes) that never depend on `trainer.seed`.
"""

from __future__ import annotations

import numpy as np

from dlx.errors import DlxError

DESCRIPTIONS = {
    "synthetic_line": "y = 300 + 20x + uniform noise in [-noise, noise], 1,000 points (generated)",
    "diabetes": "scikit-learn diabetes progression, 442 patients x 10 features, regression (bundled)",
    "blobs2d": "two 2-D Gaussian blobs, 400 points, binary (generated; decision-boundary plots)",
    "breast_cancer": "scikit-learn Wisconsin breast cancer, 569 x 30 features, binary (bundled)",
    "cancer_synthetic": "book GDA data: N([2,3]) x 5,000 and N([7,8]) x 3,000, covariance diag(1, 2) (generated)",
}


def _spec(name: str, x: np.ndarray, task: str, classes: list[str], features: list[str]):
    from dlx.data.types import DataSpec

    return DataSpec(name, (x.shape[1],), len(classes), classes, 1.0, kind="tabular", task=task, feature_names=features)


def _holdout(x: np.ndarray, y: np.ndarray, cfg, classify: bool):
    from sklearn.model_selection import train_test_split

    if not 0 < cfg.test_size < len(y):
        raise DlxError(f"dataset.test_size: expected 1..{len(y) - 1} held-out rows for {cfg.name}, got {cfg.test_size}")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=cfg.test_size, stratify=y if classify else None, random_state=0
    )
    return (x_train, y_train), (x_test, y_test)


def _size(cfg, default: int) -> int:
    n = cfg.n_samples if cfg.n_samples is not None else default
    if n < 10:
        raise DlxError(f"dataset.n_samples: expected at least 10, got {n}")
    return n


def _synthetic_line(cfg):
    rng = np.random.default_rng(cfg.data_seed)
    n = _size(cfg, 1000)
    x = rng.uniform(0.0, 100.0, size=(n, 1))
    y = 300.0 + 20.0 * x[:, 0] + rng.uniform(-cfg.noise, cfg.noise, size=n)
    train, test = _holdout(x, y, cfg, classify=False)
    return train, test, _spec("synthetic_line", x, "regression", [], ["x"]), "generated (y = 300 + 20x + noise)"


def _diabetes(cfg):
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    train, test = _holdout(bunch.data, bunch.target, cfg, classify=False)
    return train, test, _spec("diabetes", bunch.data, "regression", [], list(bunch.feature_names)), "scikit-learn (bundled)"


def _breast_cancer(cfg):
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    train, test = _holdout(bunch.data, bunch.target, cfg, classify=True)
    spec = _spec("breast_cancer", bunch.data, "classification", list(bunch.target_names), list(bunch.feature_names))
    return train, test, spec, "scikit-learn (bundled)"


def _gaussians(cfg, name: str, means, cov, fractions, classes):
    rng = np.random.default_rng(cfg.data_seed)
    n = _size(cfg, sum(fractions))
    counts = [round(n * f / sum(fractions)) for f in fractions]
    x = np.concatenate([rng.multivariate_normal(m, cov, size=c) for m, c in zip(means, counts)])
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    train, test = _holdout(x, y, cfg, classify=True)
    return train, test, _spec(name, x, "classification", classes, ["x1", "x2"]), "generated"


def _blobs2d(cfg):
    return _gaussians(cfg, "blobs2d", [(-1.5, -1.0), (1.5, 1.0)], np.eye(2), [200, 200], ["blob0", "blob1"])


def _cancer_synthetic(cfg):
    # the book's GDA example: 5,000 benign and 3,000 malignant points
    return _gaussians(cfg, "cancer_synthetic", [(2, 3), (7, 8)], np.diag([1.0, 2.0]), [5000, 3000], ["benign", "malignant"])


LOADERS = {
    "synthetic_line": _synthetic_line,
    "diabetes": _diabetes,
    "blobs2d": _blobs2d,
    "breast_cancer": _breast_cancer,
    "cancer_synthetic": _cancer_synthetic,
}
