"""`dlx report experiments`: run the book presets and their tuned variants, write a results table.

Each preset runs as its own `dlx train` process (exactly the command printed in the table). The
MNIST presets run on MNIST when it is cached or downloadable, else on the full Fashion-MNIST from
Debian's package; presets on other data (the GDA and SVM examples) keep their own dataset.
`--quick` trains every preset for one epoch on a small subset: a CI-sized check that they all run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from dlx.errors import DlxError

QUICK = ["trainer.epochs=1", "dataset.subset=1000", "logger=none"]


def choose_dataset(requested: str) -> tuple[list[str], str]:
    """(dataset overrides, a sentence saying which data was used and why)."""
    from dlx.data import datasets

    fashion_dir = datasets.DEBIAN_FASHION_DIR
    fashion = ["dataset=fashion_mnist", f"dataset.path={fashion_dir}"]
    if requested == "fashion_mnist":
        return fashion, "Fashion-MNIST (requested)"
    try:
        datasets.download("mnist")
        return ["dataset=mnist"], "MNIST (downloaded or cached)"
    except DlxError as exc:
        if requested == "mnist" or not fashion_dir.is_dir():
            raise DlxError(f"MNIST is not available ({exc}) and Fashion-MNIST is not installed at {fashion_dir}") from None
        reason = str(exc).split(":")[0]
        return fashion, f"Fashion-MNIST from Debian's dataset-fashion-mnist, because MNIST could not be fetched ({reason})"


def picked(preset: dict, group: str) -> str:
    """The option of `group` (dataset, model, ...) a preset picks in its defaults list."""
    key = f"override /{group}"
    return next((d[key] for d in preset.get("defaults", []) if isinstance(d, dict) and key in d), "?")


def own_dataset(preset: dict) -> str:
    return picked(preset, "dataset")


def quick_overrides(preset: dict) -> list[str]:
    """--quick: one epoch on 1,000 examples; layer-wise pretraining one epoch per layer too."""
    return QUICK + (["model.pretrain.epochs=1"] if picked(preset, "model") in ("dbn", "sdae") else [])


def uses_mnist(preset: dict) -> bool:
    """Does the preset train on MNIST (and so may be swapped to Fashion-MNIST)?"""
    return own_dataset(preset) == "mnist"


def run_preset(name: str, data: list[str], extra: list[str], run_dir: Path) -> dict:
    command = ["dlx", "train", f"experiment={name}", *data, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dlx")), *command[1:], f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode == 2:  # its data is not available here, or a config error: a row saying so
        error = proc.stderr.strip().splitlines()[-1].removeprefix("dlx train: error: ")
        print(f"  {name:<32} not run: {error}", flush=True)
        return {"error": error, "epochs_run": 0, "wall_seconds": wall, "command": " ".join(command)}
    if proc.returncode != 0:
        raise DlxError(f"experiment={name} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metric, value = score(metrics)
    print(f"  {name:<32} {metric} {value:.4f}  ({metrics['epochs_run']} epochs, {wall:.0f} s)", flush=True)
    return metrics | {"wall_seconds": wall, "command": " ".join(command)}


SCORES = (("test_bits_per_char", "bits/char"), ("test_bleu4", "BLEU-4"), ("test_accuracy", "test accuracy"),
          ("test_r2", "test R^2"), ("test_pseudo_likelihood", "test pseudo-likelihood"))


def score(metrics: dict) -> tuple[str, float]:
    """The number a row shows: a char-RNN's test bits per character, a captioner's test BLEU-4,
    test accuracy; test R^2 for regression; the test pseudo-likelihood of an RBM; an autoencoder's
    test reconstruction loss."""
    if "error" in metrics:
        return "not run", math.nan
    for key, name in SCORES:
        if key in metrics:
            return name, metrics[key]
    return "test reconstruction loss", metrics["test_loss"]


def book_number(tags: dict):
    """The book's reported number for a preset (accuracy, or pseudo-likelihood for the RBM); None if none."""
    for key in ("book_test_accuracy", "book_pseudo_likelihood"):
        if tags.get(key) is not None:
            return tags[key]
    return None


def on_chart(row: dict) -> bool:
    return row["metric"] in ("test accuracy", "test R^2") and not (math.isnan(row["dlx"]) or math.isnan(row["tuned"]))


def chart(rows: list[dict], path: Path, data_note: str) -> None:
    import numpy as np

    from dlx.plots import pyplot

    plt = pyplot()

    import textwrap

    names = [textwrap.fill(r["preset"].removeprefix("book_").replace("_mnist", "").replace("_", " "), 12) for r in rows]
    series = [("book (MNIST)", "book"), ("dlx, book settings", "dlx"), ("dlx tuned", "tuned")]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(rows), 4.8))
    for i, (label, key) in enumerate(series):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]  # no book number: no bar
        bars = ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label)
        ax.bar_label(bars, labels=[f"{v:.3f}" if v else "" for v in values], fontsize=7, padding=2)
    low = min(min(r[k] for k in ("book", "dlx", "tuned") if r[k] is not None) for r in rows)
    ax.set(xticks=x, ylabel="test accuracy (R^2: regression)", ylim=(max(0.0, low - 0.05), 1.03), title=f"dlx vs the book (MNIST presets on {data_note.split(' ')[0]})")
    ax.set_xticklabels(names)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


ROW = re.compile(r"^\| `(book_\w+)` / `(\w+)` \|")
COMMAND = re.compile(r"^- `(dlx train experiment=(\w+)[^`]*)`$", re.M)


def previous_rows(results_md: Path) -> dict[str, dict]:
    """The rows of an earlier RESULTS.md (its table line, its numbers for the chart, its commands),
    so that `--only` reruns some presets and keeps the others as they were measured."""
    if not results_md.is_file():
        return {}
    text = results_md.read_text()
    commands = COMMAND.findall(text)

    def number(cell: str) -> float:
        try:
            return float(cell.split()[0])
        except (ValueError, IndexError):
            return math.nan

    rows = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            metric = re.search(r"\(([^()]*)\)$", cells[1])
            rows[match[1]] = {
                "preset": match[1], "tuned_name": match[2], "line": line,
                "book": None if cells[2] == "none reported" else number(cells[2]),
                "metric": metric[1] if metric else "test accuracy", "dlx": number(cells[3]), "tuned": number(cells[4]),
                "commands": [c for c, name in commands if name in (match[1], match[2])],
            }
    return rows


def table_line(r: dict, b: dict, t: dict) -> str:
    book = f"{r['book']:.4f} ({r['book_note']})" if r["book"] is not None else "none reported"
    data = r["data"] + ("" if r["metric"] in ("test accuracy", "not run") else f" ({r['metric']})")
    shown = [f"not run: {run['error']}" if "error" in run else f"{value:.4f}" for run, value in ((b, r["dlx"]), (t, r["tuned"]))]
    return (f"| `{r['preset']}` / `{r['tuned_name']}` | {data} | {book} | {shown[0]} | {shown[1]} | "
            f"{b['epochs_run']} / {t['epochs_run']} | {b['wall_seconds']:.0f} s / {t['wall_seconds']:.0f} s |")


def report(quick: bool, dataset: str, out: Path, only: list[str] | None) -> Path:
    from omegaconf import OmegaConf

    from dlx.schemas import experiments_dir

    presets = {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted(experiments_dir().glob("*.yaml"))}
    books = [n for n in presets if n.startswith("book_") and (not only or n in only)]
    if not books:
        raise DlxError(f"--only: no book preset among {only}; presets: {', '.join(presets)}")
    data, data_note = choose_dataset(dataset)
    runs_root = Path("outputs") / "reproduce" / time.strftime("%Y-%m-%d_%H-%M-%S")
    print(f"running {len(books)} book presets and their tuned variants on {data_note}{' (quick)' if quick else ''}")
    results: dict[str, dict] = {}
    rows = []
    for name in books:
        tags = presets[name].get("tags", {})
        tuned = tags["tuned_variant"]
        swap = uses_mnist(presets[name])
        for preset in (name, tuned):
            if preset not in results:
                extra = quick_overrides(presets[preset]) if quick else []
                results[preset] = run_preset(preset, data if swap else [], extra, runs_root / preset)
        row = {"preset": name, "tuned_name": tuned, "book": book_number(tags),
               "book_note": tags.get("book_reference", "MNIST" if swap else ""),
               "data": data_note.split(" ")[0] if swap else own_dataset(presets[name]),
               "metric": score(results[name])[0], "dlx": score(results[name])[1], "tuned": score(results[tuned])[1]}
        row["line"] = table_line(row, results[name], results[tuned])
        row["commands"] = [results[p]["command"] for p in dict.fromkeys((name, tuned))]
        rows.append(row)
    kept = {}
    if only:  # the rows not rerun stay as the last report measured them
        kept = {k: v for k, v in previous_rows(out / "RESULTS.md").items() if k not in books and k in presets}
    rows = sorted(rows + list(kept.values()), key=lambda r: r["preset"])

    out.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d")
    lines = [
        "# Reproducing the book",
        "",
        f"Generated by `dlx report experiments{' --quick' if quick else ''}` on {when}, "
        f"2-CPU machine, no GPU. Data of the MNIST presets: {data_note}; split: the last 5,000 training images validate, "
        "the 10,000-image test set scores. The other presets use their own data (column 'data') and its fixed test split. "
        "The book's numbers are MNIST test accuracies (the RBM's: its pseudo-likelihood); where the data differs, "
        "compare dlx's two columns with each other, not with the book. Rows scored otherwise than by accuracy say "
        "so in the data column: R^2 (regression), pseudo-likelihood (RBM, higher is better), reconstruction loss "
        "(autoencoders: cross-entropy summed over the pixels, lower is better), bits per character on the held-out "
        "last 5 % of the text (char-RNN, lower is better), BLEU-4 on held-out images (captioning). A row whose data is not available on this machine says "
        "so instead of a number.",
    ]
    if kept:
        lines += ["", f"Rows of {', '.join(f'`{b}`' for b in books)} were run on {when} (`--only`); the others are kept "
                      "from the previous report, with their commands."]
    lines += [
        "",
        "| preset | data | book | dlx, book settings | dlx tuned | epochs (book / tuned) | wall time (book / tuned) |",
        "|---|---|---|---|---|---|---|",
        *(r["line"] for r in rows),
        "", "Commands that produced each number:", "",
        *(f"- `{c}`" for c in dict.fromkeys(c for r in rows for c in r["commands"])),
        "", "![results](results.png)", "", "The chart shows the rows scored by accuracy or R^2.", "",
    ]
    (out / "RESULTS.md").write_text("\n".join(lines))
    chart([r for r in rows if on_chart(r)], out / "results.png", data_note)
    print(f"wrote {out / 'RESULTS.md'} and {out / 'results.png'}")
    return out / "RESULTS.md"


def main(argv: list[str]) -> int:
    from dlx.schemas import experiments_dir

    parser = argparse.ArgumentParser(prog="dlx report", description="Run presets and tabulate their results.")
    sub = parser.add_subparsers(dest="what", required=True)
    exp = sub.add_parser("experiments", help="book presets vs the book's numbers vs tuned variants")
    exp.add_argument("--quick", action="store_true", help="1 epoch on 1,000 images per preset (a smoke test)")
    exp.add_argument("--dataset", choices=["auto", "mnist", "fashion_mnist"], default="auto")
    exp.add_argument("--only", help="comma-separated book presets to run (default: all)")
    exp.add_argument("--out", type=Path, help="output directory (default: experiments/, or outputs/report-quick with --quick)")
    args = parser.parse_args(argv)
    out = args.out or (Path("outputs/report-quick") if args.quick else experiments_dir())
    try:
        report(args.quick, args.dataset, out, args.only.split(",") if args.only else None)
    except DlxError as exc:
        print(f"dlx report: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
