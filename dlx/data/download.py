"""Fetch dataset files once: mirrors in order, checksum, cache dir, resumable atomic writes.

A file is downloaded to ``<name>.part`` next to its final place (resumed with an HTTP Range
request if a previous attempt was cut off), checked against its published digest, and only then
renamed into place, so the cache never holds a file that failed its check.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dlx.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT_S = 30


@dataclass(frozen=True)
class Remote:
    """One published file: its name, the mirrors serving it, and its published digest."""

    filename: str
    mirrors: tuple[str, ...]  # base URLs, each ending in '/'
    digest: str
    algorithm: str = "sha256"  # Fashion-MNIST publishes md5 only


def cache_dir() -> Path:
    return Path(os.environ.get("DLX_DATA_DIR") or Path.home() / ".cache" / "dlx").expanduser()


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mirrors(remote: Remote, mirror: str | None) -> list[str]:
    """An explicit mirror (argument or $DLX_DATA_MIRROR) replaces the published ones."""
    override = mirror or os.environ.get("DLX_DATA_MIRROR")
    if override:
        return [override if override.endswith("/") else override + "/"]
    return list(remote.mirrors)


def _download(url: str, part: Path, progress: bool) -> None:
    """Append the rest of `url` to `part` (resuming from its current size)."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "dlx"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        if have and response.status != 206:  # server ignored the Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as out, tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            desc=part.name.removesuffix(".part"),
            disable=True if not progress else None,  # None: only on a terminal
            leave=False,
        ) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))


def fetch(remote: Remote, dest_dir: Path | None = None, mirror: str | None = None, progress: bool = True) -> Path:
    """Return the path of a verified copy of `remote`, downloading it if the cache lacks one."""
    dest_dir = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest = dest_dir / remote.filename
    if dest.exists():
        if file_digest(dest, remote.algorithm) == remote.digest:
            return dest
        log.warning("%s: cached copy fails its %s check; downloading again", dest, remote.algorithm)
        dest.unlink()
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for base in _mirrors(remote, mirror):
        url = base + remote.filename
        log.info("downloading %s", url)
        try:
            _download(url, part, progress)
        except urllib.error.HTTPError as exc:
            if exc.code != 416:  # 416: nothing left after our Range, the part is complete
                errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
                continue
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            # keep the partial file: the next mirror (or the next run) resumes it
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        got = file_digest(part, remote.algorithm)
        if got != remote.digest:
            part.unlink()
            errors.append(f"{url}: {remote.algorithm} mismatch: expected {remote.digest}, got {got}")
            continue
        os.replace(part, dest)
        return dest
    raise DataError(f"could not download {remote.filename}: " + "; ".join(errors))
