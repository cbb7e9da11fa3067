"""Soft-margin SVM trained by SMO (LIBSVM's second-order working-set selection), one-vs-one.

SMO picks a pair of examples from the whole gradient at every step, so the model's `solve(x, y)`
runs in place of `model.fit` (fit mode solver); the fitted SVM is a Keras model whose `call`
evaluates the decision function, so evaluation, saving, `dlx eval` and `dlx predict` are shared.
`metrics.json` gets `support_vectors` and `smo_iterations`. Run: `dlx train model=svm dataset=digits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from dlx.errors import DlxError
from dlx.families._shared import keras_builder
from dlx.family import Family, check_penalties, positive
from dlx.ranges import ranged


class Kernel(Enum):
    linear = "linear"
    poly = "poly"
    rbf = "rbf"


@dataclass
class SVM(Family):
    name: str = "svm"
    kernel: Kernel = Kernel.rbf
    C: float = ranged(1.0, "(0, 1e12]")
    gamma: str = "scale"  # scale = 1 / (features * X.var()), auto = 1 / features, or a number
    degree: int = ranged(3, "[1, 100]")  # poly
    coef0: float = ranged(0.0, "[-1e6, 1e6]")  # poly
    tol: float = ranged(1e-3, "(0, 1]")  # stop when the maximal KKT violation is below this
    cache_mb: float = ranged(200.0, "(0, 1e7]")  # kernel rows kept per binary problem
    max_iter: Optional[int] = ranged(None, "[1, 1e15]")  # per binary problem; null = until tol

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("svm", reg, (), own="model.C")
        positive("model.C", cfg.C, "a positive penalty C")
        positive("model.tol", cfg.tol)
        positive("model.cache_mb", cfg.cache_mb)
        if cfg.max_iter is not None:
            positive("model.max_iter", cfg.max_iter, "a positive count or null")
        if str(cfg.kernel) == "poly":
            positive("model.degree", cfg.degree, "1 or more")
        if str(cfg.gamma) not in ("scale", "auto"):
            try:
                value = float(cfg.gamma)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise DlxError(f"model.gamma: expected scale, auto or a positive number, got '{cfg.gamma}'")

    @staticmethod
    def fit_mode(cfg, optimizer) -> str:
        return "solver"

    @staticmethod
    def objective(model, spec):
        from dlx.models.svm import multiclass_hinge

        return multiclass_hinge, ["accuracy"]  # the hinge loss SMO minimises


build = keras_builder("svm")
