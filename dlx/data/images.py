"""Turn a user's image file into an input like the training data (for `dlx predict` and serving).

MNIST-style: greyscale, light ink on a dark background (a light background is inverted), cropped
to the ink, scaled into a `spec.box` square keeping the aspect ratio, placed so its centre of mass
is in the middle of the frame, and expressed in the raw pixel range of the dataset.

The 8x8 digits (`box` 0) were made by scaling the ink's bounding box into a 32x32 bitmap and
counting the on pixels of each 4x4 block (0..16): here the cropped ink is centred in a square and
area-averaged down to 8x8, i.e. the same block counts with grey pixels counting as partly on, on
the 0..16 scale (tests/test_images.py redraws the dataset's examples at 28x28 and 64x64).
"""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np

from dlx.data.types import DataSpec, scale
from dlx.errors import DlxError

INK_THRESHOLD = 0.2  # of the brightest pixel: what counts as ink when cropping


MAX_SIDE = 1024  # larger images are box-averaged by an integer factor to at most this side before anything else


class TooLarge(DlxError):
    """An image with more pixels than the caller allows (found from its header, before decoding)."""


def image_pixels(source) -> int:
    """Width x height from the image's header alone (nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            return int(im.size[0]) * int(im.size[1])
    except Image.DecompressionBombError:
        raise TooLarge("more pixels than PIL opens safely") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DlxError(f"{source}: not a readable image file ({type(exc).__name__})") from None


def read_grey(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Greyscale 0..255 float32; transparent pixels count as white paper. The first frame of an
    animated image. `max_pixels`: refuse a larger image before decoding it (`TooLarge`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if max_pixels is not None and im.size[0] * im.size[1] > max_pixels:
                raise TooLarge(f"{im.size[0]}x{im.size[1]} pixels; the limit is {max_pixels:,} pixels")
            im.seek(0)
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                paper.alpha_composite(rgba)
                im = paper
            grey = im.convert("L")
            if max(grey.size) > MAX_SIDE:  # averaged down in C first: every model input is far smaller
                grey = grey.reduce(math.ceil(max(grey.size) / MAX_SIDE))
            return np.asarray(grey, dtype=np.float32)
    except FileNotFoundError:
        raise DlxError(f"{path}: no such file") from None
    except Image.DecompressionBombError:
        raise TooLarge(f"{path}: more pixels than PIL decodes safely") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise DlxError(f"{path}: not a readable image file ({type(exc).__name__})") from None


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    # shrinking averages areas (how the 8x8 digits were made; no ringing), growing interpolates
    method = Image.BOX if size[0] < a.shape[0] else Image.BILINEAR
    return np.asarray(im.resize((size[1], size[0]), method), dtype=np.float32)


def preprocess(grey: np.ndarray, spec) -> np.ndarray:
    """(H, W) 0..255 greyscale -> (rows, cols) raw-range image laid out like the dataset's."""
    rows, cols = spec.input_shape[:2]
    paper = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    if paper > 127:  # dark ink on light paper: invert to the datasets' light-on-dark convention
        grey, paper = 255.0 - grey, 255.0 - paper
    grey = np.clip(grey - paper, 0, None)  # the background becomes exactly 0
    if grey.max() <= 0:
        return np.zeros((rows, cols), np.float32)  # blank image: nothing to centre
    if grey.shape == (rows, cols):  # already the dataset's own size and layout (one of its images): kept as it is
        return grey * (spec.pixel_max / 255.0)
    ink = np.argwhere(grey > INK_THRESHOLD * grey.max())
    (r0, c0), (r1, c1) = ink.min(axis=0), ink.max(axis=0) + 1
    crop = grey[r0:r1, c0:c1]
    side = max(crop.shape)
    square = np.zeros((side, side), np.float32)
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    box = spec.box or min(rows, cols)
    glyph = _resize(square * (255.0 / square.max()), (box, box))
    canvas = np.zeros((rows, cols), np.float32)
    if glyph.sum() > 0 and box < min(rows, cols):
        cy, cx = _centre_of_mass(glyph)
        top = int(np.clip(round(rows / 2 - cy), 0, rows - box))
        left = int(np.clip(round(cols / 2 - cx), 0, cols - box))
    else:
        top, left = (rows - box) // 2, (cols - box) // 2
    canvas[top : top + box, left : left + box] = glyph
    return canvas * (spec.pixel_max / 255.0)


def _centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    total = a.sum()
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / total), float((xs * a).sum() / total)


def expand_inputs(inputs: str) -> list[Path]:
    """A file, a directory (its files) or a glob pattern -> sorted file list."""
    import glob

    path = Path(inputs).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif path.exists():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        raise DlxError(f"inputs={inputs}: no files match")
    return files


def image_batch(greys: list[np.ndarray], spec: DataSpec) -> np.ndarray:
    """Greyscale images (0..255) -> a model-ready batch, prepared as the training data was (also
    what `dlx serve` does with uploaded images)."""
    return scale(np.stack([preprocess(g, spec) for g in greys]), spec).reshape((-1, *spec.input_shape))
