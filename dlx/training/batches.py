"""Batches as tf.data pipelines whose epoch e is a pure function of (seed, e): what makes a
resumed run see exactly the batches of one that never stopped."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


class EpochBatches(keras.callbacks.Callback):
    """Training batches as a tf.data pipeline whose epoch e is a pure function of (seed, e).

    Keras' array adapter does the same work (a permutation of indices per epoch, whole batches
    gathered from the in-memory arrays), but its permutations depend on how many epochs the
    process has run, so a run resumed at epoch k would see other batches than the run that was
    never stopped. Here the epoch number lives in a variable that this callback sets at each
    epoch's start, before Keras opens the epoch's iterator. Unshuffled, the same pipeline feeds
    the validation and test splits, in order (`in_order`).
    """

    def __init__(self, x, y, batch_size: int, seed: int, shuffle: bool, augment: dict | None = None,
                 cache: str | None = None):
        super().__init__()
        from dlx.data.types import ImageFiles

        n = len(keras.tree.flatten(y)[0])
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        if isinstance(x, ImageFiles):
            cache, self._cache_lock = claim_cache(cache) if cache else (None, None)
            self.dataset = _stream(x, y, batch_size, seed, shuffle, self.epoch, augment, cache)
            return
        arrays = tf.data.Dataset.from_tensors((x, y)).repeat()  # one copy of the data, not a graph constant

        full, rest = divmod(n, batch_size)

        def order(_):
            indices = tf.range(n, dtype=tf.int64)
            if shuffle:
                indices = tf.random.experimental.stateless_shuffle(indices, seed=tf.stack([tf.constant(seed, tf.int64), self.epoch.read_value()]))
            # whole batches as rows of one reshaped tensor (what Keras does: far cheaper than
            # batching n scalar elements), the partial batch after them
            batches = tf.data.Dataset.from_tensor_slices(tf.reshape(indices[: full * batch_size], (full, batch_size)))
            return batches.concatenate(tf.data.Dataset.from_tensors(indices[full * batch_size :])) if rest else batches

        batches = tf.data.Dataset.range(1).flat_map(order).apply(tf.data.experimental.assert_cardinality(full + bool(rest)))
        gather = lambda idx, xy: keras.tree.map_structure(lambda a: tf.gather(a, idx), xy)  # noqa: E731
        dataset = tf.data.Dataset.zip((batches, arrays)).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        # no static graph rewrites: they serialise the pipeline, the training arrays included, each
        # time Keras opens an epoch's iterator (Keras' array adapter turns them off for this reason)
        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        # and no autotuner: where every core is busy (a parallel sweep) its re-planning thread
        # stalls the training steps (benchmarks/results/sweeps.md); AUTOTUNE sizes take fixed defaults
        options.autotune.enabled = False
        # several processes (trainer.strategy=multi_worker): each keeps every N-th batch; there are no files to split
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        if augment:
            dataset = dataset.map(_augmenter(augment, seed), num_parallel_calls=tf.data.AUTOTUNE)
        self.dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def claim_cache(prefix: str):
    """(prefix, lock) when this process may use the tf.data cache file `prefix`, else (None, None).
    A finished cache is read by any number of runs. An unfinished one is written by one run at a
    time: the one holding an flock on PREFIX.lock (released by the kernel when that process ends,
    however it ends); a writer's leftovers from a killed run are removed first. The other runs
    (a parallel sweep) decode every epoch rather than fail on TensorFlow's lock file."""
    import fcntl
    import glob
    import os

    if os.path.exists(f"{prefix}.index"):
        return prefix, None
    lock = open(f"{prefix}.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        log.info("dataset.cache: another run is writing %s; this run decodes the images every epoch", prefix)
        return None, None
    for stale in glob.glob(glob.escape(prefix) + "_*.lockfile") + glob.glob(glob.escape(prefix) + "_*.tempstate*"):
        os.remove(stale)  # TensorFlow's lock and partial data of a writer that was killed
    return prefix, lock


def in_order(x, y, batch_size: int) -> tf.data.Dataset:
    """A split batch by batch, in order, through the training batches' pipeline (validation, test)."""
    return EpochBatches(x, y, batch_size, 0, shuffle=False).dataset


def _augmenter(augment: dict, seed: int):
    """dataset.augment as Keras preprocessing layers, applied to training batches only."""
    from keras import layers

    steps = ([layers.RandomFlip("horizontal", seed=seed)] if augment.get("flip") else []) + \
        ([layers.RandomRotation(augment["rotation"], fill_mode="constant", seed=seed)] if augment.get("rotation") else []) + \
        ([layers.RandomZoom(augment["zoom"], fill_mode="constant", seed=seed)] if augment.get("zoom") else []) + \
        ([layers.RandomContrast(augment["contrast"], seed=seed)] if augment.get("contrast") else [])
    pipeline = keras.Sequential(steps)
    return lambda x, y: (pipeline(x, training=True), y)


def _stream(files, y, batch_size: int, seed: int, shuffle: bool, epoch: tf.Variable, augment, cache) -> tf.data.Dataset:
    """Image files read, decoded and resized in parallel by TensorFlow, batch by batch: memory holds
    the file names and a few batches, whatever the number of images. Without a cache the epoch's
    order is the same pure function of (seed, epoch) as for arrays; with one, decoded images come
    from the cache file and a shuffle buffer mixes them."""
    from dlx.data.decode import clip, decode_tensor
    from dlx.data.types import scale_tensor

    n = len(files)
    paths, labels = tf.constant(files.paths), tf.constant(y)

    def load(path):
        return decode_tensor(tf.io.read_file(path), files.size, files.channels)

    if cache:
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
        dataset = dataset.map(lambda p, t: (load(p), t), num_parallel_calls=tf.data.AUTOTUNE).cache(cache)
        if shuffle:
            dataset = dataset.shuffle(min(n, 10_000), seed=seed, reshuffle_each_iteration=True)
    else:
        def order(_):
            indices = tf.range(n, dtype=tf.int64)
            if shuffle:
                indices = tf.random.experimental.stateless_shuffle(indices, seed=tf.stack([tf.constant(seed, tf.int64), epoch.read_value()]))
            return tf.data.Dataset.from_tensor_slices(indices)

        dataset = tf.data.Dataset.range(1).flat_map(order)
        dataset = dataset.map(lambda i: (load(tf.gather(paths, i)), tf.gather(labels, i)), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size).apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    # clipping and scaling once per batch: the same arithmetic as per image (`dlx.data.decode`), fewer ops
    dataset = dataset.map(lambda x, t: (scale_tensor(clip(x), files.spec), t), num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        dataset = dataset.map(_augmenter(augment, seed), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
