"""`dlx predict run=DIR inputs=...`: run a trained model on new inputs, prepared like its training data.

What `inputs` holds follows the run's data: image files for image datasets, CSV rows of raw
feature values (or .npy arrays) for tabular ones (for a dataset=csv run: CSV files with a header
naming its columns, in any order, the target column not needed), .txt documents for text ones (as word counts,
or as padded word ids for the models that read word order).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from dlx.rundir import load_model, open_run
from dlx.data.types import DataSpec, scale
from dlx.data.images import expand_inputs, image_batch, read_grey
from dlx.errors import DataError, DlxError

log = logging.getLogger("dlx.predict")


def read_rows(path: Path, width: int) -> np.ndarray:
    """Feature rows from a .npy array or a CSV file (a non-numeric first line is a header)."""
    def parse(line: str) -> list[float]:
        return [float(v) for v in line.split(",")]

    try:
        if path.suffix == ".npy":
            rows = np.atleast_2d(np.load(path, allow_pickle=False))
        else:
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            try:
                parse(lines[0])
            except ValueError:
                lines = lines[1:]  # a header line
            except IndexError:
                pass
            rows = np.array([parse(ln) for ln in lines], dtype=np.float64)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: expected CSV rows of {width} numbers or a .npy array ({exc})") from None
    if rows.ndim != 2 or rows.shape[1] != width or not len(rows):
        raise DataError(f"{path}: expected rows of {width} feature values, got shape {rows.shape}")
    return rows


def prepare(files: list[Path], spec: DataSpec, dataset: dict) -> tuple[np.ndarray, list[str]]:
    """Input files -> (a model-ready batch, a label per example); every file is read before any
    model is loaded. `dataset`: the run's dataset config (padding of word ids)."""
    if spec.kind == "image" and spec.layout == "photo":  # the training decode and resize (dlx.data.decode)
        from dlx.data.folders import check_file
        from dlx.data.types import ImageFiles

        for f in files:  # every file read before TensorFlow loads: a bad one is one clean line
            why = check_file(f)
            if isinstance(why, str):
                raise DataError(f"{f}: {why}")
        images = ImageFiles([str(f) for f in files], spec.input_shape[:2], spec.input_shape[2], spec)
        return images[np.arange(len(images))], [str(f) for f in files]
    if spec.kind == "image":
        return image_batch([read_grey(f) for f in files], spec), [str(f) for f in files]
    if spec.kind in ("text", "words"):
        from dlx.data.text import text_batch

        docs = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        return text_batch(docs, spec, dataset), [str(f) for f in files]
    if spec.columns:  # a CSV table's run: named columns in any order, prepared as in training
        from dlx.data import table

        frames = [table.read(f, "inputs") for f in files]
        names = [f"{f}:{i + 2}" for f, frame in zip(files, frames) for i in range(len(frame))]
        return np.concatenate([table.transform(frame, spec.columns, str(f)) for f, frame in zip(files, frames)]), names
    width = spec.input_shape[0]
    blocks = [read_rows(f, width) for f in files]
    names = [f"{f}:{i + 1}" for f, b in zip(files, blocks) for i in range(len(b))]
    return scale(np.concatenate(blocks), spec), names


def predict(run: str, inputs: str, top_k: int = 1) -> list[dict]:
    path, cfg = open_run(run)
    from dlx.family import family_name, resolve

    name = family_name(cfg["model"])
    if resolve(cfg["model"], "run model").task == "unsupervised":
        raise DlxError(f"run={run}: model={name} learned no labels to predict; draw from it with dlx sample run={run}")
    spec = DataSpec.load(path / "data_spec.json")
    if spec.kind in ("chars", "captions"):
        raise DlxError(f"run={run}: model={name} generates {'text' if spec.kind == 'chars' else 'captions'} rather than "
                       f"classifying files; use dlx sample run={run}")
    if spec.task == "classification" and not 1 <= top_k <= spec.num_classes:
        raise DlxError(f"top_k: expected 1..{spec.num_classes}, got {top_k}")
    batch, names = prepare(expand_inputs(inputs), spec, cfg["dataset"])
    from dlx.training import device

    device.configure(cfg["trainer"]["device"])
    out = load_model(path, cfg, spec).predict(batch, verbose=0)
    results = []
    width = max(len(n) for n in names)
    for name, row in zip(names, out):
        if spec.task == "regression":
            results.append({"input": name, "value": float(row[0])})
            print(f"{name:<{width}}  {float(row[0]):.6g}")
            continue
        order = np.argsort(row)[::-1][:top_k]
        ranked = [(spec.class_names[i], float(row[i])) for i in order]
        results.append({"input": name, "class": ranked[0][0], "score": ranked[0][1], "top": ranked})
        print(f"{name:<{width}}  " + "  ".join(f"{label} {score:.3f}" for label, score in ranked))
    return results


def main(cfg: DictConfig) -> list[dict]:
    return predict(cfg.run, cfg.inputs, cfg.top_k)
