"""Model families. `dlx/models/<name>.py` defines `build(model_cfg, reg_cfg, spec, optimizer_cfg,
trainer_cfg) -> keras.Model` for `model=<name>`; its schema in dlx/config.py says what task it solves and
checks its config before TensorFlow is imported (`config.check_model`). Modules are imported only
when a command needs that family (which also registers their Keras classes for loading)."""

from __future__ import annotations

import importlib

from dlx.errors import DlxError


def family(name: str):
    try:
        return importlib.import_module(f"dlx.models.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"dlx.models.{name}":
            raise
        raise DlxError(f"model.name: no model family '{name}' in dlx/models/") from None


def build(model_cfg, reg_cfg, spec, optimizer_cfg=None, trainer_cfg=None):
    return family(model_cfg.name).build(model_cfg, reg_cfg, spec, optimizer_cfg, trainer_cfg)


def uses_gradients(model) -> bool:
    """False for families fitted by statistics, Newton steps or their own solver (no optimizer)."""
    return getattr(model, "passes", None) != 1 and not getattr(model, "full_batch", False) and not hasattr(model, "solve")


def compile(model, spec, optimizer=None, steps_per_execution: int = 1, jit_compile="auto") -> None:
    """Loss and metrics by task (a family may bring its own loss, or its own objective altogether:
    the unsupervised ones), shared by train and eval."""
    import keras

    if hasattr(model, "objective"):
        loss, metrics = model.objective()
    elif spec.kind in ("chars", "captions"):  # logits over the vocabulary at every time step
        from dlx.models import recurrent

        if spec.kind == "chars":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), recurrent.BitsPerChar()]
        else:
            loss, metrics = recurrent.MaskedCaptionLoss(spec.class_names.index("<NULL>")), []
    elif spec.kind == "words" and spec.num_classes == 2:
        from dlx.models import recurrent

        loss, metrics = "sparse_categorical_crossentropy", ["accuracy", recurrent.PositiveClassAUC()]
    elif spec.task == "regression":
        loss, metrics = "mse", [keras.metrics.MeanSquaredError(name="mse"), keras.metrics.R2Score(name="r2")]
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model.compile(optimizer=optimizer, loss=getattr(model, "loss_fn", None) or loss, metrics=metrics,
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
