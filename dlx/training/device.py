"""Device selection and seeding, done before the first TensorFlow op."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def configure(device: str) -> str:
    """Make `device` (auto | cpu | gpu) the one TensorFlow uses; return a description."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" or not gpus:
        if device == "gpu":
            log.warning("trainer.device=gpu but TensorFlow sees no GPU; running on CPU")
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        return "cpu"
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised (a second job in the same process)
            pass
    return f"gpu x{len(gpus)}"


def seed_everything(seed: int) -> None:
    """A fresh Keras state and the same random streams for the same seed (Python, NumPy, TF)."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
