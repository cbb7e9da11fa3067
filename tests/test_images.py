import numpy as np
import pytest
from PIL import Image

from dlx.data.datasets import DataSpec
from dlx.data.idx import read_idx
from dlx.data.images import expand_inputs, preprocess, read_grey
from dlx.errors import DlxError

MNIST = DataSpec("mnist", (28, 28, 1), 10, [str(i) for i in range(10)], 255.0, box=20)
DIGITS = DataSpec("digits", (8, 8, 1), 10, [str(i) for i in range(10)], 16.0)


def as_photo(digit: np.ndarray, scale: int = 4, pad: tuple = (30, 5, 12, 40)) -> np.ndarray:
    """An MNIST digit as a user would give it: dark ink on white paper, bigger, off-centre."""
    big = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BILINEAR), np.float32)
    return np.pad(255.0 - big, ((pad[0], pad[1]), (pad[2], pad[3])), constant_values=255.0)


def test_user_photo_of_a_digit_matches_the_mnist_original(shared_mnist):
    digits = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")[:20]
    for digit in digits:
        out = preprocess(as_photo(digit), MNIST)
        assert out.shape == (28, 28) and 0 <= out.min() and out.max() <= 255
        corr = np.corrcoef(out.ravel(), digit.astype(np.float32).ravel())[0, 1]
        assert corr > 0.8, corr


def test_digits_layout_fills_the_frame_in_the_raw_range():
    img = np.full((50, 40), 255.0)
    img[10:40, 18:22] = 0  # a "1"
    out = preprocess(img, DIGITS)
    assert out.shape == (8, 8) and 8.0 <= out.max() <= 16.0
    assert out[:, :2].sum() == 0 and out[:, -2:].sum() == 0  # thin stroke centred, edges empty


def test_blank_image_gives_zeros():
    assert not preprocess(np.full((30, 30), 255.0), MNIST).any()


def test_transparent_png_counts_as_white_paper(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 18:22] = (0, 0, 0, 255)  # black opaque stroke, the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    grey = read_grey(tmp_path / "t.png")
    assert grey[0, 0] == 255 and grey[20, 20] == 0


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(DlxError, match="notes.png: not a readable image file"):
        read_grey(tmp_path / "notes.png")


def test_expand_inputs(tmp_path):
    for name in ("b.png", "a.png"):
        (tmp_path / name).touch()
    assert [p.name for p in expand_inputs(str(tmp_path / "*.png"))] == ["a.png", "b.png"]
    assert [p.name for p in expand_inputs(str(tmp_path))] == ["a.png", "b.png"]
    with pytest.raises(DlxError, match="no files match"):
        expand_inputs(str(tmp_path / "*.jpg"))
