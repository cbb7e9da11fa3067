"""Deep belief net: a stack of RBMs pretrained greedily with CD-k (`model.pretrain.k`), then the
sigmoid stack + softmax fine-tuned by backpropagation (Hinton, Osindero & Teh 2006; the book's DBN
chapter). The pretrained RBMs are kept in the run directory (pretrained.npz): `dlx sample` runs
Gibbs chains in the top one and shows them through the layers below.
"""

from __future__ import annotations

from pathlib import Path

import keras

from dlx.errors import DlxError
from dlx.models.rbm import RBM, draw_chains
from dlx.models.stacked import PRETRAINED_FILE, build_stack, load_stack


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    def stage(i: int, n_in: int, units: int) -> keras.Model:
        rbm = RBM(n_in, units, k=cfg.pretrain.k, persistent=False, name=f"rbm{i}")
        rbm.build()
        return rbm

    return build_stack(cfg, reg, spec, "dbn", stage, trainer)


def sample(model, run_dir: Path, data, cfg, out_dir: Path) -> dict[str, Path]:
    """Gibbs chains in the top pretrained RBM, each frame shown through the RBMs below."""
    path = run_dir / PRETRAINED_FILE
    if not path.is_file():
        raise DlxError(f"run={run_dir}: no {PRETRAINED_FILE}; this dbn was trained without pretraining "
                       "(model.pretrain.enabled=false), so it has no RBMs to sample from")
    return draw_chains(load_stack(path), data, cfg, out_dir)
