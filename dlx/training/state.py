"""Where a run keeps the state `dlx train resume=DIR` continues from, and its file format (numpy
only: `dlx runs` and the CLI read it before TensorFlow loads). `training/resume.py` writes it."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def resume_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "resume"


def read(directory: Path) -> dict | None:
    """The last completed epoch's state (`ResumeState` writes it), or None."""
    from dlx.errors import DlxError

    path = directory / "state.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not {"epoch", "history", "variables"} <= set(state):
            raise ValueError("no epoch, history or variables")
    except (ValueError, OSError) as exc:
        raise DlxError(f"{path}: not a readable resume state ({type(exc).__name__}: truncated or edited?); "
                       "remove the checkpoints/resume folder to train the run from its start") from None
    return state


def saved_epoch(directory: Path) -> str:
    """What a stopped run left to continue from, in words (for the line that says it stopped)."""
    saved = read(directory)
    return f"state saved at the end of epoch {saved['epoch']}" if saved else "no epoch had finished"


def save_groups(path: Path, **groups: list) -> None:
    """Lists of arrays in one .npz (group g's i-th array as `g{i}`, its length as `n_g`), written
    through a rename."""
    arrays = {f"{g}{i}": a for g, values in groups.items() for i, a in enumerate(values)}
    counts = {f"n_{g}": len(values) for g, values in groups.items()}
    with atomic(path, ".tmp.npz") as tmp:
        np.savez(tmp, **arrays, **counts)


@contextmanager
def atomic(path: Path, suffix: str):
    """Write to a temporary name next to `path`, then rename over it: a failure (a full disk)
    leaves the previous file whole and no temporary behind, and is one line (DlxError)."""
    from dlx.errors import DlxError

    tmp = path.with_suffix(suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DlxError(f"could not write {path}: {exc.strerror or exc}; the previous version is kept") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_groups(path: Path) -> dict[str, list]:
    with np.load(path) as saved:
        groups = [k[2:] for k in saved.files if k.startswith("n_")]
        return {g: [saved[f"{g}{i}"] for i in range(int(saved[f"n_{g}"]))] for g in groups}


def to_json(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "inf", "-inf", "nan"
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(value):
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value
