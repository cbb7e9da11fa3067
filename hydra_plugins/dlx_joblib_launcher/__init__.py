"""dlx's joblib launcher (`hydra/launcher=joblib`): Hydra's, with its workers warmed up while the
sweep is prepared, and quick to exit when it is over."""

from hydra_plugins.dlx_joblib_launcher.joblib_launcher import JoblibLauncher

__all__ = ["JoblibLauncher"]
