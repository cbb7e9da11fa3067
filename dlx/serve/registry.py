"""The champion model in MLflow's model registry: `dlx promote` moves it, `dlx serve` follows it.

A version's source is the run's model.keras; its tags hold the run directory (`dlx.run_dir`),
the dataset and the test accuracy measured when it was promoted.
"""

from __future__ import annotations

import re

from dlx.errors import DlxError

MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+)@(?P<alias>[\w-]+)$")


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


def resolve(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """models:/NAME@ALIAS -> (run directory, version)."""
    name, alias = parse(uri)
    version = current(client(tracking_uri), name, alias)
    if version is None:
        raise DlxError(f"model={uri}: no version of '{name}' has the alias '{alias}' (dlx promote run=DIR name={name})")
    return version.tags["dlx.run_dir"], str(version.version)
