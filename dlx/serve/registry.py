"""The champion model in MLflow's model registry: `dlx promote` moves it, `dlx serve` follows it.

A version is registered from its training run's MLflow model (`runs:/<run id>/model`), so it
names that run; what serving and promotion need (the config, the Keras model, the data spec) is
read back from the run's artifacts through the tracking server, into a local cache. Nothing
depends on the directory the run was trained in, nor on the machine.
"""

from __future__ import annotations

import re
from pathlib import Path

from dlx.errors import DlxError

MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+)@(?P<alias>[\w-]+)$")
# what a served or compared run needs of its artifacts (`dlx train` logs them all)
RUN_FILES = (".hydra", "model.keras", "data_spec.json")


def client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    from dlx import tracking

    uri = tracking.tracking_uri(tracking_uri)
    tracking.experiment_id(uri, "dlx")  # creates the store's tables when it is new
    return MlflowClient(uri)


def parse(uri: str) -> tuple[str, str]:
    m = MODEL_URI.match(uri)
    if m is None:
        raise DlxError(f"model={uri}: expected models:/NAME@ALIAS, e.g. models:/dlx@champion")
    return m["name"], m["alias"]


def current(c, name: str, alias: str):
    """The model version `alias` points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def run_files(c, run_id: str, what: str) -> Path:
    """The run's config, model and data spec, downloaded once into the cache; returns the folder,
    laid out as a run directory."""
    from dlx.data.download import cache_dir

    folder = cache_dir() / "mlflow-runs" / run_id
    if all((folder / name).exists() for name in RUN_FILES):
        return folder
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        try:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=str(folder),
                                                tracking_uri=c.tracking_uri)
        except Exception as exc:  # a run logged without artifacts, a server without its artifact store
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DlxError(f"{what}: cannot read {name} of MLflow run {run_id} from {c.tracking_uri}: {first}") from None
    return folder


def resolve(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """models:/NAME@ALIAS -> (a local copy of its run, laid out as a run directory; version)."""
    name, alias = parse(uri)
    c = client(tracking_uri)
    version = current(c, name, alias)
    if version is None:
        raise DlxError(f"model={uri}: no version of '{name}' has the alias '{alias}' (dlx promote run=DIR name={name})")
    if not version.run_id:
        raise DlxError(f"model={uri}: version {version.version} names no MLflow run (registered by hand?); promote a dlx run")
    return str(run_files(c, version.run_id, f"model={uri}")), str(version.version)
