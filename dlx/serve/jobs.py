"""The job queue of `dlx serve`: predict batches and training runs, persisted in SQLite.

huey (SQLite storage under serve.state_dir) queues and runs the jobs; the jobs table next to it
records each job's status (queued, running, finished, failed), result and error, so both survive
a server restart and `GET /v1/jobs/{id}` can answer at any time. Messages are JSON, not pickle. A
job that raises is recorded as failed and the worker goes on with the next one. Workers: a thread
inside the server (`serve.worker=thread`, the default) or `dlx worker` processes on the same state
directory (`serve.worker=none` on the server).

A training job runs the same `dlx train` as the command line, in a subprocess, with the job's
Hydra overrides as separate arguments (no shell), its run directory under <state>/jobs/<id>/.
Overrides that name files or stores are refused, except `dataset.extra=samples`: this server's
collected samples (the retraining loop: collect, train with them, `dlx promote`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from dlx.storage import sqlite

log = logging.getLogger("dlx.serve.jobs")

# key=value, the key a config path; no Hydra flags (-m, --cfg), no hydra.* keys, no newlines
OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][\w.]*(=[^\n\r]*)?$")
KINDS = ("predict", "train")
# override keys that name files, directories or stores: a caller's text never becomes a server path
PATH_KEYS = re.compile(r"(^|\.)(path|dir|tracking_uri|from_run|extra|resume|out|storage)$")


def json_serializer():
    from huey.registry import Message
    from huey.serializer import Serializer
    from huey.utils import Error

    def enc(o):
        if isinstance(o, Message):
            return {"__message__": [enc(v) for v in o]}
        if isinstance(o, Error):
            return {"__error__": enc(o.metadata)}
        if isinstance(o, dt.datetime):
            return {"__datetime__": o.isoformat()}
        if isinstance(o, (list, tuple)):
            return [enc(v) for v in o]
        if isinstance(o, dict):
            return {str(k): enc(v) for k, v in o.items()}
        return o

    def dec(o):
        if isinstance(o, dict):
            if "__message__" in o:
                return Message(*[dec(v) for v in o["__message__"]])
            if "__error__" in o:
                return Error(dec(o["__error__"]))
            if "__datetime__" in o:
                return dt.datetime.fromisoformat(o["__datetime__"])
            return {k: dec(v) for k, v in o.items()}
        if isinstance(o, list):
            return [dec(v) for v in o]
        return o

    class JsonSerializer(Serializer):
        """huey's messages and results as JSON: a queue that never unpickles what it reads."""

        def _serialize(self, data):
            return json.dumps(enc(data)).encode()

        def _deserialize(self, data):
            return dec(json.loads(data))

    return JsonSerializer()


def check_train_overrides(overrides: Any) -> list[str]:
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ValueError("overrides: expected a list of strings like \"model=cnn\"")
    for o in overrides:
        if not OVERRIDE.match(o) or o.lstrip("+~").startswith("hydra"):
            raise ValueError(f"overrides: '{o[:60]}' is not a config override (key=value, no hydra.* keys or flags)")
        if o == "dataset.extra=samples":  # this server's collected samples (the retraining loop)
            continue
        if PATH_KEYS.search(o.lstrip("+~").split("=", 1)[0]):
            raise ValueError(f"overrides: {o.split('=', 1)[0]} names a file or directory; a job may not set it")
    return overrides


class Jobs:
    def __init__(self, state_dir: Path, predict: Callable[[Any], Any] | None = None):
        """`predict(inputs)` runs a predict job (the server's model); None in a worker without one."""
        from huey import SqliteHuey

        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        self.db_path = self.state / "jobs.db"
        self.predict = predict
        with sqlite(self.db_path) as db:
            db.execute("create table if not exists jobs (id text primary key, kind text not null, payload text not null,"
                       " status text not null, result text, error text, user text, created real not null,"
                       " started real, finished real)")
        self.huey = SqliteHuey(name="dlx", filename=str(self.state / "queue.db"), serializer=json_serializer(),
                               results=False, timeout=30)
        self.consumer = None

        @self.huey.task(name="dlx.job")
        def run(job_id: str) -> None:
            self.execute(job_id)

        self._task = run

    # ---------------------------------------------------------------- the API's side
    def submit(self, kind: str, payload: dict, user: str | None) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got '{kind}'")
        if kind == "train":
            check_train_overrides(payload.get("overrides"))
        job_id = uuid.uuid4().hex
        with sqlite(self.db_path) as db:
            db.execute("insert into jobs (id, kind, payload, status, user, created) values (?, ?, ?, 'queued', ?, ?)",
                       (job_id, kind, json.dumps(payload), user, time.time()))
        self._task(job_id)
        return job_id

    def get(self, job_id: str) -> dict | None:
        with sqlite(self.db_path) as db:
            row = db.execute("select id, kind, status, result, error, user, created, started, finished from jobs where id = ?",
                             (job_id,)).fetchone()
        if row is None:
            return None
        keys = ("id", "kind", "status", "result", "error", "user", "created", "started", "finished")
        job = dict(zip(keys, row))
        job["result"] = json.loads(job["result"]) if job["result"] else None
        return job

    # ---------------------------------------------------------------- the worker's side
    def execute(self, job_id: str) -> None:
        with sqlite(self.db_path) as db:
            row = db.execute("select kind, payload from jobs where id = ?", (job_id,)).fetchone()
            if row is None:
                log.warning("job %s: not in the jobs table; dropped", job_id)
                return
            db.execute("update jobs set status = 'running', started = ? where id = ?", (time.time(), job_id))
        kind, payload = row[0], json.loads(row[1])
        try:
            result = self._train(job_id, payload) if kind == "train" else self._predict(payload)
        except Exception as exc:  # recorded; the worker goes on with the next job
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:500]
            log.warning("job %s (%s) failed: %s", job_id, kind, message)
            with sqlite(self.db_path) as db:
                db.execute("update jobs set status = 'failed', error = ?, finished = ? where id = ?", (message, time.time(), job_id))
            return
        with sqlite(self.db_path) as db:
            db.execute("update jobs set status = 'finished', result = ?, finished = ? where id = ?",
                       (json.dumps(result), time.time(), job_id))
        log.info("job %s (%s) finished", job_id, kind)

    def _predict(self, payload: dict) -> Any:
        if self.predict is None:
            raise RuntimeError("this worker serves no model; run predict jobs in the server (serve.worker=thread)")
        return self.predict(payload.get("inputs"))

    def _train(self, job_id: str, payload: dict) -> dict:
        overrides = [f"dataset.extra={self.state.resolve()}" if o == "dataset.extra=samples" else o
                     for o in check_train_overrides(payload.get("overrides"))]
        run_dir = self.state / "jobs" / job_id
        exe = str(Path(sys.executable).with_name("dlx"))
        log_file = self.state / "jobs" / f"{job_id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "w") as out:
            proc = subprocess.run([exe, "train", *overrides, f"hydra.run.dir={run_dir}"], cwd=self.state,
                                  stdout=out, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in log_file.read_text().splitlines() if ln.startswith("dlx train: ")]
            raise RuntimeError(lines[-1] if lines else f"dlx train exited {proc.returncode}; see {log_file}")
        return {"run": str(run_dir), "metrics": json.loads((run_dir / "metrics.json").read_text())}

    def start_worker(self) -> None:
        """A worker thread in this process (huey's consumer, without its signal handlers)."""
        from huey.consumer import Consumer

        class InProcess(Consumer):
            def _set_signal_handlers(self):  # the server owns SIGINT/SIGTERM
                pass

        self.consumer = InProcess(self.huey, workers=1, periodic=False, check_worker_health=False, initial_delay=0.05,
                                  max_delay=0.5)
        self.consumer.start()

    def stop_worker(self) -> None:
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None
