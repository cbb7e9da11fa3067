"""`dlx serve` against a hostile client: every request here is one an attacker (or a careless
client) could send with or without a valid key. Each asserts its status code; the server must stay
healthy, answer /healthz quickly while it works on large requests, and write nothing outside its
state directory."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from test_serve import SETTINGS, add_user, digit_png, free_port, run_dir, start_server  # noqa: F401 (fixture)

from dlx.serve.auth import signed_headers
from dlx.serve.client import multipart


def png_of(width: int, height: int, mode: str = "1") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def animated_gif() -> bytes:
    from PIL import Image

    frames = [Image.new("L", (8, 8), v) for v in (0, 255, 128)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def tree(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if skip not in p.parents and p != skip}


@pytest.fixture
def hostile(request, run_dir, tmp_path, monkeypatch):  # noqa: F811
    """A signed-mode app in-process, two users and an admin; `send` signs with a given key."""
    from fastapi.testclient import TestClient

    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore

    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state"
    store = KeyStore(state)
    keys = {"alice": store.add("alice"), "bob": store.add("bob"), "ops": store.add("ops", admin=True)}
    revoked = store.add("gone")
    store.revoke(revoked[0])
    keys["gone"] = revoked
    settings = SETTINGS | {"state_dir": str(state), "worker": "none", "max_jobs_per_key": 2, "predict_per_s": 1000.0,
                           "max_pixels": 1_000_000, "max_request_pixels": 2_000_000} | getattr(request, "param", {})
    before = tree(tmp_path, state)
    with TestClient(create_app(str(run_dir), settings)) as client:

        def send(path, body=b"", content_type="application/json", user="alice", method="POST", headers=None, sign=True):
            signed = signed_headers(*keys[user], method, path, "", body) if sign else {}
            return client.request(method, path, content=body, headers={"Content-Type": content_type} | signed | (headers or {}))

        send.client, send.keys, send.state = client, keys, state
        yield send
    assert tree(tmp_path, state) == before, "the server wrote outside its state directory"


def status(response) -> int:
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error"} and "\n" not in response.json()["error"]  # one line, JSON
    return response.status_code


def job(send, payload, user="alice"):
    return send("/v1/jobs", json.dumps(payload).encode(), user=user)


# --------------------------------------------------------------------------- signatures and headers
def test_forged_and_malformed_signatures_are_401(hostile):
    body = b'{"inputs": [[0]]}'
    good = signed_headers(*hostile.keys["alice"], "POST", "/v1/predict", "", body)
    client = hostile.client
    cases = [
        {},  # unsigned
        good | {"X-Dlx-Signature": "é".encode("latin-1") * 64},  # non-ASCII bytes on the wire
        good | {"X-Dlx-Signature": good["X-Dlx-Signature"][:-1]},  # 63 digits
        good | {"X-Dlx-Signature": good["X-Dlx-Signature"].upper()},  # not lowercase hex
        good | {"X-Dlx-Key": "dlx_' or 1=1 --"},
        good | {"X-Dlx-Key": "dlx_ffffffffffffffff"},  # no such key
        good | {"X-Dlx-Timestamp": "1e9"},
        good | {"X-Dlx-Timestamp": str(int(time.time()) + 3600)},
        good | {"X-Dlx-Timestamp": "-5"},
        good | {"X-Dlx-Nonce": "short"},
        good | {"X-Dlx-Nonce": "has spaces in it"},
        good | {"X-Dlx-Nonce": "x" * 500},
    ]
    for headers in cases:
        r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"} | headers)
        assert status(r) == 401, (headers, r.text)
    r = client.post("/v1/predict", content=b'{"inputs": [[1]]}', headers={"Content-Type": "application/json"} | good)
    assert status(r) == 401  # the body swapped after signing
    r = client.post("/v1/models", content=body, headers={"Content-Type": "application/json"} | good)
    assert status(r) in (401, 405)  # signed for another path
    assert status(hostile("/v1/predict", b'{"inputs": [[0]]}', user="gone")) == 401  # a revoked key
    replay = signed_headers(*hostile.keys["alice"], "GET", "/v1/models", "", b"")
    assert status(client.get("/v1/models", headers=replay)) == 200
    assert status(client.get("/v1/models", headers=replay)) == 401  # the same nonce again


# --------------------------------------------------------------------------- bodies
def test_malformed_deep_and_oversized_bodies_are_4xx(hostile):
    cases = [
        (b"[" * 2000 + b"]" * 2000, 422),  # nested far deeper than the parser's own limit
        (b'{"inputs": ' + b"[" * 40 + b"0" + b"]" * 40 + b"}", 422),  # deeper than any input needs
        (b'{"inputs": [[0, 1', 422),
        (b'{"inputs": {"a": 1}}', 422),
        (b'{"inputs": [[NaN]]}', 422),
        (b'{"inputs": [[1, 2, 3]]}', 422),  # the wrong shape
        (b'{"inputs": []}', 422),
        (b'"just a string"', 422),
        (b"\xff\xfe\x00garbage", 422),
        (json.dumps({"inputs": [[0] * 64] * 9}).encode(), 413),  # over max_batch
        (b'{"inputs": [' + b"0," * 150_000 + b"0]}", 413),  # over max_upload_bytes
    ]
    for body, expected in cases:
        assert status(hostile("/v1/predict", body)) == expected, body[:60]
    assert status(hostile("/v1/predict", b"inputs=1", content_type="text/plain")) == 415


def test_images_are_bounded_before_they_are_decoded(hostile):
    def upload(*files):
        body, kind = multipart([("file", f"f{i}", data) for i, data in enumerate(files)], {})
        return hostile("/v1/predict", body, content_type=kind)

    png, _ = digit_png(0)
    assert status(upload(png)) == 200
    assert status(upload(b"GIF89a not really")) == 415  # the magic number, then nothing readable
    assert status(upload(png[: len(png) // 2])) == 415  # truncated
    assert status(upload(b"%PDF-1.4 no image")) == 415
    t0 = time.perf_counter()
    big = upload(png_of(10_000, 10_000))  # a few KB on the wire, 10^8 pixels decoded
    assert status(big) == 413 and "the limit is 1,000,000 pixels" in big.json()["error"]
    assert time.perf_counter() - t0 < 2.0  # refused from the header, not after decoding
    assert status(upload(png_of(20_000, 20_000))) == 413  # past PIL's own bomb threshold
    assert status(upload(png_of(900, 900), png_of(900, 900), png_of(900, 900))) == 413  # over max_request_pixels
    answer = upload(animated_gif())
    assert status(answer) == 200 and len(answer.json()["predictions"]) == 1  # the first frame only


@pytest.mark.parametrize("hostile", [{"predict_per_s": 5.0}], indirect=True)
def test_predict_requests_per_key_are_limited(hostile):
    body = json.dumps({"inputs": [[0] * 64]}).encode()
    codes = [status(hostile("/v1/predict", body)) for _ in range(12)]
    assert codes.count(429) >= 5 and codes[0] == 200
    limited = hostile("/v1/predict", body)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert status(hostile("/v1/predict", body, user="bob")) == 200  # another key has its own budget


# --------------------------------------------------------------------------- samples
def test_sample_labels_never_become_paths(hostile):
    png, label = digit_png(1)
    for fields, expected in [({"label": "../../etc"}, 422), ({"label": "0/../../x"}, 422), ({"label": ""}, 422),
                             ({}, 422), ({"label": str(label)}, 200)]:
        body, kind = multipart([("file", "s.png", png)], fields)
        assert status(hostile("/v1/samples", body, content_type=kind)) == expected, fields
    body, kind = multipart([("file", "a.png", png), ("file", "b.png", png)], {"label": "1"})
    assert status(hostile("/v1/samples", body, content_type=kind)) == 422
    stored = [p.relative_to(hostile.state / "samples") for p in (hostile.state / "samples").rglob("*.png")]
    assert len(stored) == 1 and stored[0].parts[0] == str(label)  # by class index


# --------------------------------------------------------------------------- jobs
HOSTILE_OVERRIDES = [
    ["model=../../../etc/passwd"], ["hydra.callbacks.x._target_=pathlib.Path.touch"], ["+hydra.job.name=x"], ["~trainer"],
    ["logger.mlflow={tracking_uri:sqlite:////tmp/evil.db}"], ["dataset={name:digits,path:/etc}"], ["dataset.path=/etc"],
    ["trainer.epochs=${oc.env:HOME}"], ["trainer.epochs=100000000"], ["model.hidden=[1,2]"], ["dataset.extra=/root"],
    ["model.pretrain.from_run=/root"], ["resume=/tmp"], ["-m"], ["a=1\nb=2"], ["experiment=book_cnn_mnist"],
    ["optimizer.lr=nan"], ["trainer.epochs=1.5"], "model=cnn", [1, 2],
]


@pytest.mark.parametrize("overrides", HOSTILE_OVERRIDES, ids=[str(o)[:40] for o in HOSTILE_OVERRIDES])
def test_jobs_accept_only_what_the_schema_allows(hostile, overrides):
    r = job(hostile, {"kind": "train", "overrides": overrides})
    assert status(r) == 422 and r.json()["error"].startswith("overrides:")


def test_structured_jobs_and_their_mistakes(hostile):
    for payload in [{"kind": "train", "groups": {"model": "../x"}}, {"kind": "train", "values": {"trainer.epochs": {"a": 1}}},
                    {"kind": "train", "values": {"dataset.path": "/etc"}}, {"kind": "train", "oops": 1},
                    {"kind": "shell", "command": "id"}, {"kind": ["train"]}, {"no": "kind"}]:
        assert status(job(hostile, payload)) == 422, payload
    ok = job(hostile, {"kind": "train", "groups": {"model": "softmax"}, "values": {"trainer.epochs": 1}, "samples": False})
    assert status(ok) == 202


def test_jobs_are_limited_per_key_and_private_to_it(hostile):
    ids = [job(hostile, {"kind": "train", "overrides": ["trainer.epochs=1"]}) for _ in range(2)]
    assert [status(r) for r in ids] == [202, 202]
    third = job(hostile, {"kind": "train", "overrides": ["trainer.epochs=1"]})
    assert status(third) == 429 and "the limit is 2" in third.json()["error"] and third.headers["Retry-After"]
    assert status(job(hostile, {"kind": "train", "overrides": ["trainer.epochs=1"]}, user="bob")) == 202  # bob's own quota
    mine = ids[0].json()["id"]
    assert status(hostile(f"/v1/jobs/{mine}", method="GET")) == 200
    assert status(hostile(f"/v1/jobs/{mine}", method="GET", user="bob")) == 404  # as if it did not exist
    assert status(hostile(f"/v1/jobs/{mine}", method="GET", user="ops")) == 200  # an admin key sees all
    for path in ("/v1/jobs/..%2f..%2fetc%2fpasswd", "/v1/jobs/" + "0" * 32):
        assert status(hostile(path, method="GET")) == 404
    assert status(hostile("/v1/jobs/%00", method="GET")) in (401, 404)  # signed as sent, checked as decoded


def test_no_api_docs_or_schema_are_served(hostile):
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert hostile.client.get(path).status_code == 404


# --------------------------------------------------------------------------- unsigned local mode
def test_local_mode_refuses_other_hosts_and_cross_site_posts(run_dir, tmp_path):  # noqa: F811
    from fastapi.testclient import TestClient

    from dlx.serve.app import create_app

    app = create_app(str(run_dir), SETTINGS | {"state_dir": str(tmp_path / "s"), "auth": "none", "port": 8000})
    body = json.dumps({"kind": "train", "overrides": ["trainer.epochs=1"]}).encode()
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz", headers={"Host": "evil.example:8000"}).status_code == 421  # DNS rebinding
        assert client.post("/v1/jobs", content=body, headers={"Content-Type": "text/plain"}).status_code == 403  # a form post
        assert client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json", "X-Dlx-Csrf": "guess"}).status_code == 403
        evil = {"Content-Type": "application/json", "X-Dlx-Csrf": app.state.csrf, "Origin": "http://evil.example"}
        assert client.post("/v1/jobs", content=body, headers=evil).status_code == 403
        page = client.get("/").text
        assert json.dumps(app.state.csrf) in page  # the page carries the token its own requests send
        ok = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json", "X-Dlx-Csrf": app.state.csrf,
                                                             "Origin": "http://127.0.0.1:8000"})
        assert ok.status_code == 202


# --------------------------------------------------------------------------- a real server under attack
@pytest.mark.slow
def test_a_real_server_stays_responsive_while_it_refuses_and_decodes_large_images(run_dir, tmp_path):  # noqa: F811
    import httpx

    state = tmp_path / "state"
    key = add_user(state, "attacker")
    proc, base = start_server(run_dir, state)
    stop = threading.Event()
    codes: list[int] = []

    def attack():
        bomb, just_under = png_of(10_000, 10_000), png_of(1_900, 1_900, "L")
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                for data in (bomb, just_under):
                    body, kind = multipart([("file", "x.png", data)] * 3, {})
                    headers = {"Content-Type": kind} | signed_headers(*key, "POST", "/v1/predict", "", body)
                    codes.append(client.post(f"{base}/v1/predict", content=body, headers=headers).status_code)

    attackers = [threading.Thread(target=attack) for _ in range(2)]
    try:
        for t in attackers:
            t.start()
        time.sleep(1.0)
        latencies = []
        with httpx.Client(timeout=10) as client:
            for _ in range(40):
                t0 = time.perf_counter()
                assert client.get(f"{base}/healthz").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)
    finally:
        stop.set()
        for t in attackers:
            t.join(timeout=120)
        proc.terminate()
        proc.wait(timeout=30)
    assert codes and 500 not in codes and set(codes) <= {200, 413, 429}
    assert max(latencies) < 0.2, sorted(latencies)  # decoding and inference run off the event loop
    assert not [p for p in tmp_path.rglob("*") if state not in p.parents and p != state and p.name not in ("outputs",)
                and "outputs" not in p.parts], "written outside the state directory"


@pytest.mark.slow
def test_a_job_over_its_time_limit_fails_and_its_run_too(run_dir, tmp_path, monkeypatch):  # noqa: F811
    from fastapi.testclient import TestClient
    from mlflow.tracking import MlflowClient

    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the server's own environment must not reach its jobs
    state = tmp_path / "state"
    key = KeyStore(state).add("slow")
    settings = SETTINGS | {"state_dir": str(state), "job_timeout_s": 25.0, "max_jobs_per_key": 3}

    def post(client, payload):
        body = json.dumps(payload).encode()
        return client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"}
                           | signed_headers(*key, "POST", "/v1/jobs", "", body)).json()["id"]

    def wait(client, job_id):
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            got = client.get(f"/v1/jobs/{job_id}", headers=signed_headers(*key, "GET", f"/v1/jobs/{job_id}", "", b"")).json()
            if got["status"] in ("finished", "failed"):
                return got
            time.sleep(0.5)
        raise AssertionError("the job did not end")

    with TestClient(create_app(str(run_dir), settings)) as client:
        slow = post(client, {"kind": "train", "overrides": ["trainer.epochs=100000", "trainer.early_stopping.enabled=false",
                                                          "logger=mlflow"]})
        failing = post(client, {"kind": "train", "overrides": ["dataset.val_size=999999", "logger=none"]})
        timed_out, failed = wait(client, slow), wait(client, failing)
    assert timed_out["status"] == "failed" and timed_out["error"] == "timed out after 25 s (serve.job_timeout_s)"
    record = json.loads((state / "jobs" / slow / "run.json").read_text())["mlflow"]
    run = MlflowClient(record["tracking_uri"]).get_run(record["run_id"])
    assert run.info.status == "FAILED" and run.data.tags["dlx.error"] == "timed out after 25 s"
    assert failed["status"] == "failed" and failed["error"].startswith("dlx train: error: dataset.val_size:")
    assert "Traceback" not in failed["error"] and str(state) not in failed["error"] and os.sep + "tmp" not in failed["error"]
