"""SQLite files that several processes share (the server's keys, jobs and samples)."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def sqlite(path: Path):
    """A short-lived connection to one of the server's SQLite files: autocommit, WAL (readers do
    not wait for a writer), up to 30 s to get a lock, closed afterwards."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("pragma journal_mode=wal")
        yield db
    finally:
        db.close()
