"""dlx: a config-driven deep-learning experiment runner (Hydra + Keras 3 + TensorBoard + MLflow)."""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

JOB_DIR_MAX = 120  # characters of a sweep job's directory name (file systems allow 255 bytes)


@functools.lru_cache(maxsize=8)
def swept_keys(sweep_dir: str) -> frozenset[str]:
    """The keys a sweep varies: its `a,b` / range() / choice() overrides and an Optuna search
    space's keys, read from the multirun.yaml the sweeper writes before launching any job."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return frozenset()
    cfg = yaml.safe_load(path.read_text()) or {}
    task = ((cfg.get("hydra") or {}).get("overrides") or {}).get("task") or []
    keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(task) if o.is_sweep_override()}
    keys |= set(((cfg.get("sweep") or {}).get("params") or {}).keys())
    return frozenset(keys)


def job_label(overrides: list[str], sweep_dir: str | None) -> str:
    """What tells a sweep's jobs apart: the overrides of the keys the sweep varies
    (`model=cnn,optimizer.lr=0.01`); all of the job's overrides when that is not known."""
    keys = swept_keys(str(sweep_dir)) if sweep_dir else frozenset()
    hidden = ("sweep=", "sweep.", "resume=", "hydra.")
    picked = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in keys] if keys else \
        [o for o in overrides if not o.startswith(hidden)]
    return ",".join(picked)


def job_dir_name(num: object, overrides: list[str], sweep_dir: str | None = None) -> str:
    """A sweep job's directory: its number and what the sweep varies (`3_model=cnn,optimizer.lr=0.01`),
    so that `ls` and TensorBoard's run list say what each job is. Slashes in values become `_`;
    a name that would be too long is cut and ends in a hash of the whole."""
    label = job_label(list(overrides), sweep_dir)
    name = f"{num}_{label}".replace("/", "_") if label else str(num)
    if len(name) > JOB_DIR_MAX:
        name = name[: JOB_DIR_MAX - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


# Registered on import, so that every process that runs a job (a joblib worker, a Slurm node)
# has it when Hydra resolves hydra.sweep.subdir there.
if not OmegaConf.has_resolver("dlx.job_dir"):
    OmegaConf.register_new_resolver("dlx.job_dir", job_dir_name)

# conf/hydra/launcher/joblib.yaml extends the joblib plugin's schema of the same name on purpose.
# Set on import, so that it also holds in joblib workers, which compose each job's config.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
