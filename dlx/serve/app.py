"""The HTTP app of `dlx serve`: one trained model, loaded once, behind signed /v1/ endpoints.

    GET  /                 a page: upload or draw a digit, see the prediction, submit the right label
    GET  /healthz          liveness and the model being served (unsigned)
    GET  /v1/models        the model: run, family, classes, input shape
    POST /v1/predict       JSON {"inputs": [...]} (arrays shaped like one example, or flat) or
                           multipart image file(s) -> class and probabilities per input
    POST /v1/samples       multipart image + label: stored for retraining (files + SQLite)
    POST /v1/jobs          {"kind": "predict", "inputs": [...]} or {"kind": "train", "overrides": [...]} -> job id
    GET  /v1/jobs/{id}     status (queued, running, finished, failed), result or error (dlx/serve/jobs.py)

Images go through the same preparation as `dlx predict` (dlx.data.images.image_batch). Limits:
`serve.max_upload_bytes` (413), `serve.max_batch` inputs per request (413), image types checked by
their content (PNG, JPEG, GIF, BMP; else 415), `serve.timeout_s` per prediction (504). Errors are
JSON: {"error": "one line"}. Nothing a caller sends names a file on the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import math
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the endpoints' annotations here

from dlx.data.samples import Samples
from dlx.serve.auth import AuthError, KeyStore, User

log = logging.getLogger("dlx.serve")

# magic numbers of the image formats accepted for upload
IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif", b"BM": "bmp"}
PAGE = Path(__file__).with_name("page.html")


class ApiError(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class RateLimiter:
    """A token bucket per key: `rate` requests per second, bursts of as many."""

    def __init__(self, rate: float):
        self.rate, self.buckets, self.lock = rate, {}, threading.Lock()

    def wait(self, key: str) -> float:
        """0 when a request may go now (and takes its token), else the seconds until it may."""
        now = time.monotonic()
        with self.lock:
            tokens, then = self.buckets.get(key, (self.rate, now))
            tokens = min(self.rate, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self.buckets[key] = (tokens - 1, now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


MAX_JSON_DEPTH = 32  # arrays of arrays of an image's rows need 4; nothing sent here needs more


def parse_json(body: bytes) -> Any:
    """A request's JSON, or 422: malformed, not UTF-8, or nested deeper than MAX_JSON_DEPTH (the
    parser's own recursion limit stops a far deeper document before it is built)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(422, "the body is not valid JSON (or is nested too deeply)") from None
    level, containers = 0, [value] if isinstance(value, (list, dict)) else []
    while containers:  # breadth first, one level at a time
        level += 1
        if level > MAX_JSON_DEPTH:
            raise ApiError(422, f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        containers = [v for c in containers for v in (c.values() if isinstance(c, dict) else c) if isinstance(v, (list, dict))]
    return value


def image_type(data: bytes) -> str | None:
    return next((kind for magic, kind in IMAGE_TYPES.items() if data.startswith(magic)), None)


class Served:
    """The loaded model and everything needed to prepare its inputs like `dlx predict` does."""

    def __init__(self, run: str):
        from dlx.rundir import load_model, open_run
        from dlx.data.datasets import DataSpec
        from dlx.training import device

        self.path, self.cfg = open_run(run)
        self.spec = DataSpec.load(self.path / "data_spec.json")
        if self.spec.kind != "image" and self.spec.kind != "tabular":
            from dlx.errors import DlxError

            raise DlxError(f"run={run}: dlx serve serves image and tabular classifiers; this run's data is {self.spec.kind}")
        device.configure(self.cfg["trainer"]["device"])
        self.model = load_model(self.path, self.cfg, self.spec)
        self.version = hashlib.sha256((self.path / "model.keras").read_bytes()).hexdigest()[:12]
        self.lock = threading.Lock()  # one predict call at a time into the model
        self.predict(np.zeros((1, *self.spec.input_shape), np.float32))  # trace once before the first request

    def describe(self) -> dict[str, Any]:
        return {"run": str(self.path), "family": self.cfg["model"]["name"], "dataset": self.cfg["dataset"]["name"],
                "version": self.version, "classes": list(self.spec.class_names or []),
                "input_shape": list(self.spec.input_shape), "kind": self.spec.kind}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            return np.asarray(self.model.predict_on_batch(batch))

    def prepare_images(self, images: list[bytes], max_pixels: int, max_request_pixels: int) -> np.ndarray:
        """Uploaded files -> a model batch. Every header is read before anything is decoded: one
        image over `max_pixels`, or all of them over `max_request_pixels`, is refused (413)."""
        from dlx.data.images import TooLarge, image_batch, image_pixels, read_grey
        from dlx.errors import DlxError

        if self.spec.kind != "image":
            raise ApiError(415, f"this model takes {self.spec.input_shape[0]} feature values per input (JSON), not images")
        total = 0
        for i, data in enumerate(images):
            if image_type(data) is None:
                raise ApiError(415, f"file {i + 1}: not an image (accepted: PNG, JPEG, GIF, BMP)")
            try:
                pixels = image_pixels(io.BytesIO(data))
            except TooLarge as exc:
                raise ApiError(413, f"file {i + 1}: {exc}; the limit is {max_pixels:,} pixels per image") from None
            except DlxError:
                raise ApiError(415, f"file {i + 1}: not a readable image") from None
            if pixels > max_pixels:
                raise ApiError(413, f"file {i + 1}: {pixels:,} pixels; the limit is {max_pixels:,} pixels per image")
            total += pixels
        if total > max_request_pixels:
            raise ApiError(413, f"{total:,} pixels in this request; the limit is {max_request_pixels:,}")
        if self.spec.layout == "photo":  # decoded and resized as the training images were
            from dlx.data.decode import decode_bytes
            from dlx.data.types import scale

            photos = []
            for i, data in enumerate(images):
                try:
                    photos.append(decode_bytes(data, self.spec.input_shape[:2], self.spec.input_shape[2]))
                except DlxError:
                    raise ApiError(415, f"file {i + 1}: not a readable image") from None
            return scale(np.stack(photos), self.spec).astype(np.float32)
        greys = []
        for i, data in enumerate(images):
            try:
                greys.append(read_grey(io.BytesIO(data), max_pixels))
            except TooLarge as exc:
                raise ApiError(413, f"file {i + 1}: {exc}") from None
            except DlxError:
                raise ApiError(415, f"file {i + 1}: not a readable image") from None
        return image_batch(greys, self.spec).astype(np.float32)

    def prepare_rows(self, inputs: Any) -> np.ndarray:
        """A CSV table's run: rows as JSON objects {column: value}, prepared as in training."""
        import pandas as pd

        from dlx.data import table
        from dlx.errors import DlxError

        names = {c["name"] for c in self.spec.columns}
        for i, row in enumerate(inputs if isinstance(inputs, list) else [None]):
            if not isinstance(row, dict):
                raise ApiError(422, f"inputs[{i}]: expected an object {{column: value}} with the columns {sorted(names)}")
            for key, value in row.items():
                if key in names and value is not None and not isinstance(value, (str, int, float, bool)):
                    raise ApiError(422, f"inputs[{i}].{key}: expected a number or a string")
        try:
            frame = pd.DataFrame([{k: v for k, v in row.items() if k in names} for row in inputs], columns=sorted(names))
            return table.transform(frame, self.spec.columns, "inputs", first=0)
        except DlxError as exc:
            raise ApiError(422, str(exc)) from None

    def prepare_arrays(self, inputs: Any) -> np.ndarray:
        from dlx.data.types import scale

        if self.spec.columns:
            return self.prepare_rows(inputs)
        shape = tuple(self.spec.input_shape)
        size = int(np.prod(shape))
        try:
            arr = np.asarray(inputs, dtype=np.float32)
        except (ValueError, TypeError):
            raise ApiError(422, "inputs: expected a list of numeric arrays") from None
        if arr.ndim == 0 or not np.isfinite(arr).all():
            raise ApiError(422, "inputs: expected a list of arrays of finite numbers")
        accepted = {shape, (size,)} | ({shape[:-1]} if shape[-1] == 1 else set())  # (8, 8, 1), (8, 8) or 64 values
        if arr.shape[1:] not in accepted:
            raise ApiError(422, f"inputs: each input must have shape {list(shape)} or {size} values; got {list(arr.shape[1:])}")
        # raw values, as in the training files (pixels 0..255, feature values): scaled like the training data
        return scale(arr, self.spec).reshape((-1, *shape)).astype(np.float32)

    def answer(self, probs: np.ndarray) -> list[dict[str, Any]]:
        names = list(self.spec.class_names or [])
        out = []
        for row in probs:
            i = int(np.argmax(row))
            out.append({"class": names[i] if names else i, "index": i,
                        "probabilities": {(names[j] if names else str(j)): round(float(p), 6) for j, p in enumerate(row)}})
        return out


class Current:
    """The model being served. With a models:/NAME@ALIAS source, `refresh()` loads the version the
    alias points at when it changed (polled every serve.poll_s, or on POST /v1/reload); requests
    in flight keep the model they started with."""

    def __init__(self, source: str, tracking_uri: str | None):
        self.source, self.tracking_uri = source, tracking_uri
        self.lock = threading.Lock()
        run, self.version = self._resolve()
        self.served = Served(run)

    def _resolve(self) -> tuple[str, str | None]:
        """(run directory, registry version): where the source points now."""
        if not self.source.startswith("models:/"):
            return self.source, None
        from dlx.serve import registry

        return registry.resolve(self.source, self.tracking_uri)

    def refresh(self) -> bool:
        """Load a newly promoted version; True when the served model changed."""
        if not self.source.startswith("models:/"):
            return False
        with self.lock:
            run, version = self._resolve()
            if version == self.version:
                return False
            old, self.served, self.version = self.version, Served(run), version
            log.info("%s: version %s -> %s (%s)", self.source, old, self.version, self.served.path)
            return True


def create_app(source: str, settings: dict[str, Any]):
    """The FastAPI app serving `source`: a run directory or models:/NAME@ALIAS. settings: auth
    (hmac | none), state_dir, max_upload_bytes, max_batch, timeout_s, worker, poll_s, tracking_uri."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    current = Current(source, settings.get("tracking_uri"))
    state = Path(settings["state_dir"])
    keys = KeyStore(state) if settings["auth"] == "hmac" else None
    samples = Samples(state)
    from contextlib import asynccontextmanager

    from dlx.serve.jobs import Jobs, QuotaError

    def predict_job(inputs):
        served = current.served
        return served.answer(served.predict(served.prepare_arrays(inputs)))

    jobs = Jobs(state, predict_job, max_per_key=int(settings.get("max_jobs_per_key", 2)),
                timeout_s=float(settings.get("job_timeout_s", 3600.0)), threads=settings.get("job_threads"))
    limiter = RateLimiter(float(settings.get("predict_per_s", 50.0)))
    local = settings["auth"] == "none"
    csrf = secrets.token_urlsafe(24)  # unsigned local mode: what only this server's page knows
    port = int(settings.get("port", 8000))
    names = ("127.0.0.1", "localhost", "[::1]")  # what a browser on this machine sends as Host
    hosts = {f"{h}:{port}" for h in names} | (set(names) if port == 80 else set())

    async def follow_registry():
        while True:
            await asyncio.sleep(float(settings.get("poll_s", 30.0)))
            try:
                await asyncio.to_thread(current.refresh)
            except Exception as exc:  # the registry unreachable for a while: keep serving what we have
                log.warning("could not check %s: %s", source, exc)

    @asynccontextmanager
    async def lifespan(app):
        if settings.get("worker", "thread") == "thread":
            jobs.start_worker()
        poller = asyncio.create_task(follow_registry()) if source.startswith("models:/") else None
        yield
        if poller is not None:
            poller.cancel()
        jobs.stop_worker()

    # no /docs or /openapi.json: the API is described in this module and the README, and a page that
    # loads third-party scripts has no place on a server holding keys
    app = FastAPI(title="dlx serve", version=current.served.version, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.current = current
    app.state.jobs = jobs
    app.state.csrf = csrf

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown paths and methods: the same JSON
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    if local:
        @app.middleware("http")
        async def local_only(request: Request, call_next):
            """Unsigned local mode: requests for this address only (no DNS rebinding), and state
            changes only from this server's page (no cross-site posts)."""
            if request.headers.get("host", "") not in hosts:
                return JSONResponse({"error": f"Host must be this server's address ({sorted(hosts)[0]})"}, status_code=421)
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                origin = request.headers.get("origin")
                if origin is not None and origin.removeprefix("http://") not in hosts:
                    return JSONResponse({"error": "cross-site request refused"}, status_code=403)
                if not secrets.compare_digest(request.headers.get("x-dlx-csrf", "").encode(), csrf.encode()):
                    return JSONResponse({"error": "X-Dlx-Csrf: missing or wrong (send requests from this server's page, "
                                                  "or read the token from it)"}, status_code=403)
            return await call_next(request)

    pixel_limits = (int(settings.get("max_pixels", 4_000_000)), int(settings.get("max_request_pixels", 16_000_000)))

    async def read_body(request: Request) -> bytes:
        limit = int(settings["max_upload_bytes"])
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body is over the limit of {limit} bytes")
        request._body = bytes(body)  # what form parsing reads next
        return request._body

    async def caller(request: Request, body: bytes) -> User | None:
        if keys is None:
            return None
        try:
            user = keys.verify(request.headers, request.method, request.url.path, request.url.query, body)
        except AuthError as exc:
            log.warning("refused %s %s from %s: %s", request.method, request.url.path,
                        request.client.host if request.client else "?", exc)
            raise ApiError(401, str(exc)) from None
        log.info("%s %s by %s (%s)", request.method, request.url.path, user.name, user.key_id)
        return user

    async def files_of(request: Request) -> tuple[list[bytes], dict[str, str]]:
        form = await request.form(max_files=int(settings["max_batch"]) + 1)
        files, fields = [], {}
        for name, value in form.multi_items():
            if hasattr(value, "read"):
                files.append(await value.read())
            else:
                fields[name] = str(value)
        return files, fields

    async def run_model(served: Served, batch: np.ndarray) -> np.ndarray:
        try:
            return await asyncio.wait_for(asyncio.to_thread(served.predict, batch), timeout=float(settings["timeout_s"]))
        except asyncio.TimeoutError:
            raise ApiError(504, f"prediction took longer than {settings['timeout_s']} s") from None

    @app.get("/", response_class=HTMLResponse)
    async def page():
        served = current.served
        def js(value) -> str:  # JSON inside <script>: no "</script>" can end it early
            return json.dumps(value).replace("</", "<\\/")

        page = PAGE.read_text().replace("{{MODEL}}", js(served.describe())).replace("{{AUTH}}", js(settings["auth"]))
        return page.replace("{{CSRF}}", js(csrf if local else ""))

    @app.get("/healthz")
    async def healthz():
        served = current.served
        return {"status": "ok", "model": served.describe()["family"], "version": served.version, "samples": samples.count()}

    @app.get("/v1/models")
    async def models(request: Request):
        await caller(request, await read_body(request))
        served = current.served
        return {"models": [served.describe() | {"source": source, "registry_version": current.version}]}

    @app.post("/v1/reload")
    async def reload(request: Request):
        await caller(request, await read_body(request))
        try:
            changed = await asyncio.to_thread(current.refresh)
        except Exception as exc:
            raise ApiError(503, f"could not check {source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        return {"changed": changed, "version": current.served.version, "registry_version": current.version}

    @app.post("/v1/predict")
    async def predict(request: Request):
        body = await read_body(request)
        user = await caller(request, body)
        wait = limiter.wait(user.key_id if user else "local")
        if wait:
            raise ApiError(429, f"more than {settings.get('predict_per_s', 50.0):g} predict requests per second for this key",
                           retry_after=math.ceil(wait))
        served = current.served
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            files, _ = await files_of(request)
            if not files:
                raise ApiError(422, "no image file in the form (field 'file')")
            count = len(files)
        elif kind.startswith("application/json"):
            document = parse_json(body)
            inputs = document.get("inputs") if isinstance(document, dict) else None
            if inputs is None:
                raise ApiError(422, 'expected JSON {"inputs": [array, ...]}')
            count = len(inputs) if isinstance(inputs, list) else 0
            if count == 0:
                raise ApiError(422, "inputs: expected a non-empty list of arrays")
        else:
            raise ApiError(415, "send application/json {\"inputs\": [...]} or multipart/form-data image files")
        if count > int(settings["max_batch"]):
            raise ApiError(413, f"{count} inputs in one request; the limit is {settings['max_batch']}")
        if kind.startswith("multipart/"):  # decoding is work: off the event loop, as the model is
            batch = await asyncio.to_thread(served.prepare_images, files, *pixel_limits)
        else:
            batch = served.prepare_arrays(inputs)
        probs = await run_model(served, batch)
        return {"model": {"version": served.version, "family": served.describe()["family"]}, "predictions": served.answer(probs)}

    @app.post("/v1/samples")
    async def add_sample(request: Request):
        body = await read_body(request)
        user = await caller(request, body)
        served = current.served
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "send multipart/form-data with an image file and a 'label' field")
        files, fields = await files_of(request)
        if len(files) != 1:
            raise ApiError(422, f"expected one image file, got {len(files)}")
        names = [str(c) for c in served.spec.class_names or []]
        label = fields.get("label", "")
        if label not in names:
            raise ApiError(422, f"label: expected one of {', '.join(names)}; got '{label[:40]}'")
        kind = image_type(files[0])
        if kind is None:
            raise ApiError(415, "not an image (accepted: PNG, JPEG, GIF, BMP)")
        await asyncio.to_thread(served.prepare_images, files, *pixel_limits)  # refuse what the model could not read
        return samples.add(files[0], kind, label, names, user.name if user else None)

    @app.post("/v1/jobs", status_code=202)
    async def submit_job(request: Request):
        body = await read_body(request)
        user = await caller(request, body)
        served = current.served
        spec = parse_json(body)
        if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
            raise ApiError(422, 'expected JSON {"kind": "predict" | "train", ...}')
        kind = spec.pop("kind")
        if kind == "predict":
            inputs = spec.get("inputs")
            if not isinstance(inputs, list) or not inputs or len(inputs) > int(settings["max_batch"]):
                raise ApiError(422, f"inputs: expected 1 to {settings['max_batch']} arrays")
            served.prepare_arrays(inputs)  # refuse a malformed batch now, not in the worker
        try:
            job_id = jobs.submit(kind, spec, user.name if user else None, user.key_id if user else None)
        except QuotaError as exc:
            raise ApiError(429, str(exc), retry_after=30) from None
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return {"id": job_id, "status": "queued"}

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str, request: Request):
        user = await caller(request, await read_body(request))
        job = None
        if job_id.isalnum() and len(job_id) == 32:  # another key's job is as unknown as one that does not exist
            job = jobs.get(job_id, user.key_id if user else None, admin=user is None or user.admin)
        if job is None:
            raise ApiError(404, f"no job {job_id[:40]}")
        return job

    return app
