"""`dlx runs DIR`: a sweep's jobs (or any folder of runs) as one table, best first.

    dlx runs multirun/2026-11-26/10-00-00            # aligned table on the terminal
    dlx runs multirun/sweeps/mlp_search --format markdown > sweep.md
    dlx runs outputs --format csv --sort test_accuracy
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from dlx.config import higher_is_better
from dlx.errors import DlxError
from dlx.rundir import Row, collect

def ordered(rows: list[Row], sort: str | None = None) -> list[Row]:
    """Best first by the target metric (or `sort`, a metrics.json key); runs without it last."""
    def key(row: Row):
        value = row.value if sort is None else row.metrics.get(sort)
        if value is None:
            return (1, 0.0)
        higher = higher_is_better(sort or row.metric)
        return (0, -value if higher else value)

    return sorted(rows, key=key)


def common_overrides(rows: list[Row]) -> list[str]:
    """The overrides every run shares (shown once, above the table, when there are several runs)."""
    if len(rows) < 2:
        return []
    return [o for o in rows[0].overrides if all(o in r.overrides for r in rows[1:])]


def render(rows: list[Row], fmt: str, groups: bool = False) -> str:
    common = [] if groups else common_overrides(rows)
    metric = rows[0].metric if rows else "metric"
    header = (["runs", "group", f"{metric} (mean)", "test (mean)", "epochs", "seconds", "std"] if groups else
              ["run", "overrides", metric, "test", "epochs", "seconds", "status"])
    # a sweep job's directory starts with its number: that is enough to find it
    table = [[r.run.split("_", 1)[0] if "/" not in r.run else r.run, ",".join(o for o in r.overrides if o not in common) or "defaults",
              "" if r.value is None else f"{r.value:.4f}", r.test,
              "" if r.epochs is None else str(r.epochs), "" if r.seconds is None else f"{r.seconds:.1f}", r.status]
             for r in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(table)
        return out.getvalue()
    if fmt == "markdown":
        lines = [f"All runs: `{' '.join(common)}`", ""] if common else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table]
        return "\n".join(lines) + "\n"
    above = f"all runs: {' '.join(common)}\n\n" if common else ""
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    fmt_row = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return above + "\n".join([fmt_row(header), fmt_row(["-" * w for w in widths]), *map(fmt_row, table)]) + "\n"


def grouped(rows: list[Row], key: str) -> list[Row]:
    """One row per value of `key` (an override, e.g. model or optimizer.lr) over the finished runs:
    the target's mean ± standard deviation across the runs that differ in anything else (seeds)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        value = next((o.split("=", 1)[1] for o in row.overrides if o.split("=", 1)[0] == key), None)
        if value is not None and row.status == "finished" and row.value is not None:
            groups.setdefault(value, []).append(row)
    if not groups:
        raise DlxError(f"--group-by {key}: no finished run sets {key} (it must be one of the overrides, e.g. from -m {key}=a,b)")
    out = []
    for value, members in groups.items():
        values = [r.value for r in members]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        tests = [float(r.test.split()[-1]) for r in members if r.test]
        name = next((r.test.split()[0] for r in members if r.test), "test")
        test = f"{name} {sum(tests) / len(tests):.4f}" if tests else ""
        out.append(Row(f"{len(members)} runs", [f"{key}={value}"], members[0].metric, mean, test, None, None, f"± {std:.4f}", {}))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dlx runs", description="A table of the training runs under DIR (a sweep's jobs), best first.")
    parser.add_argument("dir", help="a sweep directory (multirun/...), a run directory, or a folder of runs (outputs)")
    parser.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    parser.add_argument("--sort", help="a metrics.json key to sort by (default: the target metric, best_<monitor>)")
    parser.add_argument("--group-by", metavar="KEY", help="one row per value of an override (e.g. model): the target's mean "
                        "and standard deviation over the runs that differ in anything else (seeds)")
    args = parser.parse_args(argv)
    try:
        root = Path(args.dir)
        if not root.is_dir():
            raise DlxError(f"{args.dir}: no such directory")
        rows = collect(root)
        if not rows:
            raise DlxError(f"{args.dir}: no dlx train runs in it (no */.hydra/config.yaml)")
        if args.group_by:
            rows = grouped(rows, args.group_by)
        sys.stdout.write(render(ordered(rows, None if args.group_by else args.sort), args.format, groups=bool(args.group_by)))
    except DlxError as exc:
        print(f"dlx runs: error: {exc}", file=sys.stderr)
        return 2
    return 0
