"""dlx: a config-driven deep-learning experiment runner (Hydra + Keras 3 + TensorBoard + MLflow)."""

import hashlib

from omegaconf import OmegaConf

__version__ = "0.1.0"

JOB_DIR_MAX = 120  # characters of a sweep job's directory name (file systems allow 255 bytes)


def job_dir_name(num: object, overrides: str) -> str:
    """A sweep job's directory: its number and overrides (`3_model=cnn,optimizer.lr=0.01`), so
    that `ls` and TensorBoard's run list say what each job is. Slashes in values become `_`;
    a name that would be too long is cut and ends in a hash of the whole."""
    name = f"{num}_{overrides}".replace("/", "_").rstrip("_") if overrides else str(num)
    if len(name) > JOB_DIR_MAX:
        name = name[: JOB_DIR_MAX - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


# Registered on import, so that every process that runs a job (a joblib worker, a Slurm node)
# has it when Hydra resolves hydra.sweep.subdir there.
if not OmegaConf.has_resolver("dlx.job_dir"):
    OmegaConf.register_new_resolver("dlx.job_dir", job_dir_name)
