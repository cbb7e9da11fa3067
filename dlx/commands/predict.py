"""`dlx predict run=DIR inputs='imgs/*.png'`: classify image files like the run's training data."""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig

from dlx.commands._run import load_model, open_run
from dlx.data.datasets import DataSpec, scale
from dlx.data.images import expand_inputs, preprocess, read_grey
from dlx.errors import DlxError

log = logging.getLogger("dlx.predict")


def prepare(files, spec: DataSpec) -> np.ndarray:
    """Image files -> a model-ready batch (every file is read before any model is loaded)."""
    raw = np.stack([preprocess(read_grey(f), spec) for f in files])
    return scale(raw, spec).reshape((-1, *spec.input_shape))


def predict(run: str, inputs: str, top_k: int = 1) -> list[dict]:
    path, cfg = open_run(run)
    spec = DataSpec.load(path / "data_spec.json")
    if not 1 <= top_k <= spec.num_classes:
        raise DlxError(f"top_k: expected 1..{spec.num_classes}, got {top_k}")
    files = expand_inputs(inputs)
    batch = prepare(files, spec)
    from dlx.training import device

    device.configure(cfg["trainer"]["device"])
    probs = load_model(path).predict(batch, verbose=0)
    results = []
    width = max(len(str(f)) for f in files)
    for f, p in zip(files, probs):
        order = np.argsort(p)[::-1][:top_k]
        ranked = [(spec.class_names[i], float(p[i])) for i in order]
        results.append({"file": str(f), "class": ranked[0][0], "probability": ranked[0][1], "top": ranked})
        print(f"{str(f):<{width}}  " + "  ".join(f"{name} {prob:.3f}" for name, prob in ranked))
    return results


def main(cfg: DictConfig) -> list[dict]:
    return predict(cfg.run, cfg.inputs, cfg.top_k)
