"""`dlx data list` and `dlx data download NAME`: inspect and fetch datasets (no Hydra needed)."""

from __future__ import annotations

import argparse
import logging
import sys

from dlx.errors import DlxError


def _status(name: str) -> str:
    from dlx.data.datasets import DEBIAN_FASHION_DIR, REMOTES, dataset_dir

    if name not in REMOTES:
        return "no download needed"
    target = dataset_dir(name)
    have = [r.filename for r in REMOTES[name] if (target / r.filename).is_file()]
    status = f"cached in {target}" if len(have) == len(REMOTES[name]) else "not downloaded"
    if name == "fashion_mnist" and DEBIAN_FASHION_DIR.is_dir():
        status += f"; local copy: dataset.path={DEBIAN_FASHION_DIR}"
    return status


def main(argv: list[str]) -> int:
    from dlx.data.datasets import DESCRIPTIONS, REMOTES, download

    parser = argparse.ArgumentParser(prog="dlx data", description="List or download datasets.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="datasets, what they are and whether they are cached")
    dl = sub.add_parser("download", help="download a dataset into $DLX_DATA_DIR (default ~/.cache/dlx)")
    dl.add_argument("name", choices=sorted(REMOTES))
    dl.add_argument("--mirror", help="base URL serving the same file names (also $DLX_DATA_MIRROR)")
    args = parser.parse_args(argv)

    if args.action == "list":
        width = max(map(len, DESCRIPTIONS))
        for name, desc in DESCRIPTIONS.items():
            print(f"{name:<{width}}  {desc}\n{'':<{width}}  {_status(name)}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        paths = download(args.name, mirror=args.mirror)
    except DlxError as exc:
        print(f"dlx data: error: {exc}", file=sys.stderr)
        return exc.exit_code
    for p in paths:
        print(p)
    return 0
