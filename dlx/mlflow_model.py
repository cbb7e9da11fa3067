"""A run's model as an MLflow model: the pyfunc flavour, with the run's preprocessing inside.

`mlflow.pyfunc.load_model("runs:/<id>/model").predict(x)` takes inputs as a user has them (raw
pixel values 0..pixel_max shaped like one image or flat; tabular rows by feature name, a CSV
table's rows by its raw column names; text as a
`text` column of documents), prepares them exactly as `dlx predict` does (the run's scaling,
vocabulary and padding travel in the model's artifacts) and returns one row per input: `class`,
`score` and a `p_<class>` column per class, or `value` for a regression. `mlflow models serve`
answers `/invocations` with the same. The signature and an input example are built from the
run's data spec. Families whose output is neither a class nor a number (the RBM, autoencoders,
the char-RNN, captioning) are not logged as MLflow models: `should_log` says why, and their
`model.keras` stays a plain artifact (`dlx sample` draws from it).

Loading needs dlx importable, as in the environment that trained the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from mlflow.pyfunc import PythonModel

from dlx.data.types import DataSpec, scale, unscale

log = logging.getLogger("dlx.tracking")

def should_log(spec: DataSpec, task: str) -> str | None:
    """None when the run is logged as an MLflow model, else why not (one line)."""
    if task == "unsupervised":
        return "an unsupervised family has no class or value to predict (dlx sample draws from it)"
    if spec.kind in ("chars", "captions"):
        return f"a {spec.kind} model generates sequences rather than predicting one class or value (dlx sample)"
    return None


def example_inputs(data, n: int = 3):
    """A few test examples as a user would send them: raw values, or documents for text."""
    spec = data.spec
    if spec.columns:  # a CSV table: its raw rows, as the file has them
        return data.extra["raw_test"].head(n)
    if spec.kind in ("image", "tabular"):
        return unscale(data.test.x[:n], spec)
    words = [w for w in spec.feature_names or [] if not w.startswith("<")]
    return [" ".join(words[i::n][:12]) for i in range(n)]


def signature_and_example(spec: DataSpec, raw_example):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    if spec.kind == "image":
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *spec.input_shape))])
        example = np.asarray(raw_example, np.float32)
    elif spec.columns:
        inputs = Schema([ColSpec("double" if c["kind"] == "numeric" else "string", c["name"]) for c in spec.columns])
        example = raw_example.astype({c["name"]: "float64" if c["kind"] == "numeric" else "str" for c in spec.columns})
    elif spec.kind == "tabular":
        names = spec.feature_names or [f"x{i}" for i in range(spec.input_shape[0])]
        inputs = Schema([ColSpec("double", n) for n in names])
        import pandas as pd

        example = pd.DataFrame(np.asarray(raw_example, np.float64).reshape(len(raw_example), -1), columns=names)
    else:  # text
        inputs = Schema([ColSpec("string", "text")])
        import pandas as pd

        example = pd.DataFrame({"text": list(raw_example)})
    if spec.task == "regression":
        outputs = Schema([ColSpec("double", "value")])
    else:
        outputs = Schema([ColSpec("string", "class"), ColSpec("double", "score"),
                          *(ColSpec("double", f"p_{c}") for c in spec.class_names)])
    return ModelSignature(inputs=inputs, outputs=outputs), example


def requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("tensorflow", "keras", "mlflow", "numpy", "pandas", "pyyaml", "omegaconf", "hydra-core", "scikit-learn"):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pass
    return out


def log_model(run_dir: Path, spec: DataSpec, raw_example, cfg: dict) -> None:
    """Log the run in `run_dir` (trained with `cfg`) as the active MLflow run's model `model`."""
    import tempfile

    import mlflow
    import yaml

    signature, example = signature_and_example(spec, raw_example)
    quiet = logging.getLogger("mlflow.pyfunc")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its advice on pickling applies to models it cannot import; this one it can
    try:
        with tempfile.TemporaryDirectory() as tmp:  # the config as trained, whether or not Hydra saved it
            config = Path(tmp) / "config.yaml"
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            mlflow.pyfunc.log_model(
                name="model", python_model=DlxModel(), signature=signature, input_example=example,
                artifacts={"model": str(run_dir / "model.keras"), "data_spec": str(run_dir / "data_spec.json"),
                           "config": str(config)},
                pip_requirements=requirements(),
            )
    finally:
        quiet.setLevel(level)


def prepare(model_input, spec: DataSpec, dataset: dict) -> np.ndarray:
    """Inputs as a user has them -> the model's batch, as `dlx predict` prepares them."""
    import pandas as pd

    if spec.kind in ("text", "words"):
        from dlx.data.text import text_batch

        docs = model_input["text"].tolist() if isinstance(model_input, pd.DataFrame) else list(np.ravel(model_input))
        return text_batch(docs, spec, dataset)
    if spec.columns:
        from dlx.data import table

        return table.transform(pd.DataFrame(model_input), spec.columns, "model_input", first=0)
    if isinstance(model_input, pd.DataFrame):
        names = spec.feature_names
        model_input = model_input[names].to_numpy() if names and set(names) <= set(model_input.columns) else model_input.to_numpy()
    x = np.asarray(model_input, np.float32).reshape((-1, *spec.input_shape))
    return scale(x, spec)


def rows(out: np.ndarray, spec: DataSpec):
    import pandas as pd

    if spec.task == "regression":
        return pd.DataFrame({"value": out[:, 0].astype(np.float64)})
    best = out.argmax(axis=1)
    frame = {"class": [spec.class_names[i] for i in best], "score": out[np.arange(len(out)), best].astype(np.float64)}
    frame |= {f"p_{c}": out[:, i].astype(np.float64) for i, c in enumerate(spec.class_names)}
    return pd.DataFrame(frame)


class DlxModel(PythonModel):
    """The pyfunc model: the run's Keras model behind its own preprocessing."""

    _skip_type_hint_validation = True  # MLflow's check of predict's type hints: the signature gives the types

    def load_context(self, context) -> None:
        import yaml

        from dlx.rundir import load_keras

        self.spec = DataSpec.load(Path(context.artifacts["data_spec"]))
        cfg = yaml.safe_load(Path(context.artifacts["config"]).read_text())
        self.dataset = cfg["dataset"]
        self.model = load_keras(Path(context.artifacts["model"]), cfg, self.spec)

    def predict(self, context, model_input, params=None):
        x = prepare(model_input, self.spec, self.dataset)
        return rows(np.asarray(self.model.predict(x, verbose=0)), self.spec)
