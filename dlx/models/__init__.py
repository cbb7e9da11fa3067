"""The Keras code of the built-in families: models, layers and what the families share. A family's
contract (schema, checks, hooks, builder) is its module in dlx/families/; it imports its module
here only when it builds a model, which also registers the Keras classes that loading needs."""

from __future__ import annotations

import importlib


def import_keras_code(family) -> None:
    """Import the Keras module of a built-in family (its classes then load from model.keras); a
    family of your own registered its classes when its module was imported."""
    module = family.builder.__module__
    if module.startswith("dlx.families."):
        importlib.import_module(f"dlx.models.{module.rsplit('.', 1)[1]}")


def compile(model, spec, optimizer=None, steps_per_execution: int = 1, jit_compile="auto", objective=None) -> None:
    """Loss and metrics: the family's `objective` when it has one, else by the data's kind and
    task; shared by train, eval and pretraining stages."""
    import keras

    if objective is not None:
        loss, metrics = objective
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
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, steps_per_execution=steps_per_execution,
                  jit_compile=jit_compile)
