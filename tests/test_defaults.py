"""Defaults that work on the default data: `dlx train model=NAME` alone, on the embedded digits."""

from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest

# the floors a family must reach with nothing but its defaults (test accuracy, 360 held-out digits)
FLOORS = {"softmax": 0.93, "logistic_regression": 0.93, "mlp": 0.95, "cnn": 0.95, "lstm_rows": 0.90,
          "sdae": 0.93, "dbn": 0.93, "gda": 0.93, "naive_bayes": 0.85, "svm": 0.95}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FLOORS))
def test_each_family_is_trustworthy_with_its_defaults(dlx, workdir, family):
    proc = dlx("train", f"model={family}", "hydra.run.dir=run", check=True, timeout=600)
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= FLOORS[family], (family, metrics, proc.stderr[-2000:])


def test_epochs_null_gives_a_small_dataset_enough_steps():
    from dlx.training import optim

    trainer = NS(epochs=None, min_steps=3000)
    assert optim.epochs(trainer, steps=10, mode="steps") == 300  # digits: 10 batches of 128 an epoch
    assert optim.epochs(trainer, steps=430, mode="steps") == 20  # MNIST: 20 epochs are 8,600 steps already
    assert optim.epochs(trainer, steps=1, mode="full_batch") == 20  # Newton: an epoch is one step
    assert optim.epochs(NS(epochs=2, min_steps=3000), steps=10, mode="steps") == 2  # a number is kept
    assert optim.patience(NS(patience=None), 300) == 15 and optim.patience(NS(patience=None), 20) == 5
    assert optim.patience(NS(patience=0), 300) == 0


def test_pretraining_epochs_follow_the_same_rule():
    from dlx.models.stacked import Pretraining

    pre = Pretraining([8], None, 0.05, 128, make_stage=None, min_steps=500)
    assert pre.epochs_for(1237) == 50 and pre.epochs_for(55000) == 15
    assert Pretraining([8], 3, 0.05, 128, make_stage=None, min_steps=500).epochs_for(1237) == 3


def test_the_run_records_the_epochs_it_trained_for(dlx, workdir):
    """trainer.epochs=null is resolved before the run starts: MLflow's params and the log say the number."""
    proc = dlx("train", "model=softmax", "trainer.min_steps=40", "logger=mlflow", "hydra.run.dir=run", check=True)
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] <= 20 and "epoch 1/20" in proc.stderr + (workdir / "run" / "train.log").read_text()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/outputs/mlflow.db")
    run = mlflow.search_runs(experiment_names=["dlx"], output_format="list")[0]
    assert run.data.params["trainer.epochs"] == "20" and run.data.params["trainer.early_stopping.patience"] == "5"
