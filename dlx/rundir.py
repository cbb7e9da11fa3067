"""Reading run directories: a finished run's config and model (eval, predict, sample, serve), and
any folder of runs as rows (`dlx runs`, a sweep's summary); no TensorFlow until a model loads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from dlx.config import higher_is_better
from dlx.errors import DlxError
from dlx.training.state import resume_dir


def open_run(run: str) -> tuple[Path, dict]:
    """Check `run` is a finished training run; return its path and its saved config."""
    from omegaconf import OmegaConf

    path = Path(run).expanduser()
    if not path.is_dir():
        raise DlxError(f"run={run}: no such run directory")
    for needed in (".hydra/config.yaml", "model.keras", "data_spec.json"):
        if not (path / needed).is_file():
            raise DlxError(f"run={run}: missing {needed} (not a finished dlx train run)")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=True)
    except Exception as exc:  # YAML that does not parse or resolve: a truncated or edited file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DlxError(f"run={run}: .hydra/config.yaml is not a readable config ({first[:120]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict) or not isinstance(cfg.get("dataset"), dict):
        raise DlxError(f"run={run}: .hydra/config.yaml has no model and dataset (truncated?)")
    return path, cfg


def load_model(path: Path, cfg: dict, spec):
    """The run's model, compiled with the same loss and metrics as in training (no optimizer)."""
    return load_keras(path / "model.keras", cfg, spec)


def load_keras(model_file: Path, cfg: dict, spec):
    """A run's Keras model file, with the family's Keras classes registered, compiled as in training."""
    import keras

    from dlx import models
    from dlx.family import resolve

    family = resolve(cfg["model"], "run model")
    models.import_keras_code(family)  # registers the family's Keras classes
    try:
        model = keras.saving.load_model(model_file, compile=False)
    except Exception as exc:  # a truncated or corrupt archive; Keras says "file not found" for some of those
        raise DlxError(f"{model_file}: not a readable Keras model ({type(exc).__name__}: truncated or corrupt?)") from None
    models.compile(model, spec, objective=family.objective(model, spec))
    return model


# override keys that say how a job was run, not what it is
HIDDEN_OVERRIDES = ("sweep.trial=", "resume=", "sweep.resume=", "sweep.n_trials=", "sweep.n_jobs=")


@dataclass
class Row:
    run: str  # path relative to DIR
    overrides: list[str]
    metric: str  # the target: best_<trainer.early_stopping.monitor>
    value: float | None
    test: str  # e.g. "accuracy 0.9123"
    epochs: int | None
    seconds: float | None
    status: str  # finished | pruned | incomplete | failed
    metrics: dict  # metrics.json ({} before the run finished)


def collect(root: Path) -> list[Row]:
    """One row per run directory under `root` (a run directory itself counts)."""
    rows = []
    configs = sorted(root.glob(".hydra/config.yaml")) + sorted(root.rglob("*/.hydra/config.yaml"))
    for cfg_path in configs:
        run = cfg_path.parent.parent
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        if "trainer" not in cfg:  # an eval/predict config, not a training run
            continue
        monitor = cfg["trainer"]["early_stopping"]["monitor"]
        overrides_file = run / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        shown = [o for o in overrides or [] if not o.startswith(HIDDEN_OVERRIDES)]
        metrics_file, state_file = run / "metrics.json", resume_dir(run) / "state.json"
        value = epochs = seconds = None
        test, metrics = "", {}
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            value = metrics.get(f"best_{monitor}")
            epochs, seconds = metrics.get("epochs_run"), metrics.get("train_seconds")
            status = "pruned" if metrics.get("pruned_at_epoch") else "finished"
            first = next((k for k in metrics if k.startswith("test_")), None)
            test = f"{first[5:]} {metrics[first]:.4f}" if first else ""
        elif state_file.is_file():
            state = json.loads(state_file.read_text())
            hist = state["history"].get(monitor, [])
            pick = max if higher_is_better(monitor) else min
            value = pick(hist) if hist else None
            epochs, seconds, status = state["epoch"], round(sum(state["epoch_seconds"]), 3), "incomplete"
        else:
            status = "failed" if (run / "train.log").is_file() else "incomplete"
        rel = str(run.relative_to(root)) if run != root else "."
        rows.append(Row(rel, shown, f"best_{monitor}", value, test, epochs, seconds, status, metrics))
    return rows
