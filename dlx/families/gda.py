"""Gaussian discriminant analysis, fitted in one pass of sufficient statistics.

Class means and one shared covariance (`covariance=shared`: LDA, linear boundaries) or one per
class (`per_class`: QDA); `reg_covar` times the mean feature variance is added to the diagonal so
constant pixels stay invertible. No penalties (it regularises through `reg_covar`).
Run: `dlx train model=gda dataset=cancer_synthetic`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dlx.errors import DlxError
from dlx.families._shared import keras_builder
from dlx.family import Family, check_penalties
from dlx.ranges import ranged


class Covariance(Enum):
    shared = "shared"  # one covariance for all classes: linear boundaries (LDA)
    per_class = "per_class"  # one per class: quadratic boundaries (QDA)


@dataclass
class GDA(Family):
    name: str = "gda"
    covariance: Covariance = Covariance.shared
    # added to the covariance diagonal, times the mean feature variance: keeps constant pixels invertible
    reg_covar: float = ranged(1e-4, "[0, 1e9]")

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("gda", reg, (), own="model.reg_covar")
        if cfg.reg_covar < 0:
            raise DlxError(f"model.reg_covar: expected >= 0, got {cfg.reg_covar}")

    @staticmethod
    def fit_mode(cfg, optimizer) -> str:
        return "statistics"


build = keras_builder("gda")
