"""`dlx train`: config -> data -> model -> the training loop -> run directory + tracking."""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlx.errors import DlxError

log = logging.getLogger("dlx.train")


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain values (enums as their names), the form saved in the run dir."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def ns(tree: Any) -> Any:
    """Attribute access over a plain dict tree (`cfg.model.hidden`), for builders."""
    if isinstance(tree, dict):
        return SimpleNamespace(**{k: ns(v) for k, v in tree.items()})
    if isinstance(tree, list):
        return [ns(v) for v in tree]
    return tree


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
        for name in ("train.log", "data_spec.json"):
            (run_dir / name).unlink(missing_ok=True)
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
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


@contextmanager
def preemptible():
    """SIGTERM / SIGUSR1 (how Slurm announces preemption or the time limit) stop training at
    once with `Preempted`; the last completed epoch's state is already on disk."""
    import signal
    import threading

    from dlx.errors import Preempted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Preempted(signum)

    signals = [signal.SIGTERM, signal.SIGUSR1]
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def requeue_on_slurm() -> bool:
    """Ask Slurm to requeue this job (`scontrol requeue $SLURM_JOB_ID`); under submitit its own
    handler does it instead."""
    import os
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not requeue Slurm job %s: %s", job, exc)
        return False
    log.info("requeued Slurm job %s; it continues from the last completed epoch", job)
    return True


def train(cfg: dict[str, Any], run_dir: Path, resume: bool = False,
          job_threads: int | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Train as `cfg` says, writing everything into `run_dir`; return (metrics, objects).
    With `resume`, continue the killed run in `run_dir` from its last completed epoch.
    `job_threads`: the CPU threads of a parallel sweep's job, when trainer.threads is null."""
    from dlx import config, sweeps
    from dlx.data import datasets
    from dlx.training import state as state_file

    c = ns(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = state_file.read(state_file.resume_dir(run_dir)) if resume else None
    if resume and state is None:
        log.info("resume: no completed epoch saved in %s; training it from the start", run_dir)
    with discard_run_dir_on_error(run_dir, keep=resume):
        data = datasets.load(c.dataset, config.reads_words(c.model.name))  # no TensorFlow yet: bad data and bad combinations fail fast
        config.check_model(c.model, c.regularization, c.optimizer, data)
        steps_per_execution = config.steps_per_execution(c.trainer, c.model.name)
        if c.trainer.threads is not None:
            config.positive("trainer.threads", c.trainer.threads, "a positive number of threads or null")
        from dlx import models
        from dlx.training import device, optim

        threads = c.trainer.threads or job_threads
        placement = device.configure(c.trainer.device, c.trainer.devices, c.trainer.strategy, c.trainer.precision, threads)
        device.seed_everything(c.trainer.seed, c.trainer.deterministic)
        with placement.scope():
            model = models.build(c.model, c.regularization, data.spec, c.optimizer, c.trainer)
        from dlx.tracking import Tracker

        tracker = Tracker(cfg, run_dir, run_name(), overrides=task_overrides(),
                          resume_run_id=(state or {}).get("mlflow_run_id"))
        trial = sweeps.job_trial(cfg.get("sweep"), sweeps.sweep_dir_of_job() or run_dir.parent)

    from dlx.training import loop

    gradients = models.uses_gradients(model)
    size = f"{model.count_params():,} parameters" if model.built else "size set by its solver"
    log.info("model %s: %s, device %s", c.model.name, size, placement.description)
    if not gradients and str(c.optimizer.name) != "newton":
        log.info("model %s is fitted without a gradient optimizer: optimizer=%s is not used", c.model.name, c.optimizer.name)
    steps = optim.steps_per_epoch(len(data.train), c.trainer.batch_size)
    with placement.scope():
        models.compile(
            model, data.spec,
            optimizer=optim.build(c.optimizer, steps, c.trainer.epochs) if gradients else None,
            # a few large steps gain nothing from running several per call, and pay for tracing them
            steps_per_execution=steps_per_execution if gradients else 1,
            jit_compile="auto" if c.trainer.jit_compile is None else c.trainer.jit_compile,
        )
    data.spec.save(run_dir / "data_spec.json")
    from dlx import startup
    from dlx.errors import Preempted

    startup.end()  # everything the training needs is imported
    try:
        pretrain_seconds = None
        if getattr(model, "pretraining", None) is not None:
            if state is not None and (run_dir / config.PRETRAINED_FILE).is_file():
                model.pretraining.from_run = str(run_dir)  # pretrained before it was killed
            pretrain_seconds = loop.pretrain(model, data, cfg["trainer"], run_dir, tracker.log_metrics)
        family = models.family(c.model.name)
        extra = family.callbacks(model, data, cfg, run_dir) if hasattr(family, "callbacks") else []
        pruning = [sweeps.pruning_callback(trial, c.trainer.early_stopping.monitor)] if trial is not None else []
        with preemptible():
            result = loop.fit(model, data, cfg["trainer"], run_dir, tracker.callbacks() + extra + pruning,
                              resume=state is not None, extra_state={"mlflow_run_id": tracker.run_id})
        model.save(run_dir / "model.keras")
        test_batches = loop.in_order(data.test.x, data.test.y, c.trainer.batch_size)  # also the figures' predictions
        test = model.evaluate(test_batches, return_dict=True, verbose=0)
        metrics = {f"test_{k}": float(v) for k, v in test.items()}
        if hasattr(family, "scores"):  # what model.evaluate cannot compute (BLEU of decoded captions)
            metrics |= family.scores(model, data, cfg)
        metrics |= {
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            f"best_{cfg['trainer']['early_stopping']['monitor']}": result.best_value,
            "train_seconds": round(result.seconds, 3),
            "validation_seconds": round(result.validation_seconds, 3),
            "checkpoint_seconds": round(result.checkpoint_seconds, 3),
            "params": int(model.count_params()),
        }
        if pretrain_seconds is not None:
            metrics["pretrain_seconds"] = round(pretrain_seconds, 3)
        if result.resumed_from:
            metrics["resumed_from_epoch"] = result.resumed_from
        pruned_at = pruning[0].pruned_at if pruning else None
        if pruned_at is not None:
            metrics["pruned_at_epoch"] = pruned_at
        metrics |= getattr(model, "summary_metrics", {})
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        plot_dir = run_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        for name, png in figures(family, model, data, result, plot_dir, test_batches).items():
            tracker.log_image(name, png, step=result.epochs_run)
        artifacts = [run_dir / ".hydra", run_dir / "metrics.json", run_dir / "data_spec.json", run_dir / "model.keras",
                     run_dir / config.PRETRAINED_FILE, plot_dir]
        tracker.finish(metrics, artifacts, pruned=pruned_at is not None)
        shutil.rmtree(state_file.resume_dir(run_dir), ignore_errors=True)  # finished: best/last .keras remain
    except Preempted as exc:
        tracker.suspend()
        requeue_on_slurm()
        saved = state_file.read(state_file.resume_dir(run_dir))
        done = f"state saved at the end of epoch {saved['epoch']}" if saved else "no epoch had finished"
        raise Preempted(exc.signum, f"stopped by signal {exc.signum}; {done}; continue with: dlx train resume={run_dir}") from None
    except BaseException:
        tracker.fail()
        raise

    scores = ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("test_"))
    log.info("test: %s (best epoch %d of %d, %.1fs)", scores, result.best_epoch, result.epochs_run, result.seconds)
    for line in tracker.describe():
        log.info(line)
    return metrics, {"model": model, "data": data, "history": result.history, "fit": result, "tracker": tracker}


def figures(family, model, data, result, plot_dir: Path, test_batches) -> dict[str, Path]:
    """Learning curves, and by task: confusion matrix, decision boundary (2-D inputs), fit plot,
    or what an unsupervised family draws (filters, reconstructions). Returns the figures worth
    logging as images. `test_batches`: the test split as it was evaluated (`loop.in_order`)."""
    from dlx import plots

    plots.learning_curves(result.history, plot_dir / "learning_curves.png")
    if hasattr(family, "figures"):  # unsupervised and sequence families draw their own
        return family.figures(model, data, plot_dir)
    out = model.predict(test_batches, verbose=0)
    spec = data.spec
    if spec.task == "regression":
        return {"fit": plots.regression_fit(data.test.x, data.test.y, out, spec, plot_dir / "fit.png")}
    cm = confusion(data.test.y, out.argmax(axis=1), spec.num_classes)
    shown = {"confusion_matrix": plots.confusion_matrix(cm, spec.class_names, plot_dir / "confusion_matrix.png")}
    if spec.kind == "tabular" and spec.input_shape == (2,):
        shown["decision_boundary"] = plots.decision_boundary(model, data.test.x, data.test.y, spec, plot_dir / "decision_boundary.png")
    return shown


def confusion(y_true, y_pred, num_classes: int):
    import numpy as np

    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best monitored validation value (what sweepers optimise),
    as a `PrunedValue` when Optuna's pruner stopped the job."""
    import os

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
    # a resumed run's directory (or a resumed sweep's job directory) is not ours to remove
    keep = (resume_key is not None and not multirun) or str(resume_key).lower() == "true"
    job_threads = None
    with discard_run_dir_on_error(run_dir, keep=keep):
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
            # a job that Slurm requeued after a preemption continues where it stopped
            resume = resume or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        else:
            resume = resume_key is not None  # the CLI has checked DIR and pointed hydra.run.dir at it
            if resume and (run_dir / "metrics.json").is_file():
                raise DlxError(f"resume={resume_key}: that run finished (metrics.json exists); nothing to resume")
    metrics, _ = train(config, run_dir, resume=resume, job_threads=job_threads)
    value = metrics[f"best_{monitor}"]
    return PrunedValue(value) if metrics.get("pruned_at_epoch") else value
