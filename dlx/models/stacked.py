"""What the deep belief net and the stacked denoising autoencoders share.

Both are the same classifier, flatten -> sigmoid dense layers `hidden1..N` -> softmax, whose hidden
layers are first pretrained greedily: layer i is trained alone, as an RBM (dbn) or a tied denoising
autoencoder (sdae), on the activations that the already-pretrained layers 1..i-1 give the training
data; its kernel and hidden bias then *are* hidden{i}'s initial weights for fine-tuning. The
training loop runs the stages (`dlx.training.loop.pretrain`); this module says what they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
from keras import layers

from dlx.families._shared import PRETRAINED_FILE, load_stack
from dlx.models.layers import dense, inputs, maybe_dropout, softmax_head

__all__ = ["PRETRAINED_FILE", "Pretraining", "build_stack", "load_stack", "save_stack"]


@dataclass
class Pretraining:
    sizes: list[int]  # hidden layer sizes, bottom first
    epochs: int | None  # per layer; None: 15, or more for at least `min_steps` steps
    lr: float
    batch_size: int
    make_stage: Callable[[int, int, int], keras.Model]  # (layer number, inputs, units) -> a model to fit
    from_run: str | None = None
    min_steps: int = 0

    def epochs_for(self, n: int) -> int:
        if self.epochs is not None:
            return int(self.epochs)
        return max(15, -(-self.min_steps // max(1, -(-n // self.batch_size))))

    def adopt(self, model: keras.Model, stack: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Pretrained (W, visible bias, hidden bias) per layer -> hidden{i}'s kernel and bias."""
        for i, (w, _, c) in enumerate(stack, 1):
            model.get_layer(f"hidden{i}").set_weights([w, c])


def build_stack(cfg, reg, spec, name: str, make_stage, trainer) -> keras.Model:
    x_in = inputs(spec)
    x = layers.Flatten()(x_in)
    for i, units in enumerate(cfg.hidden, start=1):
        x = dense(units, "sigmoid", reg, name=f"hidden{i}")(x)
        x = maybe_dropout(x, reg)
    model = keras.Model(x_in, softmax_head(x, spec, reg), name=name)
    pre = cfg.pretrain
    if pre.enabled:
        batch = pre.batch_size or (trainer.batch_size if trainer is not None else 32)
        model.pretraining = Pretraining(list(cfg.hidden), pre.epochs, pre.lr, batch, make_stage, pre.from_run,
                                        pre.min_steps)
    return model


def save_stack(path: Path, stack) -> None:
    arrays = {}
    for i, (w, b, c) in enumerate(stack, 1):
        arrays |= {f"layer{i}_kernel": w, f"layer{i}_visible_bias": b, f"layer{i}_hidden_bias": c}
    np.savez(path, **arrays)
