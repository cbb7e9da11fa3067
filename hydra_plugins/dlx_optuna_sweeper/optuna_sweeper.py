"""The sweeper plugin itself (see the package docstring)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from dlx import sweeps
from dlx.errors import DlxError

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
TRIALS_FILE = "trials.csv"


def distributions(params: dict[str, Any]) -> tuple[dict, dict]:
    """Optuna distributions from the `sweep.params` search space, and for categorical keys the
    override text of each choice (Optuna's choices must be plain scalars; lists become text)."""
    import optuna.distributions as d

    if not params:
        raise DlxError("sweep.params: the search space is empty; give at least one key, e.g. "
                       "optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}")
    dists, texts = {}, {}
    for key, spec in params.items():
        where = f"sweep.params.{key}"
        if not isinstance(spec, dict) or "type" not in spec:
            raise DlxError(f"{where}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
        kind = spec["type"]
        try:
            if kind in ("float", "int"):
                low, high = spec["low"], spec["high"]
                if not low < high:
                    raise DlxError(f"{where}: low ({low}) must be below high ({high})")
                if spec.get("log") and low <= 0:
                    raise DlxError(f"{where}: log scale needs low > 0, got {low}")
                if kind == "float":
                    dists[key] = d.FloatDistribution(float(low), float(high), log=bool(spec.get("log", False)), step=spec.get("step"))
                else:
                    dists[key] = d.IntDistribution(int(low), int(high), log=bool(spec.get("log", False)), step=int(spec.get("step", 1)))
            elif kind == "categorical":
                choices = spec["choices"]
                if not isinstance(choices, (list, tuple)) or not choices:
                    raise DlxError(f"{where}: choices must be a non-empty list")
                shown = [c if isinstance(c, (bool, int, float, str)) or c is None else _override_text(c) for c in choices]
                texts[key] = {s: _override_text(c) for s, c in zip(shown, choices)}
                dists[key] = d.CategoricalDistribution(shown)
            else:
                raise DlxError(f"{where}: unknown type '{kind}'; choose one of: float, int, categorical")
        except KeyError as missing:
            raise DlxError(f"{where}: type {kind} needs {missing.args[0]}") from None
        except ValueError as exc:  # optuna's own checks (step vs log, ...)
            raise DlxError(f"{where}: {exc}") from None
    return dists, texts


def _override_text(value: Any) -> str:
    """A value as Hydra override text: lists as [a,b], strings quoted when they need it."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


class OptunaSweeper(Sweeper):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------------ the study
    def _study(self, sweep: DictConfig, sweep_dir: Path, direction: str):
        import optuna

        sampler, pruner = sweeps.make_sampler(sweep), sweeps.make_pruner(sweep)
        url = sweeps.storage_url(sweep.storage, sweep_dir)
        storage = sweeps.open_storage(url)
        existing = [s for s in optuna.get_all_study_summaries(storage) if s.study_name == sweep.name]
        if existing and not sweep.resume and existing[0].n_trials > 0:
            raise DlxError(f"sweep {sweep.name}: {sweep_dir} already holds a study with {existing[0].n_trials} trials; "
                           "add sweep.resume=true to continue it, or hydra.sweep.dir=... for a new search")
        if sweep.resume and not existing:
            log.info("sweep.resume=true: no study '%s' in %s yet; starting it", sweep.name, url)
        study = optuna.create_study(study_name=sweep.name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction=direction, load_if_exists=True)
        if study.direction.name.lower() != direction:
            raise DlxError(f"sweep.direction: the stored study '{sweep.name}' was made to {study.direction.name.lower()}, not {direction}")
        return study, url

    def _recover(self, study, sweep_dir: Path, monitor: str) -> None:
        """Trials a killed sweep left running: one whose job had finished (its metrics.json is
        there) is told its result; the others are failed and their parameters queued again."""
        from optuna.trial import TrialState

        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            done = [d / "metrics.json" for d in sweep_dir.glob(f"{trial.number}_*")] + [sweep_dir / str(trial.number) / "metrics.json"]
            done = [p for p in done if p.is_file()]
            if done:
                metrics = json.loads(done[0].read_text())
                if metrics.get("pruned_at_epoch"):
                    study.tell(trial.number, state=TrialState.PRUNED)
                else:
                    study.tell(trial.number, float(metrics[f"best_{monitor}"]))
                log.info("trial %d had finished before the kill; its result is kept", trial.number)
                continue
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, skip_if_exists=True)
            log.info("trial %d was cut off by the kill; failed, and its parameters queued again", trial.number)

    # ------------------------------------------------------------------ the loop
    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState

        from dlx.config import higher_is_better

        assert self.config is not None and self.launcher is not None
        sweep = self.config.get("sweep")
        if sweep is None:
            raise DlxError("hydra/sweeper=optuna needs a search space: pick one with sweep=NAME (conf/sweep/)")
        parsed = OverridesParser.create().parse_overrides(arguments)
        for override in parsed:
            if override.is_sweep_override():
                raise DlxError(f"{override.input_line}: an Optuna sweep takes its search space from sweep.params, "
                               "not from a,b lists on the command line")
        dists, texts = distributions(OmegaConf.to_container(sweep.params, resolve=True))
        monitor = self.config.trainer.early_stopping.monitor
        direction = sweeps.enum_name(sweep.direction) if sweep.direction is not None else (
            "maximize" if higher_is_better(monitor) else "minimize")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study, url = self._study(sweep, sweep_dir, direction)
        self._recover(study, sweep_dir, monitor)
        if not study.trials:
            for params in sweep.enqueue or []:
                study.enqueue_trial(_choices_shown(OmegaConf.to_container(params, resolve=True), dists, texts))
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        done = sum(t.state in finished for t in study.trials)
        if done:
            log.info("sweep %s: %d of %d trials finished before; continuing", sweep.name, done, sweep.n_trials)
        log.info("Optuna sweep %s: %s best_%s, %d trials, %s sampler, %s pruner; study in %s", sweep.name, direction, monitor,
                 sweep.n_trials, type(study.sampler).__name__, sweeps.enum_name(sweep.pruner), url)
        fixed = [a for a in arguments if not a.startswith(("sweep.trial=",))]
        returns: list = []
        failed_in_row = 0  # failed trials do not use up n_trials; too many in a row end the sweep
        while done < sweep.n_trials:
            batch = [study.ask(dists) for _ in range(min(int(sweep.n_jobs), sweep.n_trials - done))]
            overrides = [fixed + [f"{k}={texts[k][v] if k in texts else _override_text(v)}" for k, v in t.params.items()]
                         + [f"sweep.trial={t.number}"] for t in batch]
            results = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
            for trial, ret in zip(batch, results):
                value = ret._return_value if ret.status.name == "COMPLETED" else None
                failed_in_row = 0 if isinstance(value, (int, float)) and math.isfinite(value) else failed_in_row + 1
                if isinstance(value, sweeps.PrunedValue):
                    study.tell(trial.number, state=TrialState.PRUNED)
                    log.info("trial %d: pruned (%s)", trial.number, _params_text(trial.params))
                elif isinstance(value, (int, float)) and math.isfinite(value):
                    study.tell(trial.number, float(value))
                    log.info("trial %d: %s %.4f (%s)", trial.number, f"best_{monitor}", value, _params_text(trial.params))
                else:
                    study.tell(trial.number, state=TrialState.FAIL)
                    log.warning("trial %d failed (%s)", trial.number, _params_text(trial.params))
            returns.append(results)
            done = sum(t.state in finished for t in study.trials)
            if failed_in_row >= max(3, int(sweep.n_jobs)):
                write_results(study, sweep_dir, monitor, texts)
                raise DlxError(f"sweep {sweep.name}: {failed_in_row} trials in a row failed; see the jobs' train.log in {sweep_dir}")
        write_results(study, sweep_dir, monitor, texts)
        return returns


def _choices_shown(params: dict, dists: dict, texts: dict) -> dict:
    """An enqueued parameter set in the form the distributions hold (lists -> their text)."""
    out = {}
    for key, value in params.items():
        if key not in dists:
            raise DlxError(f"sweep.enqueue: {key} is not in sweep.params")
        if key in texts and not isinstance(value, (bool, int, float, str)):
            value = next((shown for shown, text in texts[key].items() if text == _override_text(value)), None)
            if value is None:
                raise DlxError(f"sweep.enqueue: {key}={params[key]} is not one of its choices")
        out[key] = value
    return out


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def write_results(study, sweep_dir: Path, monitor: str, texts: dict) -> None:
    """optimization_results.yaml (best parameters and value), trials.csv, and the optimization
    history and parallel-coordinates plots, in the sweep directory."""
    import warnings

    from optuna.trial import TrialState

    trials = study.trials
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState if any(t.state == state for t in trials)}
    results: dict[str, Any] = {"name": study.study_name, "direction": study.direction.name.lower(),
                               "metric": f"best_{monitor}", "trials": counts}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        results |= {
            "best_value": float(best.value),
            "best_trial": best.number,
            "best_params": {k: (texts[k][v] if k in texts and not isinstance(v, (bool, int, float)) else v) for k, v in best.params.items()},
            "best_overrides": [f"{k}={texts[k][v] if k in texts else _override_text(v)}" for k, v in best.params.items()],
        }
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
    study.trials_dataframe().to_csv(sweep_dir / TRIALS_FILE, index=False)
    if len(complete) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for name, plot in (("optimization_history", ovm.plot_optimization_history),
                           ("parallel_coordinates", ovm.plot_parallel_coordinate)):
            try:
                ax = plot(study, target_name=f"best_{monitor}")
                fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
                fig.set_size_inches(9, 5)
                fig.tight_layout()
                fig.savefig(sweep_dir / f"{name}.png", dpi=100)
                plt.close(fig)
            except Exception as exc:  # a plot is a convenience, never the reason a sweep fails
                log.warning("could not draw %s: %s", name, exc)
    log.info("sweep results: %s", json.dumps({k: results[k] for k in ("best_value", "best_overrides") if k in results}))
