"""Bernoulli-Bernoulli restricted Boltzmann machine, CD-k or persistent CD (PCD-k).

The CD update is computed in `train_step` and handed to the optimizer as a gradient (nothing is
back-propagated through sampling). Logged per epoch for train and validation: `loss`
(reconstruction cross-entropy), `pseudo_likelihood`, `free_energy`. Visible biases start at the
log-odds of the training pixel means (Hinton's guide; `visible_bias_init=zero` as in the book).
`dlx sample` runs Gibbs chains (`n_chains`, `steps_between`, `start=test|noise`).
Run: `dlx train model=rbm model.k=15 trainer.batch_size=20 optimizer=sgd optimizer.lr=0.1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from dlx.families._shared import (
    Unsupervised,
    from_models,
    keras_builder,
)
from dlx.family import check_penalties, check_unit_interval, positive
from dlx.ranges import ranged


class BiasInit(Enum):
    data = "data"
    zero = "zero"


@dataclass
class RBM(Unsupervised):
    name: str = "rbm"
    hidden: int = ranged(500, "[1, 1e7]")
    k: int = ranged(1, "[1, 1000]")  # Gibbs steps per update
    persistent: bool = True  # PCD: negative chains carry over between batches (trainer.batch_size chains)
    # data: visible biases start at log(p/(1-p)) of the training pixel means (Hinton's guide);
    # zero: as the book's tutorial and scikit-learn
    visible_bias_init: BiasInit = BiasInit.data

    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        check_penalties("rbm", reg, ("l2",))
        positive("model.hidden", cfg.hidden, "a positive number of hidden units")
        positive("model.k", cfg.k, "1 or more Gibbs steps")
        check_unit_interval("rbm", data, "its visible units are Bernoulli probabilities")


    figures = from_models("rbm", "figures")
    sample = from_models("rbm", "sample")


build = keras_builder("rbm")
