"""Devices and processes: a GPU per job, CPU threads per job, start-up garbage collection, GPU fallbacks."""

from __future__ import annotations

import os
import sys


from conftest import TINY
from helpers import metrics


# --------------------------------------------------------------------------- devices
def test_gpu_per_job_from_job_number_and_visible_gpus(tmp_path, monkeypatch):
    from dlx.training import device

    assert device.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2"}) == ["0", "1", "2"]
    assert device.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert [device.gpu_for_job(n, ["0", "1", "2"]) for n in range(5)] == ["0", "1", "2", "0", "1"]
    assert device.gpu_for_job(3, []) is None

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    env = {"CUDA_VISIBLE_DEVICES": "4,5"}
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as in a fresh worker process
    assert device.pin_job_gpu(3, joblib, env) == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"
    assert device.pin_job_gpu(3, device.BASIC_LAUNCHER, {"CUDA_VISIBLE_DEVICES": "4,5"}) is None  # in-process jobs
    slurm = {"CUDA_VISIBLE_DEVICES": "4,5", "SLURM_JOB_ID": "1"}
    assert device.pin_job_gpu(3, joblib, slurm) is None and slurm["CUDA_VISIBLE_DEVICES"] == "4,5"

    # no CUDA_VISIBLE_DEVICES: count the GPUs with nvidia-smi (faked here: a server with 2)
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: H100 (UUID: a)'\necho 'GPU 1: H100 (UUID: b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    env = {}
    assert device.visible_gpus(env) == ["0", "1"]
    assert device.pin_job_gpu(5, joblib, env) == "1" and env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_parallel_jobs_share_the_cpu_cores():
    from dlx.training import device

    joblib = {"_target_": "hydra_plugins.dlx_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}
    assert device.threads_per_job(joblib, {}, cores=2) == 1
    assert device.threads_per_job(joblib | {"n_jobs": 4}, {}, cores=16) == 4
    assert device.threads_per_job(joblib | {"n_jobs": 8}, {}, cores=2) == 1  # never 0
    assert device.threads_per_job(joblib | {"n_jobs": -1}, {}, cores=8) == 1  # joblib's -1: one job per core
    assert device.threads_per_job(joblib | {"n_jobs": 1}, {}, cores=8) is None  # one job at a time: TF's default
    assert device.threads_per_job(joblib, {"SLURM_JOB_ID": "7"}, cores=8) is None  # Slurm's cpus_per_task decide
    assert device.threads_per_job({"_target_": device.BASIC_LAUNCHER}, {}, cores=8) is None
    assert device.threads_per_job({"_target_": "x.SubmititLocalLauncher", "timeout_min": 60}, {}, cores=8) is None


def test_later_in_process_jobs_still_free_the_earlier_jobs_models():
    """The first job in a process keeps what exists then (the imports) out of garbage collection,
    which made each later job's start ~0.4 s quicker; what jobs make (a model's reference cycles)
    must still be freed when the next job starts."""
    import gc
    import weakref

    from dlx.training import device

    device.seed_everything(0)
    assert gc.get_freeze_count() > 0

    class Layer:
        pass

    gc.disable()  # no automatic collection in between: only the next job's start may free it
    try:
        a, b = Layer(), Layer()
        a.peer, b.peer = b, a
        ref = weakref.ref(a)
        del a, b
        assert ref() is not None
        device.seed_everything(0)
        assert ref() is None
    finally:
        gc.enable()


def test_start_up_collects_garbage_less_often_until_the_training_starts(tmp_path, monkeypatch):
    """`dlx` raises the collector's thresholds while TensorFlow, Keras and MLflow load (they cost
    1.5 s of ~4.9 s of CPU here with the defaults); a job brings the process's own back before
    it trains, and `end` with nothing begun changes nothing."""
    import gc

    from conftest import tiny_cfg
    from dlx import startup
    from dlx.commands.train import train
    from dlx.training import loop

    own = gc.get_threshold()
    startup.end()  # nothing begun: nothing changes
    assert gc.get_threshold() == own
    seen = []
    real_fit = loop.fit

    def fit(*args, **kwargs):
        seen.append(gc.get_threshold())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(loop, "fit", fit)
    startup.begin()
    try:
        startup.begin()  # a second begin keeps the thresholds to restore
        assert gc.get_threshold() == startup.STARTUP_THRESHOLDS != own
        train(tiny_cfg("trainer.epochs=1"), tmp_path / "run")
    finally:
        startup.end()
    assert seen == [own]
    assert gc.get_threshold() == own


def test_threads_option_is_used_and_checked(dlx, workdir):
    dlx("train", *TINY, "trainer.epochs=1", "logger=none", "trainer.threads=1", "hydra.run.dir=r", check=True)
    assert metrics(workdir / "r")["test_accuracy"] > 0.3
    assert "TensorFlow CPU threads: 1 within ops, 1 across ops" in (workdir / "r/train.log").read_text()
    bad = dlx("train", *TINY, "trainer.threads=0", "logger=none", "hydra.run.dir=bad")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith(
        "trainer.threads: 0 is outside the allowed range [1, 4096]")
    assert not (workdir / "bad").exists()


def test_gpu_options_fall_back_to_cpu_with_one_line_each(dlx, workdir):
    dlx("train", *TINY, "trainer.epochs=1", "logger=none", "trainer.strategy=mirrored", "trainer.precision=mixed_float16",
        "trainer.devices=[0]", "trainer.jit_compile=true", "hydra.run.dir=r", check=True)
    log = (workdir / "r/train.log").read_text()
    for line in ("trainer.devices=[0]: no GPU in use, running on CPU",
                 "trainer.strategy=mirrored: no GPU in use, running on CPU with the default strategy",
                 "trainer.precision=mixed_float16: no GPU in use, running in float32 on CPU"):
        assert log.count(line) == 1, line
    assert metrics(workdir / "r")["test_accuracy"] > 0.3
