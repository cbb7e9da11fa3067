"""Naive Bayes, one pass of sufficient statistics.

`event=multinomial`: word counts (non-negative features; `dataset.scaling=none` or `unit`);
`event=bernoulli`: presence, a feature is on when x > `binarize`. `alpha`: additive (Laplace)
smoothing. Run: `dlx train model=naive_bayes dataset=text_folder dataset.path=aclImdb dataset.classes=[neg,pos]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dlx.errors import DlxError
from dlx.families._shared import keras_builder
from dlx.family import Family, check_penalties, positive
from dlx.ranges import ranged


class Event(Enum):
    bernoulli = "bernoulli"  # word present / absent (x > binarize)
    multinomial = "multinomial"  # word counts


@dataclass
class NaiveBayes(Family):
    name: str = "naive_bayes"
    event: Event = Event.multinomial
    alpha: float = ranged(1.0, "(0, 1e9]")  # additive (Laplace) smoothing
    binarize: float = ranged(0.0, "[-1e12, 1e12]")  # bernoulli: a feature is "on" when x > binarize

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("naive_bayes", reg, (), own="model.alpha")
        positive("model.alpha", cfg.alpha, "a positive smoothing count")
        if str(cfg.event) == "multinomial" and float(data.train.x.min()) < 0:
            raise DlxError(f"model.event=multinomial needs non-negative feature counts, but dataset={data.spec.name} "
                           f"(scaling={data.spec.scaling}) has negative values; use dataset.scaling=none or unit, or event=bernoulli")

    @staticmethod
    def fit_mode(cfg, optimizer) -> str:
        return "statistics"


build = keras_builder("naive_bayes")
