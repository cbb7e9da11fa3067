"""`dlx serve`: signed requests, the predict/samples API through the ASGI client and a real uvicorn."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_cfg
from helpers import free_port


# --------------------------------------------------------------------------- signing (no model)
@pytest.fixture
def store(tmp_path):
    from dlx.serve.auth import KeyStore

    return KeyStore(tmp_path / "state")


def signed(key_id, secret, body=b'{"inputs": []}', path="/v1/predict", query="", now=None):
    from dlx.serve.auth import signed_headers

    return signed_headers(key_id, secret, "POST", path, query, body, now=now)


def test_keys_are_stored_only_as_keyed_hashes(store):
    key_id, secret = store.add("alice")
    assert key_id.startswith("dlx_") and len(secret) == 64
    raw = b"".join(p.read_bytes() for p in store.directory.glob("users.db*"))  # the database and its WAL
    assert secret.encode() not in raw and key_id.encode() in raw
    assert oct((store.directory / "server.key").stat().st_mode & 0o777) == "0o600"
    assert store.users() == [(key_id, "alice", False)]
    with pytest.raises(ValueError):
        store.add("bad name; drop table")


def test_signature_checks(store):
    from dlx.serve.auth import AuthError

    key_id, secret = store.add("alice")
    other_id, other_secret = store.add("bob")
    body = b'{"inputs": [[1, 2]]}'
    h = signed(key_id, secret, body, query="b=2&a=1")
    assert store.verify(h, "POST", "/v1/predict", "a=1&b=2", body).name == "alice"  # query order does not matter

    def refused(headers, body=body, path="/v1/predict", query="", now=None) -> str:
        with pytest.raises(AuthError) as err:
            store.verify(headers, "POST", path, query, body, now=now)
        return str(err.value)

    assert refused(signed(key_id, secret, body), body=body + b" ") == "bad signature or unknown key"  # tampered body
    assert refused(signed(key_id, secret, body), path="/v1/samples") == "bad signature or unknown key"  # other path
    assert refused(signed(key_id, other_secret, body)) == "bad signature or unknown key"  # wrong key
    assert refused(signed("dlx_0000000000000000", secret, body)) == "bad signature or unknown key"  # unknown id
    old = signed(key_id, secret, body, now=time.time() - 301)
    assert refused(old).startswith("X-Dlx-Timestamp is 30")
    h = signed(other_id, other_secret, body)
    assert store.verify(h, "POST", "/v1/predict", "", body).name == "bob"
    assert refused(h) == "X-Dlx-Nonce was used before (replayed request)"
    for header in ("X-Dlx-Key", "X-Dlx-Timestamp", "X-Dlx-Nonce", "X-Dlx-Signature"):
        partial = {k: v for k, v in signed(key_id, secret, body).items() if k != header}
        assert refused(partial) == f"unsigned request: missing header {header}"
    assert store.revoke(other_id)
    assert refused(signed(other_id, other_secret, body)) == "bad signature or unknown key"


# --------------------------------------------------------------------------- the app
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A small digits MLP, trained once for the module."""
    from dlx.commands.train import train

    run = tmp_path_factory.mktemp("serve") / "run"
    cfg = tiny_cfg("trainer.epochs=5")
    train(cfg, run)
    (run / ".hydra").mkdir(exist_ok=True)
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.create(cfg), run / ".hydra/config.yaml")
    return run


def digit_png(index: int = 0) -> tuple[bytes, int]:
    """A digits test image as an 8x8 PNG (0..16 scaled to 0..255) and its label."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    img = (d.images[-index - 1] * (255 / 16)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue(), int(d.target[-index - 1])


SETTINGS = {"auth": "hmac", "max_upload_bytes": 200_000, "max_batch": 8, "timeout_s": 10.0}


@pytest.fixture
def api(run_dir, tmp_path):
    from fastapi.testclient import TestClient

    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore

    state = tmp_path / "state"
    key_id, secret = KeyStore(state).add("tester")
    client = TestClient(create_app(str(run_dir), SETTINGS | {"state_dir": str(state)}))

    def call(path, body=b"", content_type="application/json", sign=True, method="POST"):
        headers = {"Content-Type": content_type}
        if sign:
            from dlx.serve.auth import signed_headers

            headers |= signed_headers(key_id, secret, method, path, "", body)
        return client.request(method, path, content=body, headers=headers)

    call.state = state
    return call


def test_predict_json_and_images_as_dlx_predict_does(api, run_dir, tmp_path):
    from dlx.commands.predict import predict

    r = api("/v1/models", method="GET")
    assert r.status_code == 200 and r.json()["models"][0]["classes"] == [str(i) for i in range(10)]
    png, label = digit_png(0)
    from dlx.serve.client import multipart

    body, kind = multipart([("file", "a.png", png), ("file", "b.png", digit_png(1)[0])], {})
    r = api("/v1/predict", body, kind)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and set(preds[0]) == {"class", "index", "probabilities"}
    (tmp_path / "a.png").write_bytes(png)
    cli = predict(str(run_dir), str(tmp_path / "a.png"), top_k=10)[0]  # what `dlx predict` says of the same file
    assert preds[0]["class"] == cli["class"]
    for name, p in cli["top"]:
        assert abs(preds[0]["probabilities"][name] - p) < 1e-5

    from sklearn.datasets import load_digits

    d = load_digits()
    raw = d.images[-40:]  # raw pixel values 0..16, as in the training data
    r = api("/v1/predict", json.dumps({"inputs": raw[:8].tolist()}).encode())
    assert r.status_code == 200, r.text
    flat = api("/v1/predict", json.dumps({"inputs": raw[:8].reshape(8, -1).tolist()}).encode()).json()
    assert [p["class"] for p in r.json()["predictions"]] == [p["class"] for p in flat["predictions"]]
    right = sum(int(p["class"]) == t for p, t in zip(r.json()["predictions"], d.target[-40:][:8]))
    assert right >= 6  # a 5-epoch MLP on digits


def test_api_errors_are_json_and_4xx(api):
    from dlx.serve.client import multipart

    cases = [
        (api("/v1/predict", b'{"inputs": [[1, 2, 3]]}'), 422, "inputs: each input must have shape [8, 8, 1] or 64 values"),
        (api("/v1/predict", b'{"nope": 1}'), 422, 'expected JSON {"inputs": [array, ...]}'),
        (api("/v1/predict", json.dumps({"inputs": [[0] * 64] * 9}).encode()), 413, "9 inputs in one request; the limit is 8"),
        (api("/v1/predict", b"x" * 200_001), 413, "request body of 200001 bytes is over the limit of 200000 bytes"),
        (api("/v1/predict", *multipart([("file", "x.png", b"GIF89a not really")], {})), 415, "file 1: not a readable image"),
        (api("/v1/predict", *multipart([("file", "x.png", b"%PDF-1.4")], {})), 415, "file 1: not an image"),
        (api("/v1/predict", b"{}", "text/plain"), 415, "send application/json"),
        (api("/v1/predict", b'{"inputs": []}', sign=False), 401, "unsigned request: missing header X-Dlx-Key"),
        (api("/v1/models", method="GET", sign=False), 401, "unsigned request"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (response.status_code, response.text)
        assert response.json()["error"].startswith(message), response.json()


def test_samples_are_stored_for_retraining(api):
    import sqlite3

    from dlx.serve.client import multipart

    png, label = digit_png(2)
    r = api("/v1/samples", *multipart([("file", "s.png", png)], {"label": str(label)}))
    assert r.status_code == 200, r.text
    sample = r.json()
    stored = api.state / "samples" / str(label) / f"{sample['id']}.png"
    assert stored.read_bytes() == png
    with sqlite3.connect(api.state / "samples.db") as db:
        assert db.execute("select label, user from samples").fetchall() == [(str(label), "tester")]
    bad = api("/v1/samples", *multipart([("file", "s.png", png)], {"label": "../../etc"}))
    assert bad.status_code == 422 and bad.json()["error"].startswith("label: expected one of 0, 1, 2")
    assert not (api.state / "etc").exists()


def add_user(state: Path, name: str) -> tuple[str, str]:
    """`dlx users add NAME`: (key id, secret) as it prints them."""
    exe = str(Path(sys.executable).with_name("dlx"))
    out = subprocess.run([exe, "users", "add", name, "--state-dir", str(state)], capture_output=True, text=True, check=True).stdout
    return out.split("key id:")[1].split()[0], out.split("secret:")[1].split()[0]


def start_server(run: Path, state: Path, *overrides: str, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """A real `dlx serve` (uvicorn) on a free loopback port, once /healthz answers."""
    import httpx

    exe = str(Path(sys.executable).with_name("dlx"))
    port = free_port()
    proc = subprocess.Popen([exe, "serve", f"run={run}", f"serve.port={port}", f"serve.state_dir={state}", *overrides],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("dlx serve did not start")
        time.sleep(0.2)


@pytest.mark.slow
def test_real_server_with_signed_client(run_dir, tmp_path):
    state = tmp_path / "state"
    key_id, secret = add_user(state, "carol")
    server, base = start_server(run_dir, state)
    try:
        import httpx

        from dlx.serve.client import Client, ServeError

        page = httpx.get(base).text
        assert "<canvas" in page and '"family": "mlp"' in page
        client = Client(base, key_id, secret)
        png, label = digit_png(3)
        pred = client.predict_images([png])[0]
        assert set(pred["probabilities"]) == {str(i) for i in range(10)}
        assert client.add_sample(png, str(label))["label"] == str(label)
        with pytest.raises(ServeError) as err:
            Client(base, key_id, "0" * 64).models()
        assert err.value.status == 401
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_auth_none_only_on_localhost(dlx, workdir, run_dir):
    proc = dlx("serve", f"run={run_dir}", "serve.auth=none", "serve.host=0.0.0.0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "dlx serve: error: serve.auth=none serves unsigned requests: only on 127.0.0.1, not serve.host=0.0.0.0")


# --------------------------------------------------------------------------- jobs
def wait_job(client, call, job_id, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        job = call(client, f"/v1/jobs/{job_id}").json()
        if job["status"] in ("finished", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def signed_call(key_id, secret):
    from dlx.serve.auth import signed_headers

    def call(client, path, payload=None):
        body = b"" if payload is None else json.dumps(payload).encode()
        method = "GET" if payload is None else "POST"
        headers = {"Content-Type": "application/json"} | signed_headers(key_id, secret, method, path, "", body)
        return client.request(method, path, content=body, headers=headers)

    return call


@pytest.mark.slow
def test_jobs_persist_across_a_restart_and_a_failing_job_leaves_the_worker_running(run_dir, tmp_path):
    from fastapi.testclient import TestClient

    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore

    state = tmp_path / "state"
    call = signed_call(*KeyStore(state).add("jobs"))
    from sklearn.datasets import load_digits

    raw = load_digits().images[-3:].tolist()
    # a server without a worker: the jobs wait in the queue
    with TestClient(create_app(str(run_dir), SETTINGS | {"state_dir": str(state), "worker": "none", "max_jobs_per_key": 5})) as client:
        queued = call(client, "/v1/jobs", {"kind": "predict", "inputs": raw})
        assert queued.status_code == 202, queued.text
        # accepted (every value in its range), fails in the worker: digits has fewer examples
        failing = call(client, "/v1/jobs", {"kind": "train", "overrides": ["dataset.val_size=999999", "logger=none"]}).json()["id"]
        from dlx.serve.auth import signed_headers
        from dlx.serve.client import multipart

        png, label = digit_png(9)
        body, kind = multipart([("file", "s.png", png)], {"label": str(label)})
        client.post("/v1/samples", content=body, headers={"Content-Type": kind} | signed_headers(
            *KeyStore(state).add("collector"), "POST", "/v1/samples", "", body)).raise_for_status()
        retrain = ["trainer.epochs=1", "logger=none", "dataset.extra=samples"]  # the retraining loop, as a job
        training = call(client, "/v1/jobs", {"kind": "train", "overrides": retrain}).json()["id"]
        time.sleep(0.5)
        assert call(client, f"/v1/jobs/{queued.json()['id']}").json()["status"] == "queued"
        for bad in (["hydra.run.dir=/etc"], ["-m"], "model=cnn", ["a=1\nb=2"], ["dataset.path=/etc"],
                    ["logger.mlflow.tracking_uri=sqlite:////tmp/x.db"], ["model.pretrain.from_run=/root"]):
            r = call(client, "/v1/jobs", {"kind": "train", "overrides": bad})
            assert r.status_code == 422 and r.json()["error"].startswith("overrides:"), (bad, r.text)
        assert call(client, "/v1/jobs/" + "0" * 32).status_code == 404
    # a new server on the same state directory, with its worker thread: the queued jobs run
    with TestClient(create_app(str(run_dir), SETTINGS | {"state_dir": str(state), "max_jobs_per_key": 5})) as client:
        done = wait_job(client, call, queued.json()["id"])
        assert done["status"] == "finished" and len(done["result"]) == 3 and done["user"] == "jobs"
        failed = wait_job(client, call, failing)
        assert failed["status"] == "failed"
        assert failed["error"].startswith("dlx train: error: dataset.val_size: expected 1..")
        trained = wait_job(client, call, training)  # queued after the failing one: the worker went on
        assert trained["status"] == "finished", trained
        assert Path(trained["result"]["run"], "model.keras").is_file() and trained["result"]["metrics"]["epochs_run"] == 1
        assert "1 collected samples added to the training split" in (state / "jobs" / f"{training}.log").read_text()


# --------------------------------------------------------------------------- retraining loop
def trained(where: Path, *overrides: str) -> Path:
    from omegaconf import OmegaConf

    from dlx.commands.train import train

    cfg = tiny_cfg(*overrides)
    (where / ".hydra").mkdir(parents=True, exist_ok=True)  # first, as Hydra does: MLflow gets it as an artifact
    OmegaConf.save(OmegaConf.create(cfg), where / ".hydra/config.yaml")
    train(cfg, where)
    return where


@pytest.mark.slow
def test_promotion_refuses_a_worse_model_and_the_server_follows_the_champion(dlx, run_dir, tmp_path):
    from fastapi.testclient import TestClient

    from dlx.commands.promote import promote
    from dlx.errors import DlxError
    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore

    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    tracked = ("logger=mlflow", f"logger.mlflow.tracking_uri={uri}")  # the registry registers tracked runs
    good = trained(tmp_path / "good", "trainer.epochs=5", *tracked)
    worse = trained(tmp_path / "worse", "trainer.epochs=1", "optimizer.lr=1e-5", *tracked)
    first = promote(str(good), tracking_uri=uri)
    assert first["version"] == "1"
    with pytest.raises(DlxError) as err:
        promote(str(worse), tracking_uri=uri)
    assert "not promoted: test accuracy" in str(err.value) and f"below the champion's {first['test_accuracy']:.4f}" in str(err.value)
    proc = dlx("promote", f"run={worse}", f"tracking_uri={uri}")  # the same through the CLI: one line, exit 2
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("dlx promote: error: run=")

    state = tmp_path / "state"
    call = signed_call(*KeyStore(state).add("ops"))
    settings = SETTINGS | {"state_dir": str(state), "tracking_uri": uri, "poll_s": 3600.0}
    with TestClient(create_app("models:/dlx@champion", settings)) as client:
        assert call(client, "/v1/models").json()["models"][0]["registry_version"] == "1"
        assert call(client, "/v1/reload", {}).json()["changed"] is False
        again = promote(str(good), tracking_uri=uri)  # as good as the champion: allowed
        assert again["version"] == "2"
        reloaded = call(client, "/v1/reload", {}).json()
        assert reloaded["changed"] is True and reloaded["registry_version"] == "2"
        assert call(client, "/v1/models").json()["models"][0]["registry_version"] == "2"


def test_dataset_extra_adds_the_collected_samples_to_training(api, run_dir):
    from dlx.config import ns
    from dlx.data import datasets
    from dlx.errors import DlxError
    from dlx.serve.client import multipart

    labels = []
    for i in (4, 5, 6):
        png, label = digit_png(i)
        assert api("/v1/samples", *multipart([("file", "s.png", png)], {"label": str(label)})).status_code == 200
        labels.append(label)
    base = datasets.load(ns(tiny_cfg()["dataset"]))
    more = datasets.load(ns(tiny_cfg(f"dataset.extra={api.state}")["dataset"]))
    assert len(more.train) == len(base.train) + 3 and len(more.val) == len(base.val) and len(more.test) == len(base.test)
    assert more.train.y[-3:].tolist() == labels
    # each image went through the preparation `dlx predict` gives the same file
    from dlx.commands.predict import prepare

    files = sorted((api.state / "samples").rglob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    batch, _ = prepare(files, more.spec, tiny_cfg()["dataset"])
    assert np.allclose(more.train.x[-3:], batch, atol=1e-6)
    with pytest.raises(DlxError) as err:
        datasets.load(ns(tiny_cfg("dataset.extra=/nowhere")["dataset"]))
    assert str(err.value).startswith("dataset.extra=/nowhere: no /nowhere/samples.db")


def test_a_prediction_over_the_time_limit_is_504(run_dir, tmp_path):
    from fastapi.testclient import TestClient

    from dlx.serve.app import create_app

    app = create_app(str(run_dir), SETTINGS | {"state_dir": str(tmp_path / "s"), "auth": "none", "timeout_s": 1e-9})
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:  # unsigned mode: its own address and page token
        r = client.post("/v1/predict", json={"inputs": [[0] * 64]}, headers={"X-Dlx-Csrf": app.state.csrf})
    assert r.status_code == 504 and r.json()["error"] == "prediction took longer than 1e-09 s"


@pytest.mark.slow
def test_dlx_worker_process_runs_queued_training_jobs(run_dir, tmp_path):
    from fastapi.testclient import TestClient

    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore

    state = tmp_path / "state"
    call = signed_call(*KeyStore(state).add("ops"))
    exe = str(Path(sys.executable).with_name("dlx"))
    with TestClient(create_app(str(run_dir), SETTINGS | {"state_dir": str(state), "worker": "none"})) as client:
        job = call(client, "/v1/jobs", {"kind": "train", "overrides": ["trainer.epochs=1", "logger=none"]}).json()["id"]
        worker = subprocess.Popen([exe, "worker", "--state-dir", str(state)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
        try:
            done = wait_job(client, call, job)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    assert done["status"] == "finished", done
    assert done["result"]["metrics"]["epochs_run"] == 1
