"""What every benchmark ends with: its markdown table written to benchmarks/results/NAME and
printed; and what the benchmarks that run `dlx train` read back from a run's log."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*\(([\d.]+)s, validation ([\d.]+)s\)")  # dlx.training.callbacks.EpochLog


def training_seconds(log: str) -> dict[int, float]:
    """Each epoch's training time (the epoch minus its validation pass) from a dlx train.log text."""
    return {int(e): float(t) - float(v) for e, t, v in EPOCH_LINE.findall(log)}


def write(name: str, lines: list[str]) -> Path:
    """Write `lines` to benchmarks/results/`name` (one trailing newline), print them and the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return path
