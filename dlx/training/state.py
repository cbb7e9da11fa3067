"""Where a run keeps the state `dlx train resume=DIR` continues from (no TensorFlow needed to read it)."""

from __future__ import annotations

import json
from pathlib import Path


def resume_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "resume"


def read(directory: Path) -> dict | None:
    """The last completed epoch's state (dlx.training.loop.ResumeState writes it), or None."""
    path = directory / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None
