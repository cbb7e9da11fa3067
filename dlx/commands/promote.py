"""`dlx promote run=DIR [name=dlx]`: make a run's model the champion, only if it is at least as good.

The book's rule, deploy only if better: the candidate and the current champion are evaluated now
on the test split of the same dataset (not on numbers recorded earlier); the `champion` alias
moves only if the candidate's test accuracy is at least the champion's. A server started with
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

    from dlx.rundir import open_run
    from dlx.commands.eval import evaluate
    from dlx.serve import registry

    path, cfg = open_run(run)
    with contextlib.redirect_stdout(io.StringIO()):  # evaluate() prints its table; one summary line here
        candidate = evaluate(str(path)).get("test_accuracy")
    if candidate is None:
        raise DlxError(f"run={run}: promotion compares test accuracy; model={cfg['model']['name']} has none")
    c = registry.client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        c.create_registered_model(name, description="dlx models; the champion alias is what dlx serve follows")
    except MlflowException:
        pass  # exists
    champion = registry.current(c, name, alias)
    if champion is not None:
        champ_dir = champion.tags.get("dlx.run_dir", "")
        _, champ_cfg = open_run(champ_dir)
        def data_of(c: dict) -> dict:  # collected training samples (dataset.extra) do not change the test split
            return {k: v for k, v in c["dataset"].items() if k != "extra"}

        if data_of(champ_cfg) != data_of(cfg):
            raise DlxError(f"run={run}: trained on other data than the champion ({champ_dir}); their test splits differ")
        with contextlib.redirect_stdout(io.StringIO()):
            held = evaluate(champ_dir)["test_accuracy"]
        if candidate < held:
            raise DlxError(f"run={run}: not promoted: test accuracy {candidate:.4f} is below the champion's {held:.4f} "
                           f"({name} version {champion.version})")
    version = c.create_model_version(name, source=str((path / "model.keras").resolve()), tags={
        "dlx.run_dir": str(path.resolve()), "dlx.dataset": cfg["dataset"]["name"], "test_accuracy": f"{candidate:.6f}"})
    c.set_registered_model_alias(name, alias, version.version)
    before = f" (champion's {held:.4f})" if champion is not None else " (first champion)"
    print(f"promoted: {name} version {version.version} is the {alias}, test accuracy {candidate:.4f}{before}")
    return {"name": name, "version": str(version.version), "test_accuracy": candidate}


def main(cfg: DictConfig) -> dict:
    return promote(str(Path(cfg.run)), cfg.name, cfg.alias, cfg.tracking_uri)
