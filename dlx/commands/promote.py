"""`dlx promote run=DIR|runs:/RUN_ID [name=dlx]`: make a run's model the champion, only if it is at least as good.

The book's rule, deploy only if better: the candidate and the current champion are evaluated now
on the test split of the same dataset (not on numbers recorded earlier; the champion from its
MLflow run's artifacts); the `champion` alias moves only if the candidate's test accuracy is at
least the champion's. The version is registered from the run's MLflow model (`runs:/<id>/model`),
so promotion works through any tracking server. A server started with
`dlx serve model=models:/NAME@champion` loads the new champion without a restart.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from dlx.errors import DlxError

log = logging.getLogger("dlx.promote")


def promote(run: str, name: str = "dlx", alias: str = "champion", tracking_uri: str | None = None) -> dict:
    import contextlib
    import io
    import json

    from dlx.commands.eval import evaluate
    from dlx.rundir import open_run
    from dlx.serve import registry

    c = registry.client(tracking_uri)
    from mlflow.exceptions import MlflowException

    if run.startswith("runs:/"):  # a run known to the tracking server, wherever it was trained
        run_id = run.removeprefix("runs:/").strip("/").split("/")[0]
        if not run_id.isalnum() or len(run_id) > 64:
            raise DlxError(f"run={run}: expected runs:/RUN_ID, the run id as MLflow shows it (letters and digits)")
        record = {"mlflow": {"tracking_uri": c.tracking_uri}}
    else:
        path, _ = open_run(run)
        record = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
        run_id = (record.get("mlflow") or {}).get("run_id")
        if not run_id:
            raise DlxError(f"run={run}: it was not tracked in MLflow (no run.json with an MLflow run id: trained with "
                           "logger.mlflow.enabled=false, or by an older dlx); the registry registers tracked runs")
    try:
        c.get_run(run_id)
    except MlflowException:
        raise DlxError(f"run={run}: MLflow run {run_id} is not in {c.tracking_uri} (it was tracked in "
                       f"{record['mlflow'].get('tracking_uri')}); promote with tracking_uri=THAT or MLFLOW_TRACKING_URI") from None
    if run.startswith("runs:/"):
        path = registry.run_files(c, run_id, f"run={run}")
    path, cfg = open_run(str(path))
    with contextlib.redirect_stdout(io.StringIO()):  # evaluate() prints its table; one summary line here
        candidate = evaluate(str(path)).get("test_accuracy")
    if candidate is None:
        raise DlxError(f"run={run}: promotion compares test accuracy; model={cfg['model']['name']} has none")
    try:
        c.create_registered_model(name, description="dlx models; the champion alias is what dlx serve follows")
    except MlflowException:
        pass  # exists
    champion = registry.current(c, name, alias)
    if champion is not None:
        champ_dir = registry.run_files(c, champion.run_id, f"{name} version {champion.version}")
        _, champ_cfg = open_run(str(champ_dir))

        def data_of(c: dict) -> dict:  # collected training samples (dataset.extra) do not change the test split
            return {k: v for k, v in c["dataset"].items() if k != "extra"}

        if data_of(champ_cfg) != data_of(cfg):
            raise DlxError(f"run={run}: trained on other data than the champion ({name} version {champion.version}); "
                           "their test splits differ")
        with contextlib.redirect_stdout(io.StringIO()):
            held = evaluate(str(champ_dir))["test_accuracy"]
        if candidate < held:
            raise DlxError(f"run={run}: not promoted: test accuracy {candidate:.4f} is below the champion's {held:.4f} "
                           f"({name} version {champion.version})")
    version = c.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id, tags={
        "dlx.dataset": cfg["dataset"]["name"], "test_accuracy": f"{candidate:.6f}"})
    c.set_registered_model_alias(name, alias, version.version)
    before = f" (champion's {held:.4f})" if champion is not None else " (first champion)"
    print(f"promoted: {name} version {version.version} is the {alias}, test accuracy {candidate:.4f}{before}")
    return {"name": name, "version": str(version.version), "test_accuracy": candidate}


def main(cfg: DictConfig) -> dict:
    return promote(str(Path(cfg.run)), cfg.name, cfg.alias, cfg.tracking_uri)
