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
import functools
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from dlx.storage import sqlite

log = logging.getLogger("dlx.serve.jobs")

JOB_GROUPS = ("dataset", "model", "optimizer", "regularization", "logger")  # the config groups a job may pick from
KINDS = ("predict", "train")
KEY = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")
VALUE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")  # a scalar: no ${...}, quotes, brackets, separators or spaces


class QuotaError(ValueError):
    """A key already has as many jobs queued or running as it may."""


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


@functools.lru_cache(maxsize=None)
def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML files dlx ships in conf/<group>/."""
    from dlx.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@functools.lru_cache(maxsize=1)
def settable_keys() -> dict[str, tuple[str, Any]]:
    """The scalar keys a job may set, from the schemas: numbers with a declared range, booleans,
    and choices (enums). key -> ("number", Range) | ("int", Range) | ("bool", None) | ("choice", names)."""
    import dataclasses
    import enum
    import typing

    from dlx import config, family

    roots = [(config.SCHEMAS[g], f"{g}.") for g in ("dataset", "optimizer", "regularization", "trainer", "logger")]
    roots += [(fam, "model.") for fam in family.builtin().values()]
    keys: dict[str, tuple[str, Any]] = {}
    while roots:
        schema, prefix = roots.pop()
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            kinds = [hints[f.name], *typing.get_args(hints[f.name])]
            key = f"{prefix}{f.name}"
            nested = next((k for k in kinds if dataclasses.is_dataclass(k)), None)
            if nested is not None:
                roots.append((nested, f"{key}."))
            elif typing.get_origin(hints[f.name]) in (list, dict):
                continue  # lists and maps are not scalars
            elif bool in kinds:
                keys[key] = ("bool", None)
            elif f.metadata.get("range") is not None:
                keys[key] = ("int" if int in kinds else "number", f.metadata["range"])
            elif any(isinstance(k, type) and issubclass(k, enum.Enum) for k in kinds):
                choice = next(k for k in kinds if isinstance(k, type) and issubclass(k, enum.Enum))
                keys[key] = ("choice", [m.name for m in choice])
    return keys


def check_train_overrides(overrides: Any, field: str = "overrides") -> list[str]:
    """The overrides of a train job, each checked against what the schema allows; ValueError
    naming the offending key otherwise. Config groups take one of their listed options; other
    keys only scalars, in their declared range; nothing else (no hydra.*, +/~, ${...}, paths)."""
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides) or len(overrides) > 64:
        raise ValueError(f"{field}: expected a list of up to 64 strings like \"model=cnn\"")
    keys = settable_keys()
    for o in overrides:
        key, eq, value = o.partition("=")
        shown = key[:60]
        if not eq or not KEY.match(key):
            raise ValueError(f"{field}: '{o[:60]}' is not key=value with a config key (no +, ~, flags or hydra.*)")
        if key.startswith("hydra") or key.split(".")[0] not in (*JOB_GROUPS, "trainer"):
            raise ValueError(f"{field}: {shown}: a job may set {', '.join(JOB_GROUPS)} and trainer keys only")
        if key in JOB_GROUPS:
            if value not in group_options(key):
                raise ValueError(f"{field}: {shown}: expected one of {', '.join(group_options(key))}; got '{value[:40]}'")
            continue
        if o == "dataset.extra=samples":  # this server's collected samples (the retraining loop)
            continue
        if key not in keys:
            raise ValueError(f"{field}: {shown}: not a key a job may set (scalars with a declared range, booleans and choices only)")
        if not VALUE.match(value):
            raise ValueError(f"{field}: {shown}: expected a plain number, true/false or a name; got '{value[:40]}'")
        kind, allowed = keys[key]
        if kind == "bool" and value.lower() not in ("true", "false"):
            raise ValueError(f"{field}: {shown}: expected true or false; got '{value[:40]}'")
        if kind == "choice" and value not in allowed:
            raise ValueError(f"{field}: {shown}: expected one of {', '.join(allowed)}; got '{value[:40]}'")
        if kind in ("int", "number"):
            try:
                number = int(value) if kind == "int" else float(value)
            except ValueError:
                raise ValueError(f"{field}: {shown}: expected {'an integer' if kind == 'int' else 'a number'}; got '{value[:40]}'") from None
            if number != number or number not in allowed:
                raise ValueError(f"{field}: {shown}: {value} is outside the allowed range {allowed}")
    return overrides


def train_overrides(payload: dict) -> list[str]:
    """A train job's request -> checked overrides. Either {"overrides": ["model=cnn", ...]} or
    {"groups": {"model": "cnn"}, "values": {"trainer.epochs": 5}, "samples": true}."""
    if "overrides" in payload:
        extra = set(payload) - {"overrides"}
        if extra:
            raise ValueError(f"{sorted(extra)[0][:40]}: not a field of a train job (overrides, or groups/values/samples)")
        return check_train_overrides(payload["overrides"])
    extra = set(payload) - {"groups", "values", "samples"}
    if extra:
        raise ValueError(f"{sorted(extra)[0][:40]}: not a field of a train job (groups, values, samples)")
    groups, values = payload.get("groups") or {}, payload.get("values") or {}
    if not isinstance(groups, dict) or not isinstance(values, dict):
        raise ValueError("groups / values: expected JSON objects")
    out = []
    for key, value in [*groups.items(), *values.items()]:
        if not isinstance(value, (str, int, float, bool)) or value is None:
            raise ValueError(f"{str(key)[:60]}: expected a scalar value")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out.append(f"{key}={text}")
    if payload.get("samples") is True:
        out.append("dataset.extra=samples")
    return check_train_overrides(out, "groups/values")


class Jobs:
    def __init__(self, state_dir: Path, predict: Callable[[Any], Any] | None = None, *, max_per_key: int = 2,
                 timeout_s: float = 3600.0, threads: int | None = None):
        """`predict(inputs)` runs a predict job (the server's model); None in a worker without one.
        `max_per_key`: jobs a key may have queued or running; `timeout_s`: a training job's wall-clock limit."""
        from huey import SqliteHuey

        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        self.db_path = self.state / "jobs.db"
        self.predict = predict
        self.max_per_key, self.timeout_s = max_per_key, timeout_s
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        with sqlite(self.db_path) as db:
            db.execute("create table if not exists jobs (id text primary key, kind text not null, payload text not null,"
                       " status text not null, result text, error text, user text, created real not null,"
                       " started real, finished real)")
            if "key_id" not in [row[1] for row in db.execute("pragma table_info(jobs)")]:  # a state dir of an older dlx
                db.execute("alter table jobs add column key_id text")
        self.huey = SqliteHuey(name="dlx", filename=str(self.state / "queue.db"), serializer=json_serializer(),
                               results=False, timeout=30)
        self.consumer = None

        @self.huey.task(name="dlx.job")
        def run(job_id: str) -> None:
            self.execute(job_id)

        self._task = run

    # ---------------------------------------------------------------- the API's side
    def submit(self, kind: str, payload: dict, user: str | None, key_id: str | None = None) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got '{str(kind)[:40]}'")
        if kind == "train":
            payload = {"overrides": train_overrides(payload)}
        job_id = uuid.uuid4().hex
        with sqlite(self.db_path) as db:
            db.execute("begin immediate")  # counting and adding as one step: two requests cannot both squeeze in
            waiting = db.execute("select count(*) from jobs where key_id is ? and status in ('queued', 'running')",
                                 (key_id,)).fetchone()[0]
            if waiting >= self.max_per_key:
                db.execute("rollback")
                raise QuotaError(f"this key has {waiting} jobs queued or running; the limit is {self.max_per_key}")
            db.execute("insert into jobs (id, kind, payload, status, user, key_id, created) values (?, ?, ?, 'queued', ?, ?, ?)",
                       (job_id, kind, json.dumps(payload), user, key_id, time.time()))
            db.execute("commit")
        self._task(job_id)
        return job_id

    def get(self, job_id: str, key_id: str | None = None, admin: bool = True) -> dict | None:
        """The job, if `key_id` made it (or `admin`); None otherwise, as for a job that does not exist."""
        with sqlite(self.db_path) as db:
            row = db.execute("select id, kind, status, result, error, user, created, started, finished, key_id from jobs "
                             "where id = ?", (job_id,)).fetchone()
        if row is None or (not admin and row[-1] != key_id):
            return None
        row = row[:-1]
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
            message = message.replace(str(self.state.resolve()), "<state>").replace(str(self.state), "<state>")
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
                     for o in check_train_overrides(payload.get("overrides"))]  # checked again: the queue is a file
        if not any(o.startswith("trainer.threads=") for o in overrides):  # the server keeps cores for its requests
            overrides.append(f"trainer.threads={self.threads}")
        run_dir = self.state / "jobs" / job_id
        exe = str(Path(sys.executable).with_name("dlx"))
        log_file = self.state / "jobs" / f"{job_id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # the server's environment, less what changes how dlx reports errors (HYDRA_FULL_ERROR: tracebacks)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
        with open(log_file, "w") as out:
            proc = subprocess.Popen([exe, "train", *overrides, f"hydra.run.dir={run_dir}"], cwd=self.state, env=env,
                                    stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            try:
                proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _stop(proc)
                _fail_mlflow_run(run_dir, f"timed out after {self.timeout_s:g} s")
                raise RuntimeError(f"timed out after {self.timeout_s:g} s (serve.job_timeout_s)") from None
        if proc.returncode != 0:
            lines = [ln for ln in log_file.read_text().splitlines() if ln.startswith("dlx train: ")]
            raise RuntimeError(lines[-1] if lines else f"dlx train exited {proc.returncode}")
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


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the job's process group (dlx train saves its epoch and ends its MLflow run),
    then SIGKILL if it has not gone within 30 s."""
    import signal

    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _fail_mlflow_run(run_dir: Path, reason: str) -> None:
    """Mark a stopped job's MLflow run FAILED, with the reason as a tag (run.json names it)."""
    record_file = run_dir / "run.json"
    if not record_file.is_file():
        return
    record = json.loads(record_file.read_text()).get("mlflow") or {}
    if not record.get("run_id"):
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(record["tracking_uri"])
        client.set_tag(record["run_id"], "dlx.error", reason)
        client.set_terminated(record["run_id"], "FAILED")
    except Exception as exc:  # the job's failure is recorded either way
        log.warning("could not mark MLflow run %s FAILED: %s", record["run_id"], exc)
