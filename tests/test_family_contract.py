"""The family contract (dlx/family.py): every built-in family walks it, and a family and a dataset
of your own, in a folder outside the repository, train, evaluate, predict and sweep like built-ins."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlx import family as contract
from dlx.family import FIT_MODES, KIND_NAMES, MODEL_HOOKS, Family

BUILTIN = contract.builtin()
HOOKS = {name for name, value in vars(Family).items() if not name.startswith("__") and (callable(value) or isinstance(value, (staticmethod, classmethod)))}
CLASS_VARS = {"task", "kinds", "newton", "generates", "steps_per_execution", "builder"}


def test_every_family_module_defines_one_family_and_a_builder():
    assert len(BUILTIN) >= 16
    for name, fam in BUILTIN.items():
        assert fam is not None, f"dlx/families/{name}.py defines no single Family subclass"
        assert dataclasses.is_dataclass(fam), f"{name}: its Family is its schema, a dataclass"
        module = sys.modules[fam.__module__]
        assert list(inspect.signature(module.build).parameters)[:2] == ["cfg", "spec"], name
        assert fam().name == name, f"{name}: the schema's name default must be the module's name"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_each_family_declares_what_it_is_and_uses_only_documented_hooks(name):
    fam = BUILTIN[name]
    assert fam.task in ("classification", "regression", "unsupervised")
    assert fam.kinds and set(fam.kinds) <= set(KIND_NAMES)
    fields = {f.name for f in dataclasses.fields(fam)}
    for klass in fam.__mro__:
        if klass in (Family, object):
            break
        own = {k for k in vars(klass) if not k.startswith("__")} - fields - {"__dataclass_fields__"}
        undocumented = own - HOOKS - CLASS_VARS
        assert not undocumented, f"{klass.__name__} defines {sorted(undocumented)}, which the contract does not list"
    if fam.generates:
        assert "sample" in {k for c in fam.__mro__[:-2] for k in vars(c)}, f"{name} generates but has no sample hook"
    from omegaconf import OmegaConf

    from dlx.config import ns

    default = ns(OmegaConf.to_container(OmegaConf.structured(fam), enum_to_str=True))  # as dlx train passes it
    for optimizer in ("adam", "newton"):
        assert fam.fit_mode(default, ns({"name": optimizer})) in FIT_MODES


def test_fit_modes_follow_the_config():
    opt = lambda name: type("Opt", (), {"name": name})()  # noqa: E731
    lin = BUILTIN["linear_regression"]
    assert lin.fit_mode(type("C", (), {"solver": "normal_equation"})(), opt("sgd")) == "statistics"  # the default
    assert lin.fit_mode(type("C", (), {"solver": "gd"})(), opt("sgd")) == "steps"
    log = BUILTIN["logistic_regression"]
    assert log.fit_mode(log(), opt("newton")) == "full_batch" and log.fit_mode(log(), opt("adam")) == "steps"
    assert BUILTIN["svm"].fit_mode(None, opt("adam")) == "solver"
    assert BUILTIN["gda"].fit_mode(None, opt("adam")) == "statistics" == BUILTIN["naive_bayes"].fit_mode(None, opt("adam"))


@pytest.mark.parametrize("name, mode, needs", [("gda", "statistics", "statistics_pass"), ("naive_bayes", "statistics", "statistics_pass"),
                                               ("svm", "solver", "solve"), ("linear_regression", "statistics", "statistics_pass")])
def test_a_built_model_has_what_its_fit_mode_needs(name, mode, needs):
    from conftest import tiny_cfg
    from helpers import build_model

    from dlx.config import ns
    from dlx.data.types import DataSpec

    task = "regression" if name == "linear_regression" else "classification"
    extra = ["dataset=synthetic_line"] if task == "regression" else []
    spec = DataSpec("toy", (4,), 1 if task == "regression" else 3, ["a", "b", "c"], kind="tabular", task=task)
    model = build_model(ns(tiny_cfg(f"model={name}", *extra)), spec)
    assert callable(contract.model_hook(model, needs))


def test_model_hook_refuses_an_undocumented_name():
    assert set(MODEL_HOOKS) >= {"data_init", "fit_callbacks", "pretraining", "summary_metrics", "solve", "statistics_pass"}
    with pytest.raises(KeyError):
        contract.model_hook(object(), "passes")


def test_no_dlx_code_sniffs_a_model_or_family_for_attributes():
    """Hooks are asked for through the contract (family methods, model_hook), not by hasattr/getattr."""
    root = Path(contract.__file__).parent
    offenders = []
    for path in [*(root / "training").glob("*.py"), *(root / "commands").glob("*.py"), root / "plots.py", root / "rundir.py"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for probe in ("hasattr(model", "getattr(model", "hasattr(family", "getattr(family", "hasattr(stage", "getattr(stage"):
                if probe in line:
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# --------------------------------------------------------------------------- your own family and dataset
# README.md shows these files verbatim (a test below checks it)
TINY_MODEL = '''\
import keras


def build(cfg, spec):
    return keras.Sequential([
        keras.Input(spec.input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(cfg.hidden, activation="relu"),
        keras.layers.Dense(spec.num_classes, activation="softmax"),
    ])
'''
TINY_YAML = '''\
_target_: my_models.tiny.build
hidden: 64
'''
BLOBS_DATA = '''\
import numpy as np

from dlx.data.types import Data, DataSpec, Split


def load(cfg):
    rng = np.random.default_rng(cfg.seed)
    centres = rng.normal(scale=3.0, size=(cfg.classes, 2))
    y = rng.integers(0, cfg.classes, cfg.n)
    x = (centres[y] + rng.normal(size=(cfg.n, 2))).astype("float32")
    spec = DataSpec("blobs", (2,), cfg.classes, [f"c{i}" for i in range(cfg.classes)], kind="tabular")
    a, b = int(cfg.n * 0.7), int(cfg.n * 0.85)
    return Data(Split(x[:a], y[:a]), Split(x[a:b], y[a:b]), Split(x[b:], y[b:]), spec)
'''
BLOBS_YAML = '''\
_target_: my_data.blobs.load
n: 600
classes: 3
seed: 0
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch) -> Path:
    """A user's own folder, outside the repository: their model, their dataset, their configs."""
    root = tmp_path / "project"
    for rel, text in {"my_models/tiny.py": TINY_MODEL, "my_conf/model/tiny.yaml": TINY_YAML,
                      "my_data/blobs.py": BLOBS_DATA, "my_conf/dataset/blobs.yaml": BLOBS_YAML}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.setenv("DLX_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def run_dlx(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dlx")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" or "my_" not in v}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def only_run(root: Path, under: str = "outputs") -> Path:
    runs = [p.parent for p in (root / under).rglob("metrics.json") if "mlartifacts" not in p.parts]
    assert len(runs) == 1, runs
    return runs[0]


def test_the_readme_shows_the_tested_example_verbatim():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for text in (TINY_MODEL, TINY_YAML, BLOBS_DATA, BLOBS_YAML):
        assert text in readme


@pytest.mark.slow
def test_your_own_family_trains_evaluates_predicts_and_sweeps(user_folder):
    ok = run_dlx(user_folder, "train", "--config-dir", "my_conf", "model=tiny", "trainer.epochs=15")
    assert ok.returncode == 0, ok.stderr
    run = only_run(user_folder)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85  # digits, 15 epochs of a 64-unit MLP
    assert metrics["params"] == 8 * 8 * 64 + 64 + 64 * 10 + 10
    saved = (run / ".hydra" / "config.yaml").read_text()
    assert "_target_: my_models.tiny.build" in saved and "hidden: 64" in saved

    again = run_dlx(user_folder, "eval", f"run={run}")
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "eval.json").read_text())["test_accuracy"] == pytest.approx(metrics["test_accuracy"])

    from PIL import Image

    Image.new("L", (28, 28), 0).save(user_folder / "blank.png")
    pred = run_dlx(user_folder, "predict", f"run={run}", "inputs=blank.png")
    assert pred.returncode == 0, pred.stderr
    assert pred.stdout.split()[0] == "blank.png" and pred.stdout.split()[1] in [str(d) for d in range(10)]

    sweep = run_dlx(user_folder, "train", "-m", "--config-dir", "my_conf", "model=tiny", "model.hidden=16,32", "trainer.epochs=2")
    assert sweep.returncode == 0, sweep.stderr
    jobs = sorted(p for p in (user_folder / "multirun").rglob("metrics.json") if "mlartifacts" not in p.parts)
    assert len(jobs) == 2
    assert sorted(json.loads(j.read_text())["params"] for j in jobs) == [64 * 16 + 16 + 16 * 10 + 10, 64 * 32 + 32 + 32 * 10 + 10]


@pytest.mark.slow
def test_your_own_dataset_trains_evaluates_and_sweeps(user_folder):
    ok = run_dlx(user_folder, "train", "--config-dir", "my_conf", "dataset=blobs", "model=softmax", "trainer.epochs=30",
                 "optimizer.lr=0.05")
    assert ok.returncode == 0, ok.stderr
    run = only_run(user_folder)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8  # three well-separated blobs
    assert json.loads((run / "data_spec.json").read_text())["name"] == "blobs"
    again = run_dlx(user_folder, "eval", f"run={run}")
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "eval.json").read_text())["test_examples"] == 90

    sweep = run_dlx(user_folder, "train", "-m", "--config-dir", "my_conf", "dataset=blobs", "model=tiny,gda", "trainer.epochs=2")
    assert sweep.returncode == 0, sweep.stderr
    assert len([p for p in (user_folder / "multirun").rglob("metrics.json") if "mlartifacts" not in p.parts]) == 2


BAD_TARGETS = [
    ("model._target_=nope.mod.build", "model._target_: cannot import nope.mod"),
    ("model._target_=my_models.bad.one_arg", "must take (cfg, spec)"),
    ("model._target_=my_models.bad.not_a_model", "returned str, expected a keras.Model"),
    ("model._target_=my_models.bad.missing", "has no function 'missing'"),
    ("model._target_=my_models.bad.broken", "my_models.bad.broken(cfg, spec) failed: KeyError"),
    ("model._target_=not-a-path", "expected a dotted path module.function"),
]


@pytest.mark.parametrize("override, message", BAD_TARGETS)
def test_a_bad_target_is_one_line_exit_2_nothing_written(user_folder, override, message):
    (user_folder / "my_models" / "bad.py").write_text(textwrap.dedent('''\
        def one_arg(cfg):
            return None

        def not_a_model(cfg, spec):
            return "hello"

        def broken(cfg, spec):
            return {}["x"]
    '''))
    proc = run_dlx(user_folder, "train", "--config-dir", "my_conf", "model=tiny", override, "logger=none", "trainer.epochs=1")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dlx train: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (user_folder / "outputs").exists() or not any((user_folder / "outputs").rglob("*.yaml"))


def test_a_bad_dataset_loader_is_one_line(user_folder):
    (user_folder / "my_data" / "worse.py").write_text("def load(cfg):\n    return [1, 2, 3]\n")
    proc = run_dlx(user_folder, "train", "--config-dir", "my_conf", "dataset=blobs", "dataset._target_=my_data.worse.load",
                   "logger=none")
    assert proc.returncode == 2
    assert "dataset._target_: my_data.worse.load returned list, expected dlx.data.types.Data" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hydra_flags_and_their_values_are_not_overrides():
    from dlx.commands.train import split_hydra_flags

    args = ["--config-dir", "my_conf", "model=tiny", "-m", "resume=outputs/x", "--cfg", "job", "-cd=other"]
    assert split_hydra_flags(args) == (["model=tiny", "resume=outputs/x"],
                                       ["--config-dir", "my_conf", "-m", "--cfg", "job", "-cd=other"])


@pytest.mark.slow
def test_a_run_of_your_own_family_resumes_with_its_config_dir(user_folder):
    assert run_dlx(user_folder, "train", "--config-dir", "my_conf", "model=tiny", "trainer.epochs=2", "logger=none").returncode == 0
    run = only_run(user_folder)
    (run / "metrics.json").unlink()  # as if killed before it finished
    again = run_dlx(user_folder, "train", "--config-dir", "my_conf", f"resume={run}")
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    changed = run_dlx(user_folder, "train", "--config-dir", "my_conf", f"resume={run}", "model.hidden=8")
    assert changed.returncode == 2 and "the config differs from the run's at model.hidden (64 -> 8)" in changed.stderr
