"""What a model family is: the one contract between dlx and a model, built-in or your own.

A family is a module plus a YAML file in a `model` config group. The YAML names the module's
builder with `_target_` and holds the family's own keys::

    # my_conf/model/tiny.yaml                 # my_models/tiny.py
    _target_: my_models.tiny.build            def build(cfg, spec):
    hidden: 64                                    ...  # return an uncompiled keras.Model

`build(cfg, spec)` gets the model's config node (`cfg.hidden`) and the dataset's `DataSpec`
(`spec.input_shape`, `spec.num_classes`, `spec.task`, `spec.kind`); it may also declare the
keyword parameters `reg`, `optimizer` and `trainer` to receive those config nodes. That is all a
plain classifier or regression model needs: dlx compiles it (loss and metrics by task), trains it
in its one loop, saves, evaluates, predicts and sweeps it.

A family that needs more defines a subclass of `Family` in the same module; dlx finds it there.
As a dataclass it is also the family's typed schema (Hydra checks the YAML against it). Its class
variables say what the family is; its hooks, each with a default, say what it does differently:

==================  ===========================================================================
task                "classification" | "regression" | "unsupervised" (any dataset, labels unused)
kinds               the data kinds it reads: image, tabular, text, words, chars, captions
newton              optimizer=newton applies
generates           `dlx sample` draws from its runs (needs the `sample` hook)
steps_per_execution batches per tf.function call when trainer.steps_per_execution is null
check()             checks of the composed config and the loaded data, before TensorFlow loads
fit_mode()          how the loop fits it: one of FIT_MODES (default "steps")
objective()         (loss, metrics) for compile; None = by the data's task
callbacks()         extra Keras callbacks for the training fit
scores()            metrics `model.evaluate` cannot compute (BLEU of decoded captions)
figures()           its own figures instead of the task's (confusion matrix, fit plot)
sample()            what `dlx sample` writes
==================  ===========================================================================

The model a builder returns may carry what its fit mode needs (`MODEL_HOOKS`); the loop reads
those through `model_hook`, which refuses any name not listed there.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dlx.errors import DlxError

FIT_MODES = {
    "steps": "mini-batch gradient steps with the configured optimizer (keras model.fit)",
    "full_batch": "gradient or Newton steps on the whole training split at once",
    "statistics": "one pass of sufficient statistics: the model's statistics_pass(x, y) -> logs",
    "solver": "the model's own solver, not a sequence of steps: solve(x, y) -> logs",
}

# what a built model may carry for the loop (each optional; the default in brackets)
MODEL_HOOKS = {
    "data_init": "data_init(x): start from statistics of the training inputs [nothing]",
    "fit_callbacks": "fit_callbacks() -> list: its own stopping rule [none]",
    "pretraining": "greedy layer-wise pretraining to run before the fit (models/stacked.py) [None]",
    "summary_metrics": "dict of numbers added to metrics.json after training [{}]",
    "statistics_pass": "fit_mode statistics: statistics_pass(x, y) -> logs [required]",
    "stats_batch_size": "fit_mode statistics: rows per statistics step [trainer.batch_size]",
    "solve": "fit_mode solver: solve(x, y) -> logs [required]",
}

KIND_NAMES = {"image": "images", "tabular": "tabular data", "text": "text", "words": "text", "chars": "a character corpus",
              "captions": "a captioning dataset"}
# what to use instead: by the data's kind where it dictates the model, else by what the model reads
DATA_HINTS = {"chars": " (use model=char_rnn)", "captions": " (use model=captioning)"}
MODEL_HINTS = {"image": " (try model=mlp)", "words": " (text datasets: imdb, reuters, text_folder)",
               "chars": " (dataset=tinyshakespeare, or any UTF-8 file as dataset.path)",
               "captions": " (dataset=coco_captions dataset.path=DIR)"}


@dataclass
class Family:
    """Base of every family: its schema fields and hooks, with the defaults a plain model needs."""

    task: ClassVar[str] = "classification"
    kinds: ClassVar[tuple] = ("image", "tabular", "text")
    newton: ClassVar[bool] = False
    generates: ClassVar[bool] = False
    # 16 cuts the per-step overhead of small feed-forward models (benchmarks/results/overhead.md)
    steps_per_execution: ClassVar[int] = 16
    builder: ClassVar[Any] = None  # the `_target_` callable, bound by `resolve`

    name: str = ""  # the family's name in logs and run names (a family of your own: its module's)
    _target_: str = ""  # module.function that builds the model

    # ------------------------------------------------------------ before TensorFlow
    @staticmethod
    def check(cfg, reg, optimizer, data) -> None:
        """Family-specific checks of the composed config (plain values) and the loaded data."""

    @staticmethod
    def fit_mode(cfg, optimizer) -> str:
        return "steps"

    # ------------------------------------------------------------ with TensorFlow
    @classmethod
    def build_model(cls, cfg, spec, reg=None, optimizer=None, trainer=None):
        """Call the builder with the arguments it declares; the result must be a keras.Model."""
        import keras

        wanted = _parameters(cls.builder)
        extra = {k: v for k, v in (("reg", reg), ("optimizer", optimizer), ("trainer", trainer)) if k in wanted}
        if cls.builder.__module__.startswith("dlx."):
            model = cls.builder(cfg, spec, **extra)
        else:  # your own code: its error in one line (HYDRA_FULL_ERROR=1 shows the traceback)
            try:
                model = cls.builder(cfg, spec, **extra)
            except Exception as exc:
                raise DlxError(f"model._target_: {_qualname(cls.builder)}(cfg, spec) failed: {type(exc).__name__}: {exc} "
                               "(HYDRA_FULL_ERROR=1 shows the traceback)") from exc
        if not isinstance(model, keras.Model):
            raise DlxError(f"model._target_: {_qualname(cls.builder)} returned {type(model).__name__}, expected a keras.Model")
        return model

    @staticmethod
    def objective(model, spec):
        """(loss, metrics) for compile; None = by the data's task (dlx.models.compile)."""
        return None

    @staticmethod
    def callbacks(model, data, cfg: dict, run_dir: Path) -> list:
        return []

    @staticmethod
    def scores(model, data, cfg: dict, split: str = "test") -> dict:
        return {}

    @staticmethod
    def figures(model, data, plot_dir: Path) -> dict | None:
        """{name: png} of its own figures; None = the task's (confusion matrix, fit plot)."""
        return None

    @staticmethod
    def sample(model, run_dir: Path, data, cfg, out_dir: Path) -> dict:
        raise DlxError("this model family does not generate samples")

    @classmethod
    def reads_words(cls) -> bool:
        """Text datasets as word-id sequences (rather than word counts)?"""
        return "words" in cls.kinds


def model_hook(model, name: str, default=None):
    """A documented hook of a built model (MODEL_HOOKS), or `default`."""
    if name not in MODEL_HOOKS:
        raise KeyError(f"'{name}' is not a documented model hook (dlx.family.MODEL_HOOKS)")
    return getattr(model, name, default)


# --------------------------------------------------------------------------- finding families
def builtin() -> dict[str, type[Family]]:
    """name -> family class of every module in dlx/families (no TensorFlow imported)."""
    import pkgutil

    from dlx import families

    found = {}
    for info in pkgutil.iter_modules(families.__path__):
        if not info.name.startswith("_"):
            found[info.name] = family_in(importlib.import_module(f"dlx.families.{info.name}"))
    return found


def family_in(module) -> type[Family] | None:
    """The Family subclass a module defines (not one it imports)."""
    own = [v for v in vars(module).values()
           if isinstance(v, type) and issubclass(v, Family) and v.__module__ == module.__name__]
    return own[0] if len(own) == 1 else None


def resolve(model_cfg, key: str = "model") -> type[Family]:
    """The family of a `model` config node: from its `_target_`, else (runs saved before
    `_target_` existed) from its `name`; its builder bound."""
    target = _get(model_cfg, "_target_")
    if not target:
        name = _get(model_cfg, "name")
        if not name or not (Path(__file__).parent / "families" / f"{name}.py").is_file():
            raise DlxError(f"{key}._target_: expected module.function of a model builder (or a built-in {key}.name), got none")
        target = f"dlx.families.{name}.build"
    return _bind(str(target), key)


def family_name(model_cfg) -> str:
    """`name`, else the builder's module (`my_models.tiny.build` -> tiny)."""
    target = str(_get(model_cfg, "_target_") or "")
    return _get(model_cfg, "name") or (target.split(".")[-2] if target.count(".") else "model")


_BOUND: dict[str, type[Family]] = {}


def _bind(target: str, key: str) -> type[Family]:
    if target in _BOUND:
        return _BOUND[target]
    module, fn = import_target(f"{key}._target_", target)
    try:
        sig = inspect.signature(fn)
        sig.bind(None, None, **{k: None for k in ("reg", "optimizer", "trainer") if k in sig.parameters})
    except (TypeError, ValueError):
        raise DlxError(f"{key}._target_: {target} must take (cfg, spec) and return a keras.Model; "
                       f"its parameters are ({', '.join(_parameters(fn))})") from None
    base = family_in(module) or Family
    bound = type(base.__name__, (base,), {"builder": staticmethod(fn), "__module__": base.__module__,
                                          "__doc__": base.__doc__})
    _BOUND[target] = bound
    return bound


def import_target(key: str, target: str):
    """(module, attribute) of a dotted `_target_`; modules load from the working directory too."""
    if not isinstance(target, str) or "." not in target or not all(p.isidentifier() for p in target.split(".")):
        raise DlxError(f"{key}: expected a dotted path module.function, got '{target}'")
    module_name, attr = target.rsplit(".", 1)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would: the user's folder is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DlxError(f"{key}: cannot import {module_name} ({exc}); is its folder the working directory or on PYTHONPATH?") from None
    except Exception as exc:  # the user's module failed while importing
        raise DlxError(f"{key}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise DlxError(f"{key}: {module_name} has no function '{attr}'")
    return module, fn


def _parameters(fn) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


def _get(node, key: str):
    return node.get(key) if isinstance(node, dict) else getattr(node, key, None)


# --------------------------------------------------------------------------- checks
def check_model(family: type[Family], cfg, reg, optimizer, data) -> None:
    """Can this family train on this data with this penalty and optimizer? Raises DlxError."""
    name = _get(cfg, "name") or family.__name__
    spec = data.spec
    if family.task != "unsupervised" and spec.task != family.task:
        kind = "a classifier" if family.task == "classification" else "a regression model"
        target = "class labels" if spec.task == "classification" else "a real-valued target"
        raise DlxError(f"model={name} is {kind} but dataset={spec.name} has {target}")
    if spec.kind not in family.kinds:
        raise DlxError(f"model={name} needs {' or '.join(KIND_NAMES.get(k, k) for k in family.kinds)}, but dataset={spec.name} "
                       f"is {KIND_NAMES.get(spec.kind, spec.kind)}{DATA_HINTS.get(spec.kind) or MODEL_HINTS.get(family.kinds[0], '')}")
    if str(optimizer.name) == "newton" and not family.newton:
        raise DlxError(f"optimizer=newton: Newton's method is implemented for model=logistic_regression, "
                       f"not model={name} (use sgd, adam, ...)")
    family.check(cfg, reg, optimizer, data)
    mode = family.fit_mode(cfg, optimizer)
    if mode not in FIT_MODES:
        raise DlxError(f"model={name}: fit_mode() returned '{mode}', expected one of {', '.join(FIT_MODES)}")


def steps_per_execution(family: type[Family], trainer) -> int:
    """trainer.steps_per_execution, or the family's choice when it is null."""
    chosen = _get(trainer, "steps_per_execution")
    if chosen is None:
        return family.steps_per_execution
    positive("trainer.steps_per_execution", chosen, "a positive number of batches or null")
    return chosen


def check_penalties(family: str, reg, allowed: tuple[str, ...], own: str = "") -> None:
    """A family that has no use for a configured penalty says so instead of ignoring it."""
    for key in ("l1", "l2", "dropout"):
        if getattr(reg, key) and key not in allowed:
            hint = f"; it regularises through {own}" if own else (f"; it supports {', '.join(allowed)}" if allowed else "")
            raise DlxError(f"regularization.{key}: model={family} has no {key} penalty{hint}")


def positive(key: str, value: float, what: str = "a positive value") -> None:
    if not value > 0:
        raise DlxError(f"{key}: expected {what}, got {value}")


def check_unit_interval(family: str, data, why: str) -> None:
    if not hasattr(data.train.x, "min"):  # streamed image files: their scaling says the range
        lo, hi = (0.0, 1.0) if data.spec.scaling == "unit" else (-1.0, 255.0)
    else:
        lo, hi = float(data.train.x.min()), float(data.train.x.max())
    if lo < 0 or hi > 1:
        raise DlxError(f"model={family} needs inputs in [0, 1] ({why}), but dataset={data.spec.name} "
                       f"(scaling={data.spec.scaling}) ranges over [{lo:.3g}, {hi:.3g}]; use dataset.scaling=unit")


def flat_size(spec) -> int:
    return math.prod(spec.input_shape)
