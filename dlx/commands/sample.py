"""`dlx sample run=DIR`: what a trained generative model draws, as PNG grids.

rbm / dbn: Gibbs chains started at test images (or noise), a frame every `steps_between` steps;
autoencoders: original / corrupted / reconstructed test inputs and the first layer's filters.
The PNGs go to <run>/samples/ (or `out`) and, when the run logged to TensorBoard, to its
`samples` images. The same `seed` draws the same samples.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dlx.commands._run import load_model, open_run
from dlx.commands.train import ns
from dlx.errors import DlxError


def generating_families() -> list[str]:
    from dlx.config import SCHEMAS

    return [name for name, schema in SCHEMAS["model"].items() if getattr(schema, "generates", False)]


def check(cfg) -> None:
    for key in ("n_chains", "n_frames", "steps_between", "n", "n_filters"):
        if getattr(cfg, key) < 1:
            raise DlxError(f"{key}: expected a positive count, got {getattr(cfg, key)}")
    if cfg.start not in ("test", "noise"):
        raise DlxError(f"start: expected test or noise, got '{cfg.start}'")


def sample(cfg) -> dict[str, Path]:
    check(cfg)
    path, run_cfg = open_run(cfg.run)
    name, able = run_cfg["model"]["name"], generating_families()
    if name not in able:
        raise DlxError(f"run={cfg.run}: model={name} does not generate samples; dlx sample works on runs of "
                       f"model={', '.join(able)} (ae, dae and sparse_ae are autoencoders)")
    from dlx.data import datasets

    data = datasets.load(ns(run_cfg["dataset"]))
    from dlx import models
    from dlx.training import device

    device.configure(run_cfg["trainer"]["device"])
    model = load_model(path, run_cfg, data.spec)
    out_dir = Path(cfg.out).expanduser() if cfg.out else path / "samples"
    pngs = models.family(name).sample(model, path, data, cfg, out_dir)
    if run_cfg["logger"]["tensorboard"] and (path / "tb").is_dir():
        from dlx.tracking import tensorboard_image

        for tag, png in pngs.items():
            tensorboard_image(path / "tb" / "samples", tag, png, step=cfg.seed)
    for png in pngs.values():
        print(f"wrote {png}")
    return pngs


def main(cfg: DictConfig) -> dict[str, Path]:
    return sample(cfg)
