"""Schema parts that several families share (not a family itself: the leading underscore)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar, List, Optional

from dlx.errors import DlxError
from dlx.family import Family, check_penalties, check_unit_interval, flat_size, positive
from dlx.ranges import ranged


def from_models(module: str, function: str):
    """A hook whose code is `dlx.models.<module>.<function>`, imported when first called (the
    family module itself stays free of TensorFlow)."""

    def hook(*args, **kwargs):
        return getattr(importlib.import_module(f"dlx.models.{module}"), function)(*args, **kwargs)

    return staticmethod(hook)


def keras_builder(module: str):
    """The `build(cfg, spec, reg, optimizer, trainer)` of a built-in family: its Keras code is
    `dlx.models.<module>.build`, imported only when a model is built."""

    def build(cfg, spec, reg, optimizer=None, trainer=None):
        return importlib.import_module(f"dlx.models.{module}").build(cfg, reg, spec, optimizer, trainer)

    build.__module__ = f"dlx.families.{module}"  # where `resolve` and the Keras-class import look
    return build


@dataclass
class Unsupervised(Family):
    """A model of its inputs alone (labels unused) that knows its own loss and draws samples."""

    task: ClassVar[str] = "unsupervised"
    generates: ClassVar[bool] = True

    @staticmethod
    def objective(model, spec):
        return model.objective()


class Cell(Enum):
    rnn = "rnn"  # Elman RNN (tanh)
    lstm = "lstm"
    gru = "gru"


@dataclass
class RecurrentFamily(Family):
    # a recurrent step is a loop already: running several per call did not make it faster
    steps_per_execution: ClassVar[int] = 1

    cell: Cell = Cell.lstm  # rnn (Elman, tanh), lstm or gru


def check_recurrent(family: str, cfg, reg) -> None:
    check_penalties(family, reg, ("l1", "l2", "dropout"))
    positive("model.hidden", cfg.hidden, "a positive number of units")
    if not 0 <= reg.dropout < 1:
        raise DlxError(f"regularization.dropout: expected a fraction in [0, 1), got {reg.dropout}")


@dataclass
class PretrainConfig:
    """Greedy layer-wise pretraining of the hidden stack (dbn: RBMs, sdae: denoising autoencoders)."""

    enabled: bool = True  # false: the same network from random initialisation
    # per layer; null = 15, or on a small training set as many as `min_steps` steps need
    epochs: Optional[int] = ranged(None, "[1, 1e6]")
    min_steps: int = ranged(500, "[0, 1e9]")
    lr: float = ranged(0.05, "(0, 100]")  # plain SGD, as in the book (whose presets keep its rates)
    batch_size: Optional[int] = ranged(None, "[1, 1e8]")  # null = trainer.batch_size
    k: int = ranged(1, "[1, 1000]")  # dbn: CD-k
    corruption: List[float] = ranged([0.1, 0.2], "[0, 1)")  # sdae: masking noise per layer
    # a run directory whose pretrained.npz to start from instead of pretraining again
    from_run: Optional[str] = None


PRETRAINED_FILE = "pretrained.npz"  # what a dbn/sdae run keeps of its pretraining


def load_stack(path: Path) -> list:
    """[(kernel, visible bias, hidden bias)] per pretrained layer, bottom first (numpy only)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as f:
        n = len([k for k in f.files if k.endswith("_kernel")])
        return [(f[f"layer{i}_kernel"], f[f"layer{i}_visible_bias"], f[f"layer{i}_hidden_bias"]) for i in range(1, n + 1)]


def check_pretrained_run(run: str, sizes: list[int]) -> None:
    """`model.pretrain.from_run` must hold pretrained layers of exactly these sizes (input first)."""
    path = Path(run).expanduser() / PRETRAINED_FILE
    if not path.is_file():
        raise DlxError(f"model.pretrain.from_run={run}: no {PRETRAINED_FILE} there (a dbn/sdae run with pretraining)")
    kernels = [w.shape for w, _, _ in load_stack(path)]
    theirs = [kernels[0][0], *(shape[1] for shape in kernels)] if kernels else []
    if theirs != sizes:
        raise DlxError(f"model.pretrain.from_run={run}: its pretrained layers are {'-'.join(map(str, theirs))}, "
                       f"but this network is {'-'.join(map(str, sizes))} (input-model.hidden); they must match")


def check_stack(family: str, cfg, reg, data) -> None:
    check_penalties(family, reg, ("l1", "l2", "dropout"))
    if not cfg.hidden or min(cfg.hidden) < 1:
        raise DlxError(f"model.hidden: expected one or more positive layer sizes, got {cfg.hidden}")
    pre = cfg.pretrain
    if pre.enabled and pre.from_run:
        check_pretrained_run(pre.from_run, [flat_size(data.spec), *cfg.hidden])
    elif pre.enabled:
        if pre.epochs is not None:
            positive("model.pretrain.epochs", pre.epochs, "1 or more")
        positive("model.pretrain.lr", pre.lr)
        check_unit_interval(family, data, "the first pretrained layer models pixel intensities")
