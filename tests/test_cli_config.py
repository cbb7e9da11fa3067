"""The CLI contract and the config schema: fast, no TensorFlow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from conftest import compose
from dlx.config import plain


def test_help_lists_commands_and_groups_without_heavy_imports():
    code = (
        "import sys; from dlx.cli import main; main(['--help']);"
        "heavy = [m for m in ('tensorflow', 'keras', 'hydra', 'mlflow') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for word in ("train", "eval", "predict", "sample", "data", "report", "model", "cnn, dae, dbn, gda, linear_regression",
                 "diabetes, digits, fashion_mnist", "book_cnn_mnist", "serve", "promote", "users", "worker", "runs",
                 "hydra/launcher  basic (default), joblib, ray, slurm, slurm_gpu", "hydra/sweeper   optuna",
                 "sweep           mlp_search"):
        assert word in proc.stdout


@pytest.mark.parametrize("group,options", [
    ("dataset", ["digits", "mnist", "fashion_mnist"]),
    ("model", ["softmax", "mlp", "cnn"]),
    ("optimizer", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]),
    ("regularization", ["none", "l1", "l2", "l1_l2", "dropout"]),
    ("logger", ["tensorboard", "mlflow", "both", "none"]),
])
def test_every_group_option_composes(group, options):
    for option in options:
        cfg = plain(compose([f"{group}={option}"]))
        assert cfg[group]["name"] == option


@pytest.mark.parametrize("override,error", [
    ("trainer.epochs=abc", ValidationError),
    ("model.hidden=[a]", ValidationError),
    ("optimizer.name=adamx", ValidationError),
    ("trainer.nope=1", ConfigCompositionException),
    ("model.conv=[]", ConfigCompositionException),  # mlp has no conv
])
def test_schema_rejects_bad_keys_and_types(override, error):
    with pytest.raises((error, ConfigCompositionException)):
        compose([override])


def test_cnn_layers_are_typed():
    cfg = compose(["model=cnn", "model.conv=[{filters:8,kernel:3,padding:valid,pool:1}]"])
    assert cfg.model.conv[0].filters == 8 and cfg.model.conv[0].padding.name == "valid"
    with pytest.raises(Exception):
        compose(["model=cnn", "model.conv=[{filters:8,padding:diagonal}]"])


@pytest.mark.parametrize("args,message", [
    (["model=foo"], "unknown model 'foo'; choose one of: ae, captioning, char_rnn, cnn, dae, dbn, gda, linear_regression, logistic_regression, lstm_rows, lstm_sentiment, mlp, naive_bayes, rbm, sdae, softmax, sparse_ae, svm"),
    (["trainer.epochs=abc"], "trainer.epochs: Value 'abc'"),
    (["trainer.nope=1"], "Key 'nope' not in 'TrainerConfig'"),
    (["nope=1"], "Key 'nope' not in 'TrainConfig'"),
    (["dataset.scaling=bad"], "dataset.scaling: Invalid value 'bad', expected one of [unit, zscore, none]"),
    (["trainer.epochs=0"], "trainer.epochs: 0 is outside the allowed range [1, 1,000,000]"),
    (["optimizer.lr=-0.1"], "optimizer.lr: -0.1 is outside the allowed range (0, 100]"),
    (["model=cnn", "model.conv.0.filters=0"], "model.conv[0].filters: 0 is outside the allowed range [1, 1,000,000]"),
    (["model=mlp", "model.hidden=[64,0]"], "model.hidden[1]: 0 is outside the allowed range [1, 10,000,000]"),
    (["regularization.dropout=1"], "regularization.dropout: 1.0 is outside the allowed range [0, 1)"),
])
def test_bad_overrides_one_line_exit_2_nothing_written(dlx, workdir, args, message):
    proc = dlx("train", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"dlx train: error: {proc.stderr.split('error: ', 1)[1].strip()}"]
    assert message in proc.stderr
    assert not (workdir / "outputs").exists()


def test_unknown_command(dlx):
    proc = dlx("trian")
    assert proc.returncode == 2 and "unknown command" in proc.stderr


def test_hydra_flags_still_work(dlx):
    proc = dlx("train", "model=cnn", "optimizer.lr=0.01", "--cfg", "job")
    assert proc.returncode == 0
    assert "name: cnn" in proc.stdout and "lr: 0.01" in proc.stdout
    info = dlx("train", "--info", "defaults")
    assert info.returncode == 0 and "model/mlp" in info.stdout


@pytest.mark.parametrize("args,message", [
    (["eval", "run=does/not/exist"], "run=does/not/exist: no such run directory"),
    (["eval"], "Missing mandatory value: run"),
    (["predict", "run=does/not/exist", "inputs=x.png"], "no such run directory"),
])
def test_eval_predict_bad_run(dlx, args, message):
    proc = dlx(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_data_list(dlx):
    proc = dlx("data", "list")
    assert proc.returncode == 0
    assert all(name in proc.stdout for name in ("digits", "mnist", "fashion_mnist"))


@pytest.mark.parametrize("line, expected, absent", [
    ("dlx ", {"train", "eval", "serve", "completion"}, set()),
    ("dlx tr", {"train"}, {"eval"}),
    ("dlx train mod", {"model=", "model."}, set()),
    ("dlx train model=c", {"model=cnn", "model=char_rnn", "model=captioning"}, {"model=mlp"}),
    ("dlx train model=cnn model.con", {"model.conv."}, set()),  # the chosen family's own keys
    ("dlx train trainer.ep", {"trainer.epochs="}, set()),
    ("dlx train experiment=book_s", {"experiment=book_softmax_mnist"}, {"experiment=dlx_cnn_mnist"}),
    ("dlx data ", {"list", "download"}, set()),
])
def test_shell_completion_answers_commands_groups_and_keys(dlx, line, expected, absent):
    from dlx.commands.completion import candidates

    got = set(candidates(line))
    assert expected <= got and not absent & got, got


def test_shell_completion_in_a_real_bash(workdir):
    """The script `dlx completion bash` prints, sourced into bash, completes through `dlx` itself."""
    import shutil

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bin_dir = Path(sys.executable).parent
    script = ('eval "$(dlx completion bash)"; COMP_LINE="dlx train optimizer=ad"; COMP_POINT=${#COMP_LINE}; '
              'COMP_WORDS=(dlx train optimizer=ad); COMP_CWORD=2; _dlx_completion; echo "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert sorted(proc.stdout.split()) == ["optimizer=adagrad", "optimizer=adam"], proc.stderr
    bad = subprocess.run([str(bin_dir / "dlx"), "completion", "fish"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
