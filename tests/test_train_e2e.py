"""`dlx train` -> run directory, TensorBoard, MLflow -> `dlx eval` -> `dlx predict`, as a user runs them."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FASHION_DIR, TINY, tiny_cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real `dlx train` run on digits with both loggers, shared by the tests below."""
    import os
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("work")
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "DLX_DATA_DIR": str(work / "cache")}
    run_dir = work / "runs" / "first"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dlx")), "train", *TINY, "trainer.epochs=3",
         "logger=both", f"hydra.run.dir={run_dir}"],
        cwd=work, capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return run_dir, proc, env


def test_run_directory_layout(trained):
    run_dir, proc, _ = trained
    for rel in (".hydra/config.yaml", "train.log", "checkpoints/best.keras", "checkpoints/last.keras",
                "model.keras", "metrics.json", "data_spec.json", "plots/learning_curves.png",
                "plots/confusion_matrix.png"):
        assert (run_dir / rel).is_file(), rel
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test_loss", "test_accuracy", "epochs_run", "train_seconds"} <= metrics.keys()
    assert metrics["epochs_run"] == 3 and 0.5 < metrics["test_accuracy"] <= 1.0
    log = (run_dir / "train.log").read_text()
    assert "epoch 3/3" in log and "val_loss=" in log and "tensorboard --logdir" in log
    assert f"run directory: {run_dir}" in proc.stderr + proc.stdout


def test_tensorboard_has_scalars_graph_and_confusion_image(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = trained
    train = EventAccumulator(str(run_dir / "tb" / "train"), size_guidance={"tensors": 0}).Reload()
    val = EventAccumulator(str(run_dir / "tb" / "validation"), size_guidance={"tensors": 0}).Reload()
    test = EventAccumulator(str(run_dir / "tb" / "test"), size_guidance={"tensors": 0}).Reload()
    for acc in (train, val):
        tags = acc.Tags()["tensors"]
        assert "epoch_loss" in tags and "epoch_accuracy" in tags
        assert len(acc.Tensors("epoch_loss")) == 3
    assert "keras" in train.Tags()["tensors"]  # the Keras model summary (TensorBoard's conceptual graph)
    assert any(node.op == "MatMul" for node in train.Graph().node)  # the op graph of the forward pass
    assert "confusion_matrix" in test.Tags()["tensors"]


def test_mlflow_run_has_params_metrics_and_artifacts(trained):
    import mlflow

    run_dir, _, env = trained
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("dlx")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "mlp" and run.data.params["trainer.epochs"] == "3"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.keras", "metrics.json", "plots", ".hydra"} <= artifacts


def test_eval_reproduces_test_metrics(trained, dlx):
    run_dir, _, _ = trained
    proc = dlx("eval", f"run={run_dir}", check=True)
    got = json.loads((run_dir / "eval.json").read_text())
    want = json.loads((run_dir / "metrics.json").read_text())
    assert got["test_loss"] == pytest.approx(want["test_loss"], abs=1e-6)
    assert got["test_accuracy"] == want["test_accuracy"]
    assert "test_accuracy" in proc.stdout


def test_predict_classifies_user_images(trained, dlx, workdir):
    from sklearn.datasets import load_digits

    run_dir, _, _ = trained
    bunch = load_digits()
    imgs = workdir / "imgs"
    imgs.mkdir()
    for i in range(10):  # dark ink on white, 10x bigger: what a person would draw
        big = np.kron(bunch.images[i], np.ones((10, 10))) * (255 / 16)
        Image.fromarray((255 - big).astype(np.uint8)).save(imgs / f"digit{bunch.target[i]}.png")
    proc = dlx("predict", f"run={run_dir}", f"inputs={imgs}/*.png", check=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 10
    correct = sum(Path(line.split()[0]).stem[-1] == line.split()[1] for line in lines)
    assert correct >= 7, proc.stdout
    bad = imgs / "notes.png"
    bad.write_text("not an image")
    proc = dlx("predict", f"run={run_dir}", f"inputs={bad}")
    assert proc.returncode == 2 and proc.stderr.strip() == f"dlx predict: error: {bad}: not a readable image file (UnidentifiedImageError)"


def test_same_seed_same_metrics(workdir):
    from dlx.commands.train import train

    a, _ = train(tiny_cfg(), workdir / "a")
    b, _ = train(tiny_cfg(), workdir / "b")
    c, _ = train(tiny_cfg("trainer.seed=7"), workdir / "c")
    assert a["test_loss"] == b["test_loss"] and a["test_accuracy"] == b["test_accuracy"]
    assert c["test_loss"] != a["test_loss"]


def test_early_stopping_keeps_the_best_epoch(workdir):
    from dlx.commands.train import train

    # lr so high that validation loss rises after the first epochs: the run stops, best weights kept
    m, objs = train(tiny_cfg("optimizer=sgd", "optimizer.lr=3.0", "trainer.epochs=30",
                             "trainer.early_stopping.patience=2"), workdir / "es")
    hist = objs["history"]["val_loss"]
    assert m["epochs_run"] < 30
    assert m["best_epoch"] == int(np.argmin(hist)) + 1 and m["epochs_run"] == m["best_epoch"] + 2
    assert m["best_val_loss"] == pytest.approx(min(hist))


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(dlx, workdir):
    # lr x 1e30 from the 2nd epoch on: epoch 1 is fine, epoch 2 overflows
    proc = dlx("train", *TINY, "trainer.epochs=4", "logger=none", "optimizer=sgd", "optimizer.schedule=step",
               "optimizer.step_epochs=1", "optimizer.decay_rate=1e30", "hydra.run.dir=nan_run")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert "training diverged: loss became NaN/inf at epoch 2" in line and "last good checkpoint" in line
    assert (workdir / "nan_run/checkpoints/last.keras").is_file()
    assert not (workdir / "nan_run/model.keras").exists() and not (workdir / "nan_run/metrics.json").exists()


def test_bad_data_path_leaves_no_run_dir(dlx, workdir):
    proc = dlx("train", "dataset=mnist", f"dataset.path={workdir}/nope", "hydra.run.dir=run_x")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"dlx train: error: dataset.path={workdir}/nope: no such directory"
    assert not (workdir / "run_x").exists()


def test_corrupt_idx_file_is_reported(dlx, workdir, shared_mnist):
    d = workdir / "mnist"
    d.mkdir()
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (d / f"{split}-{kind}-ubyte.gz").symlink_to(shared_mnist / f"t10k-{kind}-ubyte.gz")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    (d / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x27\x10" + b"\x01" * 10)
    proc = dlx("train", "dataset=mnist", f"dataset.path={d}", "hydra.run.dir=run_y")
    assert proc.returncode == 2
    assert "t10k-labels-idx1-ubyte: truncated" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir / "run_y").exists()


@pytest.mark.slow
def test_multirun_gives_each_job_its_run_dir(dlx, workdir):
    proc = dlx("train", "-m", *TINY, "trainer.epochs=1", "logger=none", "model=softmax,mlp",
               "hydra.sweep.dir=sweep", check=True)
    for job in ("0_model=softmax", "1_model=mlp"):  # named by what the sweep varies
        assert (workdir / "sweep" / job / "metrics.json").is_file(), proc.stderr
    assert "model:\n  name: softmax" in (workdir / "sweep/0_model=softmax/.hydra/config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_cnn_end_to_end(dlx, workdir):
    dlx("train", "dataset=fashion_mnist", f"dataset.path={FASHION_DIR}", "dataset.subset=6000", "model=cnn",
        "trainer.epochs=2", "trainer.device=cpu", "logger=none", "hydra.run.dir=fm", check=True)
    metrics = json.loads((workdir / "fm/metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.7  # 10 classes: chance is 0.1
    dlx("eval", "run=fm", check=True)
    assert json.loads((workdir / "fm/eval.json").read_text())["test_accuracy"] == metrics["test_accuracy"]


def test_unusable_mlflow_store_is_a_clear_error(dlx, workdir):
    proc = dlx("train", *TINY, "logger=mlflow", "logger.mlflow.tracking_uri=bogus://nowhere", "hydra.run.dir=run_m")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "dlx train: error: logger.mlflow: cannot use tracking store bogus://nowhere:")
    assert not (workdir / "run_m").exists()
