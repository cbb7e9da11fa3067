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


# the UCI digits were made by counting the on pixels of 4x4 blocks of a 32x32 bitmap
CENTRE_FIRST = np.argsort(((np.indices((4, 4)) - 1.5) ** 2).sum(0).ravel(), kind="stable")


def digit_drawing(x8: np.ndarray, size: int, glyph: int, offset: tuple = (1, -2)) -> np.ndarray:
    """A digits example drawn as a user would: its 32x32 bitmap (count c of a block -> c pixels on),
    resized to `glyph` pixels, white ink on black, slightly off-centre on a `size` canvas."""
    bits = np.zeros((32, 32), np.float32)
    for (i, j), count in np.ndenumerate(x8.reshape(8, 8)):
        cell = np.zeros(16, np.float32)
        cell[CENTRE_FIRST[: int(count)]] = 255
        bits[4 * i : 4 * i + 4, 4 * j : 4 * j + 4] = cell.reshape(4, 4)
    drawn = np.asarray(Image.fromarray(bits.astype(np.uint8)).resize((glyph, glyph), Image.BILINEAR), np.float32)
    canvas = np.zeros((size, size), np.float32)
    top, left = (size - glyph) // 2 + offset[0], (size - glyph) // 2 + offset[1]
    canvas[top : top + glyph, left : left + glyph] = drawn
    return canvas


@pytest.mark.parametrize("size,glyph", [(28, 22), (64, 52)])
def test_a_drawn_digits_example_is_predicted_as_its_original(size, glyph):
    """Preprocessing a drawing for an 8x8 digits model (crop to the ink, a square, block averages on
    0..16) gives back an input the model reads as it reads the original."""
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    x, y = load_digits(return_X_y=True)
    model = SVC(gamma=0.001, C=10).fit(x[:1400], y[:1400])
    originals = model.predict(x[1400:])
    redrawn = np.stack([preprocess(digit_drawing(d, size, glyph), DIGITS).ravel() for d in x[1400:]])
    assert redrawn.max() <= 16 and redrawn.min() >= 0
    agree = (model.predict(redrawn) == originals).mean()
    assert agree >= 0.93, agree
    # without the crop-and-square step (the whole canvas block-averaged) the same model is lost
    plain = np.stack([np.asarray(Image.fromarray(digit_drawing(d, size, glyph).astype(np.uint8)).resize((8, 8), Image.BOX),
                                 np.float32).ravel() * 16 / 255 for d in x[1400:]])
    assert (model.predict(plain) == originals).mean() < agree - 0.1


def test_an_image_already_in_the_datasets_layout_is_kept_as_it_is():
    """One of the dataset's own 8x8 images (saved as a PNG and uploaded) is not cropped and
    stretched again: it comes back on the 0..16 scale exactly, dark-on-light ones inverted."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:50]
    for x in images:
        np.testing.assert_allclose(preprocess(x * (255 / 16), DIGITS), x, atol=1e-4)
    np.testing.assert_allclose(preprocess(255 - images[3] * (255 / 16), DIGITS), images[3], atol=1e-4)
