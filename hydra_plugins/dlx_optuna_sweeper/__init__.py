"""dlx's Optuna sweeper: `dlx train -m sweep=NAME` (conf/sweep/NAME.yaml).

Why our own: hydra-optuna-sweeper pins Optuna < 3 and has no pruning. This one runs current
Optuna's ask/tell loop in the launching process and hands each batch of trials to whatever
Hydra launcher is configured (in-process, joblib, submitit/Slurm, ...). Jobs find their trial in
the study's storage (SQLite in the sweep directory by default) through `sweep.trial`, report
the monitored validation value each epoch, and stop when the pruner says so.
"""

from hydra_plugins.dlx_optuna_sweeper.optuna_sweeper import OptunaSweeper

__all__ = ["OptunaSweeper"]
