"""Runs and models that leave dlx: the pyfunc model with its signature (loaded by MLflow, served by
`mlflow models serve`), the registry through a real `mlflow server` with the training directory
gone, provenance, and a new SQLite store that several first runs open at once."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[:3]} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_id_of(run: Path) -> str:
    return json.loads((run / "run.json").read_text())["mlflow"]["run_id"]


def train_run(dlx, name: str, *overrides: str) -> Path:
    dlx("train", "trainer.epochs=3", "trainer.device=cpu", f"hydra.run.dir={name}", *overrides, check=True)
    return Path(name).resolve()


# --------------------------------------------------------------------------- the MLflow model
@pytest.mark.slow
def test_the_pyfunc_model_predicts_what_dlx_predict_says(dlx, workdir):
    import mlflow
    import pandas as pd

    run = train_run(dlx, "cancer", "dataset=breast_cancer", "model=softmax")
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id_of(run)}/model")
    spec = json.loads((run / "data_spec.json").read_text())
    names = spec["feature_names"]
    assert [c.name for c in model.metadata.get_input_schema().inputs] == names  # the signature, from the data spec

    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer().data[:12]
    (workdir / "rows.csv").write_text(",".join(names) + "\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in raw) + "\n")
    cli = dlx("predict", f"run={run}", "inputs=rows.csv", check=True).stdout.splitlines()
    said = [(line.split()[1], float(line.split()[2])) for line in cli]
    out = model.predict(pd.DataFrame(raw, columns=names))
    assert list(out["class"]) == [c for c, _ in said]
    np.testing.assert_allclose(out["score"], [s for _, s in said], atol=6e-4)  # dlx predict prints 3 decimals
    shuffled = pd.DataFrame(raw, columns=names)[names[::-1]]  # columns by name, in any order
    assert list(model.predict(shuffled)["class"]) == list(out["class"])


@pytest.mark.slow
def test_an_image_run_takes_raw_pixels_and_mlflow_models_serve_answers(dlx, workdir):
    import mlflow

    from dlx.config import ns
    from dlx.data.datasets import load
    from dlx.data.types import unscale
    from dlx.rundir import load_model, open_run

    run = train_run(dlx, "digits")
    uri = f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    model_uri = f"runs:/{run_id_of(run)}/model"
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    path, cfg = open_run(str(run))
    data = load(ns(cfg["dataset"]))
    keras_out = load_model(path, cfg, data.spec).predict(data.test.x[:20], verbose=0)
    raw = unscale(data.test.x[:20], data.spec).astype(np.float32)  # pixel values 0..16, as the dataset has them
    assert raw.max() > 1.5
    out = pyfunc.predict(raw)
    np.testing.assert_allclose(out["score"], keras_out.max(axis=1), atol=1e-5)
    assert list(out["class"]) == [data.spec.class_names[i] for i in keras_out.argmax(axis=1)]

    port = free_port()
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # as in an activated venv
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=workdir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server, timeout=120)
        body = json.dumps({"inputs": raw[:5].tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())["predictions"]
    finally:
        stop(server)
    assert [row["class"] for row in answer] == list(out["class"][:5])
    np.testing.assert_allclose([row["score"] for row in answer], out["score"][:5], atol=1e-5)


@pytest.mark.slow
def test_a_generative_run_says_why_it_logs_no_mlflow_model(dlx, workdir):
    from mlflow.tracking import MlflowClient

    run = train_run(dlx, "rbm", "model=rbm", "trainer.epochs=1")
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    tags = client.get_run(run_id_of(run)).data.tags
    assert tags["dlx.mlflow_model"].startswith("none: an unsupervised family")
    assert "model.keras" in [a.path for a in client.list_artifacts(run_id_of(run))]


# --------------------------------------------------------------------------- provenance
@pytest.mark.slow
def test_runs_record_the_commit_versions_and_packages(dlx, workdir):
    from mlflow.tracking import MlflowClient

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    (workdir / "notes.txt").write_text("v1\n")
    subprocess.run(["git", "add", "notes.txt"], cwd=workdir, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=workdir, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True).stdout.strip()
    clean = train_run(dlx, "clean", "trainer.epochs=1")
    (workdir / "notes.txt").write_text("v2\n")
    dirty = train_run(dlx, "dirty", "trainer.epochs=1")

    record = json.loads((clean / "run.json").read_text())
    assert record["git_commit"] == head and record["git_dirty"] is False
    assert json.loads((dirty / "run.json").read_text())["git_dirty"] is True
    from importlib.metadata import version

    assert record["tensorflow_version"] == version("tensorflow") and record["keras_version"] == version("keras")
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    tags = client.get_run(record["mlflow"]["run_id"]).data.tags
    assert tags["mlflow.source.git.commit"] == head and tags["dlx.git_dirty"] == "False"
    assert tags["dlx.dlx_version"] == record["dlx_version"]
    packages = Path(client.download_artifacts(record["mlflow"]["run_id"], "requirements.txt", str(workdir))).read_text()
    assert f"tensorflow=={version('tensorflow')}" in packages.splitlines()


# --------------------------------------------------------------------------- a store used at once
@pytest.mark.slow
def test_four_first_runs_at_once_share_a_new_store(dlx, workdir):
    exe = str(BIN / "dlx")
    procs = [subprocess.Popen([exe, "train", "trainer.epochs=1", "trainer.device=cpu", f"hydra.run.dir=r{i}"], cwd=workdir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(e[-500:] for e in errors)
    with sqlite3.connect(workdir / "outputs" / "mlflow.db") as db:
        assert db.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0] == 4


def test_a_half_made_store_is_made_again_and_one_with_runs_is_refused(tmp_path):
    from dlx.errors import DlxError
    from dlx.tracking import experiment_id

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:  # what a process killed during MLflow's migrations leaves
        conn.execute("create table alembic_version (version_num varchar(32) not null)")
        conn.execute("insert into alembic_version values ('90e64c465722')")
        conn.execute("create table experiments (experiment_id integer primary key, name varchar(256))")
    assert experiment_id(f"sqlite:///{db}", "dlx")
    with sqlite3.connect(db) as conn:
        assert conn.execute("select name from experiments where name = 'dlx'").fetchone()

    kept = tmp_path / "kept.db"
    with sqlite3.connect(kept) as conn:
        conn.execute("create table alembic_version (version_num varchar(32) not null)")
        conn.execute("insert into alembic_version values ('not-a-revision')")
        conn.execute("create table runs (run_uuid varchar(32))")
        conn.execute("insert into runs values ('r1')")
    with pytest.raises(DlxError, match=re.escape(f"{kept}: MLflow cannot open this tracking store")) as err:
        experiment_id(f"sqlite:///{kept}", "dlx")
    assert "it holds 1 run(s), so it is left as it is" in str(err.value)
    with sqlite3.connect(kept) as conn:
        assert conn.execute("select run_uuid from runs").fetchall() == [("r1",)]


# --------------------------------------------------------------------------- registry and a real server
@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its artifact proxy (artifacts in a folder of its own)."""
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{store / 'server.db'}",
                             "--artifacts-destination", (store / "artifacts").as_uri()],
                            cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def registry_round_trip(dlx, workdir, uri: str, monkeypatch) -> None:
    """Train a champion, delete its directory; a worse run is refused, a better one promoted by
    run id after its directory is gone too; `dlx serve model=models:/...` serves it."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DLX_DATA_DIR", str(workdir / "cache"))
    first = train_run(dlx, "first", "trainer.epochs=3")
    assert "promoted: dlx version 1 is the champion" in dlx("promote", f"run={first}", check=True).stdout
    shutil.rmtree(first)
    worse = train_run(dlx, "worse", "trainer.epochs=1", "optimizer.lr=1e-5")
    refused = dlx("promote", f"run={worse}")
    assert refused.returncode == 2 and "not promoted: test accuracy" in refused.stderr
    better = train_run(dlx, "better", "trainer.epochs=15")
    better_id = run_id_of(better)
    shutil.rmtree(better)
    assert "promoted: dlx version 2 is the champion" in dlx("promote", f"run=runs:/{better_id}", check=True).stdout
    version = MlflowClient(uri).get_model_version_by_alias("dlx", "champion")
    assert str(version.version) == "2" and version.run_id == better_id

    port = free_port()
    server = subprocess.Popen([str(BIN / "dlx"), "serve", "model=models:/dlx@champion", f"serve.port={port}", "serve.auth=none"],
                              cwd=workdir, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", server, timeout=120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as response:
            served = json.loads(response.read())["models"][0]
    finally:
        stop(server)
    assert served["registry_version"] == "2" and served["source"] == "models:/dlx@champion"


@pytest.mark.slow
def test_promote_and_serve_through_a_real_tracking_server(dlx, workdir, mlflow_server, monkeypatch):
    registry_round_trip(dlx, workdir, mlflow_server, monkeypatch)


@pytest.mark.slow
def test_promote_and_serve_through_a_local_sqlite_store(dlx, workdir, monkeypatch):
    registry_round_trip(dlx, workdir, f"sqlite:///{workdir / 'store' / 'mlflow.db'}", monkeypatch)


# --------------------------------------------------------------------------- the README's commands
def readme_commands(prefixes: tuple[str, ...]) -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(prefixes)]


@pytest.mark.slow
def test_every_readme_serve_and_promote_command_works_as_written(dlx, workdir, monkeypatch):
    commands = readme_commands(("dlx serve", "dlx promote"))
    assert any("model=models:/dlx@champion" in c for c in commands) and any(c.startswith("dlx promote") for c in commands)
    run = train_run(dlx, "outputs/2026-01-01/00-00-00", "trainer.epochs=3")
    places = {"outputs/DATE/TIME": str(run), "DIR": str(run), "RUN_ID": run_id_of(run)}
    for command in sorted(commands, key=lambda c: not c.startswith("dlx promote")):  # a champion first
        for placeholder, value in places.items():
            command = command.replace(placeholder, value)
        args = command.split()[1:]
        if args[0] == "promote":
            assert "promoted: dlx version" in dlx(*args, check=True).stdout, command
            continue
        if "serve.auth=none" not in args:
            assert dlx("users", "add", "readme", check=True).returncode == 0
        port = free_port()
        server = subprocess.Popen([str(BIN / "dlx"), *args, f"serve.port={port}"], cwd=workdir, env=os.environ.copy(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", server, timeout=120)
        finally:
            stop(server)


@pytest.mark.slow
def test_a_failure_after_the_mlflow_run_started_ends_it_failed(dlx, workdir):
    from mlflow.tracking import MlflowClient

    (workdir / "broken").mkdir()
    (workdir / "broken" / "fam.py").write_text(
        "import keras\nfrom dlx.family import Family\n\n\n"
        "class Broken(Family):\n    @staticmethod\n    def objective(model, spec):\n        raise ValueError('no loss for you')\n\n\n"
        "def build(cfg, spec):\n    return keras.Sequential([keras.Input(spec.input_shape), keras.layers.Flatten(),\n"
        "                             keras.layers.Dense(spec.num_classes, activation='softmax')])\n")
    (workdir / "conf" / "model").mkdir(parents=True)
    (workdir / "conf" / "model" / "broken.yaml").write_text("_target_: broken.fam.build\n")
    proc = dlx("train", "--config-dir", "conf", "model=broken", "trainer.epochs=1", "hydra.run.dir=run")
    assert proc.returncode != 0
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    run = client.get_run(run_id_of(workdir / "run"))
    assert run.info.status == "FAILED"


def test_promote_refuses_a_run_uri_that_is_no_run_id(tmp_path):
    from dlx.commands.promote import promote
    from dlx.errors import DlxError

    for bad in ("runs:/../../etc", "runs:/", "runs:/a b"):
        with pytest.raises(DlxError, match=r"expected runs:/RUN_ID"):
            promote(bad, tracking_uri=f"sqlite:///{tmp_path / 'store.db'}")
