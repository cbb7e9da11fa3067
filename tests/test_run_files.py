"""Damaged run files and a full disk: one line and exit 2, never a traceback; a failed write
keeps the previous file and leaves no temporary behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY


@pytest.fixture
def run(dlx, workdir) -> Path:
    dlx("train", *TINY, "logger=none", "hydra.run.dir=run", check=True)
    return workdir / "run"


def one_line_error(proc, command: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"dlx {command}: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.slow
def test_truncated_run_files_are_one_line(dlx, run):
    model = run / "model.keras"
    saved = model.read_bytes()
    truncate(model)
    message = one_line_error(dlx("eval", f"run={run}"), "eval")
    assert f"{model}: not a readable Keras model" in message
    assert "File not found" not in message  # what Keras says of a truncated archive that exists
    model.write_bytes(saved)

    config = run / ".hydra" / "config.yaml"
    text = config.read_text()
    config.write_text(text[: len(text) // 3] + "\n  bad: [unclosed\n")
    assert ".hydra/config.yaml is not a readable config" in one_line_error(dlx("eval", f"run={run}"), "eval")
    config.write_text("")
    assert "has no model and dataset" in one_line_error(dlx("predict", f"run={run}", "inputs=x.png"), "predict")
    config.write_text(text)
    assert dlx("eval", f"run={run}").returncode == 0


@pytest.mark.slow
def test_a_truncated_resume_state_is_one_line(dlx, workdir):
    from helpers import start, wait_for

    proc = start(workdir, "train", *TINY, "trainer.epochs=200", "trainer.early_stopping.enabled=false", "logger=none",
                 "hydra.run.dir=killed")
    state = workdir / "killed" / "checkpoints" / "resume" / "state.json"
    wait_for(state.is_file, what="the first epoch's resume state")
    proc.kill()
    proc.wait()
    truncate(state, 0.4)
    message = one_line_error(dlx("train", "resume=killed"), "train")
    assert f"{state.resolve()}: not a readable resume state" in message or f"{state}: not a readable resume state" in message


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MB file system (tmpfs), where the machine lets us mount one."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def fill(disk: Path, leave: int) -> None:
    stats = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))


def test_a_full_disk_keeps_the_last_checkpoint_and_no_temporary(tiny_disk):
    import keras

    from dlx.errors import DlxError
    from dlx.training.callbacks import save_keras
    from dlx.training.state import load_groups, save_groups

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(10)])
    best = tiny_disk / "best.keras"
    save_keras(model, best)
    before = best.read_bytes()
    state = tiny_disk / "state.npz"
    save_groups(state, v=[np.ones(10)])
    fill(tiny_disk, leave=8_000)
    with pytest.raises(DlxError, match=rf"could not write {best}: No space left on device; the previous version is kept"):
        save_keras(model, best)
    with pytest.raises(DlxError, match="No space left on device"):
        save_groups(state, v=[np.zeros(200_000)])
    assert best.read_bytes() == before and keras.saving.load_model(best) is not None
    assert load_groups(state)["v"][0].tolist() == [1.0] * 10
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["best.keras", "filler", "state.npz"]  # no .tmp.* left
