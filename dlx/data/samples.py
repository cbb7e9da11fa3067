"""The labelled images `dlx serve` collects for retraining (POST /v1/samples): the one module that
writes them (files under <state>/samples/<label>/, rows in <state>/samples.db) and reads them back
as training data (`dataset.extra`)."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from dlx.config import ServeSettings
from dlx.data.types import DataSpec
from dlx.errors import DlxError
from dlx.storage import sqlite

DEFAULT_STATE_DIR = ServeSettings.state_dir


class Samples:
    """Labelled images sent for retraining: files under <state>/samples/<class index>/<id>.<type>
    (never a class name in a path: names may hold '/' or '..'), rows in samples.db."""

    def __init__(self, directory: Path):
        self.directory = directory / "samples"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db_path = directory / "samples.db"
        with sqlite(self.db_path) as db:
            db.execute("create table if not exists samples (id text primary key, label text not null, file text not null,"
                       " sha256 text not null, user text, received real not null)")

    def add(self, data: bytes, kind: str, label: str, classes: list[str], user: str | None) -> dict[str, Any]:
        """Store one image labelled `label`, which must be one of `classes` (the served model's)."""
        if label not in classes:
            raise DlxError(f"label: expected one of the model's classes, got '{label[:40]}'")
        if kind not in ("png", "jpeg", "gif", "bmp"):
            raise DlxError(f"not a stored image type: {kind[:10]}")
        sample_id = uuid.uuid4().hex
        folder = self.directory / str(classes.index(label))
        path = (folder / f"{sample_id}.{kind}").resolve()
        if not path.is_relative_to(self.directory.resolve()):  # cannot happen with an index and a uuid; checked anyway
            raise DlxError("sample path outside the state directory")
        folder.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        with sqlite(self.db_path) as db:
            db.execute("insert into samples values (?, ?, ?, ?, ?, ?)",
                       (sample_id, label, str(path.relative_to(self.directory)), hashlib.sha256(data).hexdigest(), user, time.time()))
        return {"id": sample_id, "label": label}

    def count(self) -> int:
        with sqlite(self.db_path) as db:
            return db.execute("select count(*) from samples").fetchone()[0]


def collected(extra: str, spec: DataSpec, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The labelled images `dlx serve` collected (<state>/samples.db + files), prepared as
    `dlx predict` prepares images, in the dataset's raw pixel range; labels as class indices."""
    from dlx.data.images import preprocess, read_grey

    state = Path(DEFAULT_STATE_DIR if extra == "samples" else extra).expanduser()
    db = state / "samples.db"
    if spec.kind != "image":
        raise DlxError(f"dataset.extra={extra}: collected samples are images; dataset={spec.name} is {spec.kind} data")
    if not db.is_file():
        raise DlxError(f"dataset.extra={extra}: no {db} (samples are collected by dlx serve, POST /v1/samples)")
    with sqlite(db) as conn:
        rows = conn.execute("select label, file from samples order by received").fetchall()
    names = [str(c) for c in spec.class_names or []]
    xs, ys = [], []
    for label, file in rows:
        if label not in names:
            raise DlxError(f"dataset.extra={extra}: sample {file} is labelled '{label}', not a class of {spec.name} ({', '.join(names)})")
        xs.append(preprocess(read_grey(state / "samples" / file), spec).reshape(shape))
        ys.append(names.index(label))
    if not xs:
        raise DlxError(f"dataset.extra={extra}: {db} holds no samples yet")
    return np.stack(xs), np.asarray(ys)
