"""Every family builds for both input sizes and can overfit a tiny batch."""

import numpy as np
import pytest
from helpers import build_model

from conftest import tiny_cfg
from dlx.config import ns
from dlx.data.datasets import DataSpec
from dlx.errors import DlxError

DIGITS = DataSpec("digits", (8, 8, 1), 10, [str(i) for i in range(10)], 16.0)
MNIST = DataSpec("mnist", (28, 28, 1), 10, [str(i) for i in range(10)], 255.0)


def build(*overrides, spec=DIGITS):
    c = ns(tiny_cfg(*overrides))
    return build_model(c, spec)


@pytest.mark.parametrize("model", ["softmax", "mlp", "cnn"])
@pytest.mark.parametrize("spec", [DIGITS, MNIST], ids=["8x8", "28x28"])
def test_builds_with_class_probabilities(model, spec):
    m = build(f"model={model}", spec=spec)
    out = m.predict(np.random.rand(3, *spec.input_shape).astype("float32"), verbose=0)
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("model", ["softmax", "mlp", "cnn"])
def test_overfits_a_tiny_batch(model):
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    y = np.arange(32) % 10
    m = build(f"model={model}", "model.hidden=[64]" if model == "mlp" else "regularization=none")
    m.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=150, batch_size=32, verbose=0)
    loss, acc = m.evaluate(x, y, verbose=0)
    assert acc == 1.0 and loss < 0.2


def test_regularization_adds_penalties_and_dropout():
    m = build("regularization=l2", "regularization.dropout=0.5", "model.hidden=[16,16]")
    assert len(m.losses) == 3  # two hidden kernels + the output kernel
    assert sum(type(l).__name__ == "Dropout" for l in m.layers) == 2
    assert build("regularization=none").losses == []


def test_softmax_zero_init():
    m = build("model=softmax", "model.zero_init=true")
    assert not np.any(m.get_layer("probs").kernel.numpy())


def test_cnn_valid_padding_too_small_is_a_clear_error():
    with pytest.raises(DlxError, match=r"model.conv\[1\]: a 5x5 'valid' conv needs 5x5 input, gets 4x4"):
        build("model=cnn", "model.conv=[{filters:6},{filters:16,padding:valid}]")
    lenet = build("model=cnn", "model.conv=[{filters:6},{filters:16,padding:valid}]", spec=MNIST)
    assert lenet.get_layer("conv2").output.shape[1:] == (10, 10, 16)


def test_unknown_activation():
    with pytest.raises(DlxError, match="model.activation: unknown activation 'swishy'"):
        build("model.activation=swishy")
