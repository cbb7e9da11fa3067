"""`dlx sample run=DIR`: what a trained generative model draws.

rbm / dbn: Gibbs chains started at test images (or noise), a frame every `steps_between` steps;
autoencoders: original / corrupted / reconstructed test inputs and the first layer's filters;
char_rnn: `length` characters after `prime`, streamed to stdout; captioning: captions of `n`
images of `split` next to their references. Files go to <run>/samples/ (or `out`) and, when the
run logged to TensorBoard, to its `samples` images or text. The same `seed` draws the same samples.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dlx.rundir import load_model, open_run
from dlx.config import ns
from dlx.errors import DlxError


def generating_families() -> list[str]:
    from dlx.family import builtin

    return [name for name, family in builtin().items() if family.generates]


def check(cfg) -> None:
    for key in ("n_chains", "n_frames", "steps_between", "n", "n_filters", "length"):
        if getattr(cfg, key) < 1:
            raise DlxError(f"{key}: expected a positive count, got {getattr(cfg, key)}")
    if cfg.top_k < 0 or cfg.temperature < 0:
        raise DlxError(f"top_k / temperature: expected >= 0 (0 = off / greedy), got {cfg.top_k} / {cfg.temperature}")
    if cfg.beam_width is not None and cfg.beam_width < 1:
        raise DlxError(f"beam_width: expected 1 or more, got {cfg.beam_width}")
    if cfg.start not in ("test", "noise"):
        raise DlxError(f"start: expected test or noise, got '{cfg.start}'")


def sample(cfg) -> dict[str, Path]:
    check(cfg)
    path, run_cfg = open_run(cfg.run)
    from dlx.family import family_name, resolve

    family, name, able = resolve(run_cfg["model"]), family_name(run_cfg["model"]), generating_families()
    if not family.generates:
        raise DlxError(f"run={cfg.run}: model={name} does not generate samples; dlx sample works on runs of "
                       f"model={', '.join(able)} (ae, dae and sparse_ae are autoencoders)")
    from dlx.data import datasets

    data = datasets.load(ns(run_cfg["dataset"]), family.reads_words())
    from dlx.training import device

    device.configure(run_cfg["trainer"]["device"])
    model = load_model(path, run_cfg, data.spec)
    out_dir = Path(cfg.out).expanduser() if cfg.out else path / "samples"
    files = family.sample(model, path, data, cfg, out_dir)
    if run_cfg["logger"]["tensorboard"] and (path / "tb").is_dir():
        from dlx.tracking import tensorboard_image, tensorboard_text

        for tag, file in files.items():
            show = tensorboard_image if file.suffix == ".png" else tensorboard_text
            show(path / "tb" / "samples", tag, file, step=cfg.seed)
    for file in files.values():
        print(f"wrote {file}")
    return files


def main(cfg: DictConfig) -> dict[str, Path]:
    return sample(cfg)
