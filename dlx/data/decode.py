"""The one image decode that training, `dlx predict` and `dlx serve` share for photo datasets
(image_folder, cifar10): TensorFlow's decoder (first frame of a GIF; a large JPEG at a reduced
scale), the colour mode, and a bilinear resize to the dataset's size, antialiased where an image
still shrinks more than twofold.
Pixels stay 0..255; scaling comes after."""

from __future__ import annotations

import numpy as np


def decode_tensor(raw, size: tuple[int, int], channels: int):
    import tensorflow as tf

    # decoded as RGB (TensorFlow's BMP and GIF decoders have no one-channel mode), then made grey
    image = tf.cond(tf.strings.substr(raw, 0, 3) == b"\xff\xd8\xff", lambda: _jpeg(raw, size),
                    lambda: tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8))
    image.set_shape([None, None, 3])
    # antialiasing (an area filter first) matters where an image shrinks a lot; elsewhere it only costs time
    shrinks = tf.reduce_any(tf.shape(image)[:2] > 2 * tf.constant(size))
    image = tf.cond(shrinks, lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
                    lambda: tf.image.resize(image, size, method="bilinear"))
    return tf.image.rgb_to_grayscale(image) if channels == 1 else image


def clip(images):
    """Resizing's float arithmetic may step a hair outside 0..255 (done per batch in training)."""
    import tensorflow as tf

    return tf.clip_by_value(images, 0.0, 255.0)


def _jpeg(raw, size: tuple[int, int]):
    """A JPEG at least twice the target size is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself
    (its DCT-domain scaling, far cheaper than decoding every pixel and averaging them away)."""
    import tensorflow as tf

    shape = tf.io.extract_jpeg_shape(raw)
    factor = tf.minimum(shape[0] // size[0], shape[1] // size[1])
    return tf.case([(factor >= r, lambda r=r: tf.io.decode_jpeg(raw, channels=3, ratio=r)) for r in (8, 4, 2)],
                   default=lambda: tf.io.decode_jpeg(raw, channels=3))


def decode_bytes(raw: bytes, size: tuple[int, int], channels: int) -> np.ndarray:
    import tensorflow as tf

    from dlx.errors import DlxError

    try:
        return clip(decode_tensor(tf.constant(raw), size, channels)).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        raise DlxError("not a readable PNG, JPEG, BMP or GIF") from None


def decode_file(path, size: tuple[int, int], channels: int) -> np.ndarray:
    from pathlib import Path

    from dlx.errors import DlxError

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DlxError(f"{path}: {exc.strerror}") from None
    try:
        return decode_bytes(raw, size, channels)
    except DlxError as exc:
        raise DlxError(f"{path}: {exc}") from None
