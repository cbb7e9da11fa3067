"""`dlx train`: config -> data -> model -> the training loop -> run directory + tracking."""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlx.config import plain
from dlx.errors import DlxError

log = logging.getLogger("dlx.train")


@contextmanager
def discard_run_dir_on_error(run_dir: Path, keep: bool = False):
    """A run that fails while setting up leaves nothing behind: remove what Hydra wrote for it
    (unless `keep`: a resumed run's directory is not ours to remove)."""
    try:
        yield
    except DlxError:
        if keep:
            raise
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        for name in ("train.log", "data_spec.json", "run.json"):
            (run_dir / name).unlink(missing_ok=True)
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
            here = Path.cwd().resolve()
            for parent in run_dir.resolve().parents:  # outputs/<date>/ and outputs/ when they held only this run
                if parent == here or here not in parent.parents or any(parent.iterdir()):
                    break
                parent.rmdir()
        raise


def run_name() -> str:
    """The job's overrides (`model=cnn,optimizer.lr=0.01`; in a sweep, those of the keys it
    varies), or 'defaults'."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dlx import job_label

    try:
        hc = HydraConfig.get()
    except ValueError:  # called outside Hydra (tests calling train() directly)
        return "defaults"
    if hc.mode == RunMode.MULTIRUN:
        return job_label(list(hc.overrides.task), hc.sweep.dir) or "defaults"
    return hc.job.override_dirname or "defaults"


def task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def resume_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """`dlx train resume=DIR [overrides]`: (the run's own overrides, then the given ones, with its
    directory as the run directory; the Hydra flags, passed on as they are). The composed config
    must equal the one the run was started with; checked here, before anything is written."""
    import yaml
    from hydra import compose, initialize_config_dir

    from dlx import schemas
    from dlx.tracking import flatten

    overrides, flags = split_hydra_flags(args)
    value = next(a.split("=", 1)[1] for a in overrides if a.startswith("resume="))
    if value[:1] == "'" and value[-1:] == "'":  # quoted by quote_paths
        value = value[1:-1].replace("\\'", "'")
    if value == "last":  # the newest run under outputs/ (outputs/<date>/<time>: the names sort by time)
        runs = sorted(p.parent.parent for p in Path("outputs").glob("*/*/.hydra/config.yaml"))
        if not runs:
            raise DlxError("resume=last: no run in outputs/ of this directory")
        value = str(runs[-1])
        log.info("resume=last: %s", value)
    if value.lower() in ("true", "false", "null", ""):
        raise DlxError(f"resume={value}: resume=true is for re-running a sweep (-m); to continue one run give its directory: resume=DIR")
    run = Path(value).expanduser()
    saved_file = run / ".hydra" / "config.yaml"
    if not saved_file.is_file():
        raise DlxError(f"resume={value}: not a dlx train run directory (no .hydra/config.yaml)")
    try:
        saved = yaml.safe_load(saved_file.read_text()) or {}
    except yaml.YAMLError:
        raise DlxError(f"resume={value}: its .hydra/config.yaml is not readable YAML (truncated?)") from None
    if not isinstance(saved, dict) or "trainer" not in saved:
        raise DlxError(f"resume={value}: not a dlx train run directory (its config has no trainer)")
    overrides_file = run / ".hydra" / "overrides.yaml"
    before = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    before = [o for o in before or [] if not o.startswith("resume=")]
    task = before + [a for a in overrides if not a.startswith(("hydra.", "hydra/")) and a not in before]
    own = _flag_value(flags, ("--config-dir", "-cd"))  # your own config groups (a family of your own)
    search = [f"hydra.searchpath=[file://{Path(own).expanduser().resolve()}]"] if own else []
    with initialize_config_dir(config_dir=str(schemas.conf_dir()), version_base="1.3"):
        composed = plain(compose(config_name="train", overrides=task + search))
    now, then = flatten(composed), flatten(saved)
    changed = [k for k in sorted(set(now) | set(then)) if k != "resume" and now.get(k) != then.get(k)]
    if changed:
        k = changed[0]
        raise DlxError(f"resume={value}: the config differs from the run's at {k} ({then.get(k)!r} -> {now.get(k)!r}); "
                       "a resumed run keeps the config it was started with")
    return task + [f"hydra.run.dir={run}"], [a for a in overrides if a.startswith(("hydra.", "hydra/"))] + flags


# Hydra's command-line flags that take a value (`--config-dir DIR`, `-cd DIR`, `--cfg job`)
VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c", "--package", "-p",
               "--experimental-rerun")


def split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(key=value overrides, Hydra's flags with their values) of a command line."""
    overrides, flags, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            takes_value = arg in VALUE_FLAGS and i + 1 < len(args)
            flags += args[i:i + 2] if takes_value else [arg]
            i += 2 if takes_value else 1
        else:
            overrides.append(arg)
            i += 1
    return overrides, flags


def _flag_value(flags: list[str], names: tuple[str, ...]) -> str | None:
    for i, flag in enumerate(flags):
        if flag in names and i + 1 < len(flags):
            return flags[i + 1]
        for name in names:
            if flag.startswith(name + "="):
                return flag.split("=", 1)[1]
    return None


def train(cfg: dict[str, Any], run_dir: Path, resume: bool = False,
          job_threads: int | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Train as `cfg` says, writing everything into `run_dir`; return (metrics, objects).
    With `resume`, continue the killed run in `run_dir` from its last completed epoch.
    `job_threads`: the CPU threads of a parallel sweep's job, when trainer.threads is null."""
    from dlx import family as contract
    from dlx import sweeps, tracking
    from dlx.config import ns
    from dlx.data import datasets
    from dlx.training import state as state_file

    if isinstance(cfg.get("model"), dict) and not cfg["model"].get("name"):
        cfg["model"]["name"] = contract.family_name(cfg["model"])  # a family of your own: its module's name
    c = ns(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    from dlx.training import multi_worker

    # a multi_worker process other than the chief continues from the chief's saved epoch
    state_dir = state_file.resume_dir(multi_worker.CHIEF_RUN_DIR or run_dir)
    state = state_file.read(state_dir) if resume else None
    if resume and state is None:
        log.info("resume: no completed epoch saved in %s; training it from the start", run_dir)
    with discard_run_dir_on_error(run_dir, keep=resume):
        # no TensorFlow yet (unless a model of your own imports it): bad data and bad combinations fail fast
        family = contract.resolve(cfg["model"])
        name = c.model.name
        data = datasets.load(c.dataset, family.reads_words())
        pretrains = getattr(getattr(c.model, "pretrain", None), "enabled", False)
        if family.fit_mode(c.model, c.optimizer) != "steps" or pretrains:  # streamed images are decoded for it
            data = datasets.materialize(data, f"model={name} {'pretrains layer by layer' if pretrains else 'needs every example at once'}")
        contract.check_model(family, c.model, c.regularization, c.optimizer, data)
        mode = family.fit_mode(c.model, c.optimizer)
        steps_per_execution = contract.steps_per_execution(family, c.trainer)
        if c.trainer.threads is not None:
            contract.positive("trainer.threads", c.trainer.threads, "a positive number of threads or null")
        from dlx.training import device, optim

        steps = optim.steps_per_epoch(len(data.train), c.trainer.batch_size)
        # trainer.epochs=null becomes a number here, so the run's MLflow params show what it trained for
        cfg["trainer"]["epochs"] = c.trainer.epochs = optim.epochs(c.trainer, steps, mode)
        cfg["trainer"]["eval_batch_size"] = c.trainer.eval_batch_size = optim.eval_batch_size(c.trainer, data.spec.input_shape)
        es = cfg["trainer"]["early_stopping"]
        es["patience"] = c.trainer.early_stopping.patience = optim.patience(c.trainer.early_stopping, c.trainer.epochs)
        threads = c.trainer.threads or job_threads
        placement = device.configure(c.trainer.device, c.trainer.devices, c.trainer.strategy, c.trainer.precision, threads,
                                     c.trainer.collective_timeout_s)
        if str(c.trainer.strategy) == "multi_worker" and steps_per_execution != 1:
            # several steps per call hang in Keras' multi-step loop under MultiWorkerMirroredStrategy
            log.info("trainer.strategy=multi_worker: one step per call (steps_per_execution=1)")
            steps_per_execution = 1
        device.seed_everything(c.trainer.seed, c.trainer.deterministic)
        with placement.scope():
            model = family.build_model(c.model, data.spec, reg=c.regularization, optimizer=c.optimizer, trainer=c.trainer)
        from dlx.tracking import Tracker

        tracker = Tracker(cfg, run_dir, run_name(), overrides=task_overrides(),
                          resume_run_id=(state or {}).get("mlflow_run_id"))
        tracker.write_run_json()

    from dlx import models, plots, startup
    from dlx.errors import Preempted
    from dlx.family import model_hook
    from dlx.families._shared import PRETRAINED_FILE
    from dlx.training import loop
    from dlx.training.batches import in_order
    from dlx.training.callbacks import save_keras
    from dlx.training.preemption import after_preemption, launcher_max_requeues, preemptible

    try:  # from here on the MLflow run exists: whatever fails ends it FAILED
        # an Optuna trial is the chief's to report (multi_worker: the other processes train along)
        trial = None if multi_worker.CHIEF_RUN_DIR else sweeps.job_trial(cfg.get("sweep"), tracking.sweep_dir_of_job() or run_dir.parent)
        gradients = mode == "steps" or (mode == "full_batch" and str(c.optimizer.name) != "newton")
        size = f"{model.count_params():,} parameters" if model.built else "size set by its solver"
        log.info("model %s: %s, fit mode %s, device %s", name, size, mode, placement.description)
        if not gradients and str(c.optimizer.name) != "newton":
            log.info("model %s is fitted without a gradient optimizer: optimizer=%s is not used", name, c.optimizer.name)
        with placement.scope():
            models.compile(
                model, data.spec,
                optimizer=optim.build(c.optimizer, steps, c.trainer.epochs) if gradients else None,
                # a few large steps gain nothing from running several per call, and pay for tracing them
                steps_per_execution=steps_per_execution if mode == "steps" else 1,
                jit_compile="auto" if c.trainer.jit_compile is None else c.trainer.jit_compile,
                objective=family.objective(model, data.spec),
            )
        data.spec.save(run_dir / "data_spec.json")
        if "split" in data.extra:  # which rows or files went where, for a dataset that splits itself
            (run_dir / "split.json").write_text(json.dumps(data.extra["split"]) + "\n")
        startup.end()  # everything the training needs is imported
        pretrain_seconds = None
        pretraining = model_hook(model, "pretraining")
        if pretraining is not None:
            if state is not None and (run_dir / PRETRAINED_FILE).is_file():
                pretraining.from_run = str(run_dir)  # pretrained before it was killed
            pretrain_seconds = loop.pretrain(model, data, cfg["trainer"], run_dir, tracker.log_metrics, steps_per_execution)
        extra = family.callbacks(model, data, cfg, run_dir)
        pruning = [sweeps.pruning_callback(trial, c.trainer.early_stopping.monitor)] if trial is not None else []
        with preemptible(), multi_worker.peers_fail_cleanly(placement.strategy, state_dir):
            result = loop.fit(model, data, cfg["trainer"], run_dir, tracker.callbacks() + extra + pruning, mode=mode,
                              resume=state is not None, extra_state={"mlflow_run_id": tracker.run_id},
                              resume_from=state_dir)
        save_keras(model, run_dir / "model.keras")
        test_batches = in_order(data.test.x, data.test.y, c.trainer.eval_batch_size)  # also the figures' predictions
        test = model.evaluate(test_batches, return_dict=True, verbose=0)
        metrics = {f"test_{k}": float(v) for k, v in test.items()}
        metrics |= family.scores(model, data, cfg)  # what model.evaluate cannot compute (BLEU of decoded captions)
        metrics |= {
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            f"best_{cfg['trainer']['early_stopping']['monitor']}": result.best_value,
            "train_seconds": round(result.seconds, 3),
            "validation_seconds": round(result.validation_seconds, 3),
            "checkpoint_seconds": round(result.checkpoint_seconds, 3),
            "params": int(model.count_params()),
            "replicas": int(getattr(placement.strategy, "num_replicas_in_sync", 1)),
        }
        if pretrain_seconds is not None:
            metrics["pretrain_seconds"] = round(pretrain_seconds, 3)
        if result.resumed_from:
            metrics["resumed_from_epoch"] = result.resumed_from
        pruned_at = pruning[0].pruned_at if pruning else None
        if pruned_at is not None:
            metrics["pruned_at_epoch"] = pruned_at
        metrics |= model_hook(model, "summary_metrics", {})
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_dir = run_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        for fig, png in plots.run_figures(family, model, data, result, plot_dir, test_batches).items():
            tracker.log_image(fig, png, step=result.epochs_run)
        artifacts = [run_dir / ".hydra", run_dir / "metrics.json", run_dir / "data_spec.json", run_dir / "model.keras",
                     run_dir / "run.json", run_dir / PRETRAINED_FILE, plot_dir]
        from dlx.mlflow_model import example_inputs

        tracker.log_model(data.spec, family.task, example_inputs(data))
        tracker.finish(metrics, artifacts, pruned=pruned_at is not None)
        shutil.rmtree(state_file.resume_dir(run_dir), ignore_errors=True)  # finished: best/last .keras remain
    except Preempted as exc:
        tracker.suspend()
        again = after_preemption(exc.signum, launcher_max_requeues())
        done = f"stopped by signal {exc.signum}; {state_file.saved_epoch(state_file.resume_dir(run_dir))}"
        if again and os.environ.get("SUBMITIT_EXECUTOR"):
            # no result for submitit to hand the launcher: it waits for the requeued run's result
            raise SystemExit(f"dlx train: {done}; Slurm requeued the job, which continues from there")
        how = "Slurm requeued the job, which continues from there" if again else f"continue with: dlx train resume={run_dir}"
        raise Preempted(exc.signum, f"{done}; {how}") from None
    except BaseException:
        tracker.fail()
        raise

    scores = ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("test_"))
    log.info("test: %s (best epoch %d of %d, %.1fs)", scores, result.best_epoch, result.epochs_run, result.seconds)
    for line in tracker.describe():
        log.info(line)
    return metrics, {"model": model, "data": data, "history": result.history, "fit": result, "tracker": tracker}


def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best monitored validation value (what sweepers optimise),
    as a `PrunedValue` when Optuna's pruner stopped the job."""

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dlx.sweeps import PrunedValue
    from dlx.training import device

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    config = plain(cfg)
    monitor = config["trainer"]["early_stopping"]["monitor"]
    resume_key = config.get("resume")
    multirun = hc.mode == RunMode.MULTIRUN
    # a Slurm job started again after a requeue continues the run its earlier start began
    from dlx.training import preemption, state as state_file

    requeued = preemption.restarts() > 0 and (state_file.resume_dir(run_dir) / "state.json").is_file()
    # a resumed run's directory (or a resumed sweep's job directory) is not ours to remove
    keep = (resume_key is not None and not multirun) or str(resume_key).lower() == "true" or requeued
    job_threads = None
    with discard_run_dir_on_error(run_dir, keep=keep):
        from dlx.schemas import check_command

        check_command("train", config)  # every value in its declared range, before anything loads
        if config.get("sweep") and not multirun:
            raise DlxError("sweep=NAME runs an Optuna search over many jobs: add -m (dlx train -m sweep=NAME)")
        if multirun:
            if resume_key is not None and str(resume_key).lower() not in ("true", "false"):
                raise DlxError(f"resume={resume_key}: in a sweep (-m) use resume=true with hydra.sweep.dir=<the sweep's directory>; "
                               "resume=DIR continues one run")
            gpu = device.pin_job_gpu(int(hc.job.num), str(hc.launcher.get("_target_", "")))  # before TensorFlow starts
            if gpu is not None:
                log.info("job %s: GPU %s (CUDA_VISIBLE_DEVICES)", hc.job.num, gpu)
            job_threads = device.threads_per_job(OmegaConf.to_container(hc.launcher))
            if job_threads is not None and config["trainer"]["threads"] is None:
                log.info("job %s: %d CPU thread(s) for TensorFlow (%s jobs at once)", hc.job.num, job_threads, hc.launcher.n_jobs)
            resume = str(resume_key).lower() == "true"
            done = run_dir / "metrics.json"
            if resume and done.is_file():  # a re-run killed sweep skips the jobs that finished
                metrics = json.loads(done.read_text())
                log.info("resume: job %s finished before (%s); skipped", hc.job.num, done)
                value = metrics[f"best_{monitor}"]
                return PrunedValue(value) if metrics.get("pruned_at_epoch") else value
            resume = resume or requeued
        else:
            resume = resume_key is not None or requeued  # resume=DIR: the CLI has pointed hydra.run.dir at it
            if requeued and resume_key is None:
                log.info("Slurm started job %s again (restart %d): continuing %s", os.environ.get("SLURM_JOB_ID"),
                         preemption.restarts(), run_dir)
            if resume and (run_dir / "metrics.json").is_file():
                raise DlxError(f"resume={resume_key}: that run finished (metrics.json exists); nothing to resume")
        from dlx.training import multi_worker

        place = multi_worker.role(str(config["trainer"]["strategy"]))
    helper = place is not None and place[0] != 0
    if helper:  # another process writes the run: this one trains in a private folder, without loggers
        import tempfile

        multi_worker.CHIEF_RUN_DIR, run_dir = run_dir, Path(tempfile.mkdtemp(prefix=f"dlx-worker{place[0]}-"))
        config["logger"]["tensorboard"] = False
        config["logger"]["mlflow"]["enabled"] = False
        for handler in [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]:
            logging.getLogger().removeHandler(handler)  # the chief's train.log is the run's log
        log.info("multi_worker process %d of %d; the chief writes %s", place[0], place[1], multi_worker.CHIEF_RUN_DIR)
    try:
        metrics, _ = train(config, run_dir, resume=resume, job_threads=job_threads)
    finally:
        if helper:
            shutil.rmtree(run_dir, ignore_errors=True)
    value = metrics[f"best_{monitor}"]
    return PrunedValue(value) if metrics.get("pruned_at_epoch") else value
