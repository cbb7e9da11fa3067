"""`dlx eval run=DIR`: rebuild the run's data from its own config, evaluate its best model."""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from dlx.rundir import load_model, open_run
from dlx.config import ns
from dlx.errors import DlxError

log = logging.getLogger("dlx.eval")


def evaluate(run: str, split: str = "test", batch_size: int | None = None) -> dict[str, float]:
    from dlx.data import datasets

    path, cfg = open_run(run)
    if split not in ("test", "val"):
        raise DlxError(f"split: expected test or val, got '{split}'")
    from dlx.family import resolve

    family = resolve(cfg["model"], "run model")
    data = datasets.load(ns(cfg["dataset"]), family.reads_words())
    from dlx.training import device

    device.configure(cfg["trainer"]["device"])
    model = load_model(path, cfg, data.spec)
    part = data.test if split == "test" else data.val
    result = model.evaluate(part.x, part.y, batch_size=batch_size or cfg["trainer"].get("eval_batch_size") or cfg["trainer"]["batch_size"], return_dict=True, verbose=0)
    metrics = {f"{split}_{k}": float(v) for k, v in result.items()} | {f"{split}_examples": len(part)}
    metrics |= family.scores(model, data, cfg, split)
    (path / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    trained = path / "metrics.json"
    recorded = json.loads(trained.read_text()) if trained.exists() else {}
    for key, value in metrics.items():
        before = recorded.get(key)
        note = f"   (at training: {before:.4f})" if isinstance(before, float) else ""
        print(f"{key:<16} {value:.4f}{note}" if isinstance(value, float) else f"{key:<16} {value}")
    print(f"wrote {path / 'eval.json'}")
    return metrics


def main(cfg: DictConfig) -> dict[str, float]:
    return evaluate(cfg.run, cfg.split, cfg.batch_size)
