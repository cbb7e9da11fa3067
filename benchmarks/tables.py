"""What every benchmark ends with: its markdown table written to benchmarks/results/NAME and printed."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write(name: str, lines: list[str]) -> Path:
    """Write `lines` to benchmarks/results/`name` (one trailing newline), print them and the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return path
