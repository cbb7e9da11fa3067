"""Reading a finished training run directory (for eval and predict)."""

from __future__ import annotations

from pathlib import Path

from dlx.errors import DlxError


def open_run(run: str) -> tuple[Path, dict]:
    """Check `run` is a finished training run; return its path and its saved config."""
    from omegaconf import OmegaConf

    path = Path(run).expanduser()
    if not path.is_dir():
        raise DlxError(f"run={run}: no such run directory")
    for needed in (".hydra/config.yaml", "model.keras", "data_spec.json"):
        if not (path / needed).is_file():
            raise DlxError(f"run={run}: missing {needed} (not a finished dlx train run)")
    return path, OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=True)


def load_model(path: Path, cfg: dict, spec):
    """The run's model, compiled with the same loss and metrics as in training (no optimizer)."""
    import keras

    from dlx import models

    models.family(cfg["model"]["name"])  # registers the family's Keras classes
    model = keras.saving.load_model(path / "model.keras", compile=False)
    models.compile(model, spec)
    return model
