"""Binary (sigmoid) or multinomial (softmax) logistic regression.

`optimizer=newton`: full-batch Newton steps (fit mode full_batch) on the exact Hessian, solved by
conjugate gradients on Hessian-vector products with Armijo backtracking; stops when
max |gradient| < `optimizer.tol` (`regularization.l2` only; `optimizer.hessian_fraction` < 1:
subsampled curvature). Any other optimizer: mini-batch gradient steps (l1 and l2).
Run: `dlx train model=logistic_regression optimizer=newton dataset=breast_cancer regularization=l2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dlx.errors import DlxError
from dlx.families._shared import keras_builder
from dlx.family import Family, check_penalties, positive


@dataclass
class LogisticRegression(Family):
    newton: ClassVar[bool] = True

    name: str = "logistic_regression"
    zero_init: bool = True

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        if str(optimizer.name) == "newton":
            check_penalties("logistic_regression with optimizer=newton", reg, ("l2",))
            positive("optimizer.tol", optimizer.tol)
            positive("optimizer.max_cg", optimizer.max_cg, "1 or more")
            if not 0 < optimizer.hessian_fraction <= 1:
                raise DlxError(f"optimizer.hessian_fraction: expected a fraction in (0, 1], got {optimizer.hessian_fraction}")
        else:
            check_penalties("logistic_regression", reg, ("l1", "l2"))

    @staticmethod
    def fit_mode(cfg, optimizer) -> str:
        return "full_batch" if str(optimizer.name) == "newton" else "steps"


build = keras_builder("logistic_regression")
