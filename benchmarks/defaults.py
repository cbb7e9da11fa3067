"""`make bench` (part 7): every classifier family as a new user first runs it, `dlx train model=NAME`
and nothing else, on the bundled digits: test accuracy next to the floor tests/test_defaults.py
holds it to, and the command's wall time (process start to exit, MLflow and TensorBoard on, as
the default logger is) against the one-minute target on 2 CPUs. Each family runs `--rounds` times
in alternating order; the table shows the median time. Writes benchmarks/results/defaults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tables  # benchmarks/tables.py: the script's directory is on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_defaults import FLOORS  # noqa: E402  (the floors live with the test that asserts them)

TARGET_S = 60.0


def run(family: str, work: Path) -> tuple[float, float]:
    out = work / family
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("dlx")), "train", f"model={family}", f"hydra.run.dir={out}"],
                   cwd=work, check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - t0
    return json.loads((out / "metrics.json").read_text())["test_accuracy"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    families = sorted(FLOORS)
    seconds: dict[str, list[float]] = {f: [] for f in families}
    accuracy: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for family in families if r % 2 == 0 else reversed(families):
                accuracy[family], s = run(family, Path(tmp) / str(r))
                seconds[family].append(s)
                print(f"round {r + 1}: {family} {accuracy[family]:.4f} {s:.1f}s", flush=True)
    lines = [
        "# Defaults on the default data",
        "",
        f"`python benchmarks/defaults.py` on {platform.node() or 'this machine'} ({os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d')}: `dlx train model=NAME` with no other override, bundled digits "
        f"(1,237 train / 200 validation / 360 test), default logger (TensorBoard + MLflow). Wall time is the "
        f"whole command, median of {args.rounds} alternating rounds; target: under {TARGET_S:.0f} s.",
        "",
        "| family | test accuracy | floor | wall time (s) | within target |",
        "|---|---|---|---|---|",
    ]
    for family in families:
        median = statistics.median(seconds[family])
        lines.append(f"| {family} | {accuracy[family]:.4f} | {FLOORS[family]:.2f} | {median:.1f} | "
                     f"{'yes' if median < TARGET_S else 'no'} |")
    tables.write("defaults.md", lines)


if __name__ == "__main__":
    main()
