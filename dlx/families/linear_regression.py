"""Linear regression: the normal equation or gradient descent.

`solver=normal_equation` accumulates X^T X and X^T y in one streaming pass (fit mode statistics;
`regularization.l2` only), `solver=gd` takes gradient steps with the configured optimizer
(`trainer.batch_size=1`: per sample; l1 and l2). `degree` > 1 adds x^2 .. x^degree of every
feature (no cross terms). Run: `dlx train model=linear_regression dataset=synthetic_line`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from dlx.families._shared import keras_builder
from dlx.family import Family, check_penalties, positive
from dlx.ranges import ranged


class Solver(Enum):
    normal_equation = "normal_equation"  # closed form from one streaming pass of X^T X, X^T y
    gd = "gd"  # gradient descent with the configured optimizer (trainer.batch_size=1: per sample)


@dataclass
class LinearRegression(Family):
    task: ClassVar[str] = "regression"

    name: str = "linear_regression"
    solver: Solver = Solver.normal_equation
    degree: int = ranged(1, "[1, 100]")  # > 1 adds x^2 .. x^degree of every feature (no cross terms)

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        positive("model.degree", cfg.degree, "1 or more")
        closed = str(cfg.solver) == "normal_equation"
        check_penalties("linear_regression" + (" (normal equation)" if closed else ""), reg, ("l2",) if closed else ("l1", "l2"))

    @staticmethod
    def fit_mode(cfg, optimizer) -> str:
        return "statistics" if str(cfg.solver) == "normal_equation" else "steps"


build = keras_builder("linear_regression")
