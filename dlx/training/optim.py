"""Optimizer + learning-rate schedule from the `optimizer` config group."""

from __future__ import annotations

import math

import keras


def learning_rate(cfg, steps_per_epoch: int, epochs: int):
    """A float for a constant rate, else a keras LearningRateSchedule (optionally warmed up)."""
    total = max(1, steps_per_epoch * epochs)
    warmup = cfg.warmup_epochs * steps_per_epoch
    if cfg.schedule == "constant" and not warmup:
        return cfg.lr
    if cfg.schedule == "exponential":
        decay = keras.optimizers.schedules.ExponentialDecay(cfg.lr, cfg.decay_steps, cfg.decay_rate)
    elif cfg.schedule == "step":
        decay = keras.optimizers.schedules.ExponentialDecay(
            cfg.lr, cfg.step_epochs * steps_per_epoch, cfg.decay_rate, staircase=True
        )
    elif cfg.schedule == "cosine":
        decay = keras.optimizers.schedules.CosineDecay(cfg.lr, max(1, total - warmup))
    else:
        decay = None
    if not warmup:
        return decay
    return _WarmUp(cfg.lr, warmup, decay)


@keras.saving.register_keras_serializable(package="dlx")
class _WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `steps`, then `after` (or constant `peak`)."""

    def __init__(self, peak: float, steps: int, after=None):
        self.peak, self.steps, self.after = peak, steps, after

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        ramp = self.peak * (step + 1.0) / float(self.steps)
        later = self.after(step - self.steps) if self.after is not None else self.peak
        return keras.ops.where(step < self.steps, ramp, later)

    def get_config(self):
        after = keras.optimizers.schedules.serialize(self.after) if self.after is not None else None
        return {"peak": self.peak, "steps": self.steps, "after": after}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if after is not None:
            after = keras.optimizers.schedules.deserialize(after)
        return cls(config["peak"], config["steps"], after)


def build(cfg, steps_per_epoch: int, epochs: int) -> keras.Optimizer:
    lr = learning_rate(cfg, steps_per_epoch, epochs)
    common = {"learning_rate": lr, "clipnorm": cfg.clipnorm, "clipvalue": cfg.clipvalue}
    if cfg.weight_decay is not None:
        common["weight_decay"] = cfg.weight_decay
    name = cfg.name
    if name == "sgd":
        return keras.optimizers.SGD(**common)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=name == "nesterov", **common)
    if name == "adagrad":
        return keras.optimizers.Adagrad(epsilon=cfg.epsilon, **common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(momentum=cfg.momentum, epsilon=cfg.epsilon, **common)
    if name == "adam":
        return keras.optimizers.Adam(beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, **common)
    raise ValueError(f"unknown optimizer {name}")  # the schema's enum makes this unreachable


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


DEFAULT_EPOCHS = 20
EVAL_INPUT_BYTES, EVAL_BATCH_CAP = 4 << 20, 4096


def eval_batch_size(trainer, input_shape) -> int:
    """trainer.eval_batch_size, or when null: trainer.batch_size raised towards 4 MiB of float32
    inputs (at most 4096); fewer, larger steps when nothing has to be differentiated."""
    if trainer.eval_batch_size is not None:
        return int(trainer.eval_batch_size)
    per_example = 4 * max(1, math.prod(int(d) for d in input_shape if d))
    return max(int(trainer.batch_size), min(EVAL_BATCH_CAP, EVAL_INPUT_BYTES // per_example))


def epochs(trainer, steps: int, mode: str) -> int:
    """trainer.epochs, or when null: 20 epochs, more when they would be fewer than trainer.min_steps steps."""
    if trainer.epochs is not None:
        return int(trainer.epochs)
    if mode != "steps":
        return DEFAULT_EPOCHS
    return max(DEFAULT_EPOCHS, math.ceil(trainer.min_steps / steps))


def patience(early_stopping, epochs: int) -> int:
    """trainer.early_stopping.patience, or when null: 5 epochs, a twentieth of the epochs when more."""
    if early_stopping.patience is not None:
        return int(early_stopping.patience)
    return max(5, epochs // 20)
