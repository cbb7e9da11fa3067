"""A dlx process's start-up: fewer garbage collections while the heavy modules load.

Importing TensorFlow, Keras and MLflow makes hundreds of thousands of objects that live as long
as the process. With Python's default thresholds the collector keeps rescanning the growing heap
meanwhile, a good share of a short `dlx train`'s CPU time.

`begin` (the `dlx` console script, a joblib worker's warm-up) makes young collections rarer; `end`
brings back the thresholds the process had, once a job has imported what it needs and starts
training, a sweep launches its jobs, or a server starts serving. Commands that only run a model
(eval, predict, sample, promote) keep the start-up thresholds to their end. Cyclic garbage is
still collected in between, only later. (What the imports made is also frozen, out of every later
collection: see `device.seed_everything`.)
"""

from __future__ import annotations

import gc

# gen-0 collections every 100k allocations (default 700): while the imports run, nearly as cheap
# as no collection at all, with the collector still on
STARTUP_THRESHOLDS = (100_000, 50, 100)

_saved: tuple[int, ...] | None = None  # the thresholds `begin` replaced


def begin() -> None:
    """Start-up starts: rarer collections until `end`."""
    global _saved
    if _saved is None:
        _saved = gc.get_threshold()
        gc.set_threshold(*STARTUP_THRESHOLDS)


def end() -> None:
    """Start-up is over: the usual collections from here on. Only the first call after `begin`
    does anything."""
    global _saved
    if _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None
