"""Autoencoders, RBM, DBN, SDAE and `dlx sample`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_cfg
from helpers import build_and_compile

from dlx.commands.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# small stacks that pretrain and fine-tune on digits in a few seconds
STACK = ["dataset=digits", "model.hidden=[128,64]", "trainer.batch_size=20", "trainer.epochs=5",
         "optimizer=sgd", "optimizer.lr=0.1", "trainer.early_stopping.enabled=false",
         "model.pretrain.epochs=10", "model.pretrain.lr=0.1"]
SDAE = ["model=sdae", *STACK, "model.pretrain.corruption=[0.1,0.2]"]
DBN = ["model=dbn", *STACK]


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_cd(v0, h_start, w, b, c, u_v, u_h):
    """CD-k written out in NumPy: positive phase from the data, negative from k Gibbs steps."""
    ph0 = sigmoid(v0 @ w + c)
    h = h_start
    for uv, uh in zip(u_v, u_h):
        v = (uv < sigmoid(h @ w.T + b)).astype(np.float64)
        ph = sigmoid(v @ w + c)
        h = (uh < ph).astype(np.float64)
    grad_w = -(v0.T @ ph0 / len(v0) - v.T @ ph / len(v))
    grad_b = -(v0.mean(0) - v.mean(0))
    grad_c = -(ph0.mean(0) - ph.mean(0))
    return (grad_w, grad_b, grad_c), h


def tiny_rbm_problem(seed=0, n=5, d=7, h=4, k=3, chains=None):
    rng = np.random.default_rng(seed)
    chains = chains or n
    return dict(
        v0=rng.random((n, d)), w=rng.normal(0, 0.5, (d, h)), b=rng.normal(0, 0.3, d), c=rng.normal(0, 0.3, h),
        u_v=[rng.random((chains, d)) for _ in range(k)], u_h=[rng.random((chains, h)) for _ in range(k)],
        h_start=(rng.random((chains, h)) < 0.5).astype(np.float64),
    )


@pytest.mark.parametrize("k, chains", [(1, None), (3, None), (3, 6)])
def test_cd_k_gradient_matches_numpy_reference(k, chains):
    import tensorflow as tf

    from dlx.models.rbm import cd_gradients

    p = tiny_rbm_problem(k=k, chains=chains)
    as_tf = {key: ([tf.constant(u, tf.float32) for u in val] if isinstance(val, list) else tf.constant(val, tf.float32))
             for key, val in p.items()}
    grads, h = cd_gradients(as_tf["v0"], as_tf["h_start"], as_tf["w"], as_tf["b"], as_tf["c"], as_tf["u_v"], as_tf["u_h"])
    ref_grads, ref_h = numpy_cd(p["v0"], p["h_start"], p["w"], p["b"], p["c"], p["u_v"], p["u_h"])
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    np.testing.assert_array_equal(h.numpy(), ref_h)
    assert np.abs(ref_grads[0]).max() > 1e-3  # a real gradient, not zeros on both sides


def test_monitored_values_match_their_definitions():
    """Pseudo-likelihood (flipped row gathered, not multiplied), reconstruction cross-entropy and
    free energy against the formulas written out in NumPy."""
    import tensorflow as tf

    from dlx.models.rbm import monitor_values

    p = tiny_rbm_problem(seed=3, n=9, d=7, h=4)
    v, w, b, c = p["v0"], p["w"], p["b"], p["c"]
    flips = np.arange(len(v)) % v.shape[1]

    def fe(x):
        return -x @ b - np.log1p(np.exp(x @ w + c)).sum(axis=1)

    x = np.round(v)
    x_flipped = x.copy()
    x_flipped[np.arange(len(x)), flips] = 1 - x_flipped[np.arange(len(x)), flips]
    pv = sigmoid(sigmoid(v @ w + c) @ w.T + b)
    want = (-(v * np.log(pv) + (1 - v) * np.log(1 - pv)).sum(axis=1),
            v.shape[1] * np.log(sigmoid(fe(x_flipped) - fe(x))), fe(v))
    got = monitor_values(*(tf.constant(a, tf.float32) for a in (v, w, b, c)), tf.constant(flips, tf.int32))
    for g, expected in zip(got, want):
        np.testing.assert_allclose(g.numpy(), expected, rtol=1e-5, atol=1e-4)


def scripted_rbm(persistent: bool, n_visible: int, n_hidden: int, k: int, chains: int, numbers: list):
    """An RBM whose uniform random numbers come from `numbers` (in the order train_step draws them)."""
    import keras

    from dlx.models.rbm import RBM

    class Scripted(RBM):
        def uniform(self, shape):
            value = numbers.pop(0)
            assert value.shape == tuple(int(s) for s in shape)
            return keras.ops.convert_to_tensor(value, "float32")

    rbm = Scripted(n_visible, n_hidden, k=k, persistent=persistent, chains=chains)
    rbm.build()
    rbm.compile(optimizer=keras.optimizers.SGD(0.5))
    return rbm


def test_pcd_keeps_persistent_chains_across_batches():
    """Two PCD-2 updates: the second chain starts where the first ended, and the weights follow
    the NumPy reference exactly (CD would restart from the data instead)."""
    rng = np.random.default_rng(1)
    d, h, k, chains, lr = 6, 3, 2, 4, 0.5
    batches = [rng.random((5, d)).astype(np.float32) for _ in range(2)]
    draws = [[rng.random((chains, d)) for _ in range(k)] + [rng.random((chains, h)) for _ in range(k)] for _ in batches]
    rbm = scripted_rbm(True, d, h, k, chains, [u.astype(np.float32) for step in draws for u in step])
    w, b, c = (v.numpy().astype(np.float64) for v in (rbm.w, rbm.b, rbm.c))
    chain = np.zeros((chains, h))
    for x, step in zip(batches, draws):
        grads, chain = numpy_cd(x.astype(np.float64), chain, w, b, c, step[:k], step[k:])
        w, b, c = w - lr * grads[0], b - lr * grads[1], c - lr * grads[2]
        rbm.train_step((x,))
        np.testing.assert_array_equal(rbm.chain.numpy(), chain)  # the persistent state after this batch
    assert chain.any()
    np.testing.assert_allclose(rbm.w.numpy(), w, atol=1e-5)
    np.testing.assert_allclose(rbm.c.numpy(), c, atol=1e-5)


def built_and_compiled(cfg):
    import keras

    from dlx.config import ns
    from dlx.data import datasets
    from dlx.training import device

    c = ns(cfg)
    data = datasets.load(c.dataset)
    device.seed_everything(c.trainer.seed)  # as `dlx train` does: the same initial weights and samples every run
    model = build_and_compile(c, data.spec, keras.optimizers.SGD(c.optimizer.lr))
    return model, data


# (bias init, least fall of the free-energy gap, least rise of the pseudo-likelihood): starting from
# the data's log-odds, the biases already account for most of the gap (measured over 8 seeds:
# zero: -40 and +20; data: -1.3 to -3.0 and +0.7 to +1.3)
@pytest.mark.parametrize("bias_init, gap_fall, pl_rise", [("zero", 20.0, 10.0), ("data", 0.5, 0.3)])
def test_free_energy_of_training_data_falls(tmp_path, bias_init, gap_fall, pl_rise):
    """A few epochs of PCD on digits lower the free energy of the training images relative to
    random images: the model puts more probability on the data (F is defined up to the log
    partition function, which training changes too, so its difference is what is measured);
    their pseudo-likelihood rises."""
    import tensorflow as tf

    from dlx.models.rbm import free_energy, pseudo_likelihood
    from dlx.training import loop

    cfg = tiny_cfg("model=rbm", "dataset=digits", "model.hidden=64", "trainer.batch_size=20", "trainer.epochs=5",
                   "optimizer=sgd", "optimizer.lr=0.1", "trainer.early_stopping.enabled=false",
                   f"model.visible_bias_init={bias_init}")
    model, data = built_and_compiled(cfg)
    x = tf.constant(data.train.x.reshape(len(data.train), -1))
    noise = tf.constant(np.random.default_rng(0).random(x.shape), tf.float32)
    flips = tf.constant(np.arange(len(x)) % x.shape[1], tf.int32)  # the same flipped bits before and after

    def measure():
        def fe(v):
            return float(tf.reduce_mean(free_energy(v, model.w, model.b, model.c)))

        return fe(x) - fe(noise), float(tf.reduce_mean(pseudo_likelihood(x, model.w, model.b, model.c, flips)))

    model.data_init(data.train.x)  # what fit starts from
    gap_start, pl_start = measure()
    result = loop.fit(model, data, cfg["trainer"], tmp_path)
    gap_after, pl_after = measure()
    assert gap_after < gap_start - gap_fall, (gap_start, gap_after)
    assert pl_after > pl_start + pl_rise, (pl_start, pl_after)
    assert {"loss", "pseudo_likelihood", "free_energy", "val_loss", "val_pseudo_likelihood"} <= set(result.history)


# --------------------------------------------------------------------------- pretraining
@pytest.mark.parametrize("family", [SDAE, DBN], ids=["sdae", "dbn"])
def test_fine_tuning_starts_from_the_pretrained_weights(tmp_path, family):
    """The first layer's kernel at the first fine-tuning step is the pretrained one, saved in
    pretrained.npz; fine-tuning then moves it."""
    import keras

    from dlx.models.stacked import load_stack
    from dlx.training import loop

    cfg = tiny_cfg(*family)
    model, data = built_and_compiled(cfg)
    run = tmp_path / "run"
    run.mkdir()
    before = model.get_layer("hidden1").kernel.numpy().copy()
    loop.pretrain(model, data, cfg["trainer"], run)
    stack = load_stack(run / "pretrained.npz")
    assert [w.shape for w, _, _ in stack] == [(64, 128), (128, 64)]

    seen = {}

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.setdefault("kernel", self.model.get_layer("hidden1").kernel.numpy().copy())

    loop.fit(model, data, cfg["trainer"], run, [FirstStep()])
    np.testing.assert_array_equal(seen["kernel"], stack[0][0])
    np.testing.assert_array_equal(model.get_layer("hidden2").bias.numpy() != stack[1][2], True)  # fine-tuned since
    assert not np.allclose(seen["kernel"], before)


@pytest.mark.parametrize("family", [SDAE, DBN], ids=["sdae", "dbn"])
def test_pretraining_beats_random_initialisation_on_a_small_budget(tmp_path, family):
    pretrained, _ = train(tiny_cfg(*family), tmp_path / "pre")
    random_init, _ = train(tiny_cfg(*family, "model.pretrain.enabled=false"), tmp_path / "rand")
    assert pretrained["test_accuracy"] > random_init["test_accuracy"] + 0.15, (pretrained, random_init)
    assert "pretrain_seconds" in pretrained and "pretrain_seconds" not in random_init
    assert (tmp_path / "pre" / "pretrained.npz").is_file() and not (tmp_path / "rand" / "pretrained.npz").exists()


def test_pretraining_phases_are_logged_under_their_own_prefix(tmp_path, monkeypatch):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    train(tiny_cfg("model=dbn", "dataset=digits", "model.hidden=[32,16]", "model.pretrain.epochs=2", logger="both"), tmp_path / "run")
    tags = set(EventAccumulator(str(tmp_path / "run" / "tb" / "pretrain"), size_guidance={"tensors": 0}).Reload().Tags()["tensors"])
    for layer in (1, 2):
        assert {f"pretrain/layer{layer}/{m}" for m in ("loss", "val_loss", "pseudo_likelihood", "free_energy")} <= tags
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("dlx").experiment_id])
    history = client.get_metric_history(run.info.run_id, "pretrain/layer2/loss")
    assert [m.step for m in history] == [0, 1]
    assert "test_accuracy" in run.data.metrics


# --------------------------------------------------------------------------- the CLI
def png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size  # (width, height)


@pytest.mark.parametrize("model, extra", [
    ("ae", ["model.hidden=[32]"]),
    ("dae", ["model.hidden=[32]", "model.noise_level=0.3"]),
    ("sparse_ae", ["model.hidden=[32]"]),
])
def test_autoencoders_train_and_sample_via_the_cli(dlx, workdir, model, extra):
    dlx("train", f"model={model}", "dataset=digits", *extra, "trainer.epochs=3", "logger=tensorboard", "hydra.run.dir=run", check=True)
    assert {"reconstructions.png", "filters.png", "learning_curves.png"} <= {p.name for p in (workdir / "run" / "plots").iterdir()}
    proc = dlx("sample", "run=run", "n=6", "n_filters=32", "seed=3", check=True)
    assert "wrote" in proc.stdout
    assert "test_loss" in dlx("eval", "run=run", check=True).stdout
    # 3 rows (original, corrupted, reconstructed) x 6 digits of 8x8, 1-pixel gaps, zoom 2
    assert png_size(workdir / "run" / "samples" / "reconstructions.png") == ((6 * 9 + 1) * 2, (3 * 9 + 1) * 2)
    assert png_size(workdir / "run" / "samples" / "filters.png") == ((6 * 9 + 1) * 2, (6 * 9 + 1) * 2)  # 32 filters, 6 x 6 tiles
    first = (workdir / "run" / "samples" / "reconstructions.png").read_bytes()
    dlx("sample", "run=run", "n=6", "n_filters=32", "seed=3", check=True)
    assert (workdir / "run" / "samples" / "reconstructions.png").read_bytes() == first  # same seed, same picture
    assert (workdir / "run" / "tb" / "samples").is_dir()


def test_rbm_and_dbn_train_and_sample_gibbs_chains_via_the_cli(dlx, workdir):
    dlx("train", "model=rbm", "dataset=digits", "model.hidden=32", "trainer.epochs=2", "logger=none", "hydra.run.dir=rbm", check=True)
    dlx("sample", "run=rbm", "n_chains=5", "n_frames=4", "steps_between=20", "seed=1", check=True)
    assert png_size(workdir / "rbm" / "samples" / "gibbs.png") == ((5 * 9 + 1) * 2, (5 * 9 + 1) * 2)  # start + 4 frames
    first = (workdir / "rbm" / "samples" / "gibbs.png").read_bytes()
    dlx("sample", "run=rbm", "n_chains=5", "n_frames=4", "steps_between=20", "seed=1", check=True)
    assert (workdir / "rbm" / "samples" / "gibbs.png").read_bytes() == first
    dlx("sample", "run=rbm", "n_chains=5", "n_frames=4", "steps_between=20", "seed=2", "start=noise", "out=noise", check=True)
    assert (workdir / "noise" / "gibbs.png").read_bytes() != first
    proc = dlx("predict", "run=rbm", "inputs=noise/gibbs.png")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "dlx predict: error: run=rbm: model=rbm learned no labels to predict; draw from it with dlx sample run=rbm"

    proc = dlx("eval", "run=rbm", check=True)
    assert "test_pseudo_likelihood" in proc.stdout and "(at training:" in proc.stdout

    dlx("train", "model=dbn", "dataset=digits", "model.hidden=[32,16]", "model.pretrain.epochs=1", "trainer.epochs=1",
        "logger=none", "hydra.run.dir=dbn", check=True)
    assert "pretrain/layer2 epoch 1/1" in (workdir / "dbn" / "train.log").read_text()
    dlx("sample", "run=dbn", "n_chains=3", "n_frames=2", "steps_between=5", check=True)
    assert png_size(workdir / "dbn" / "samples" / "gibbs.png") == ((3 * 9 + 1) * 2, (3 * 9 + 1) * 2)


def test_sdae_trains_and_evaluates_via_the_cli(dlx, workdir):
    dlx("train", "model=sdae", "dataset=digits", "model.hidden=[32,16]", "model.pretrain.corruption=[0.2]",
        "model.pretrain.epochs=1", "trainer.epochs=1", "logger=none", "hydra.run.dir=sdae", check=True)
    log = (workdir / "sdae" / "train.log").read_text()
    assert "pretrain/layer1: AutoEncoder 64-32" in log and "pretrain/layer2: AutoEncoder 32-16" in log
    assert "test_accuracy" in dlx("eval", "run=sdae", check=True).stdout
    assert (workdir / "sdae" / "plots" / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["model=rbm", "dataset.scaling=zscore"], "model=rbm needs inputs in [0, 1] (its visible units are Bernoulli probabilities)"),
    (["model=sdae", "model.hidden=[64,32,16]"], "model.pretrain.corruption: 2 levels for 3 hidden layers (model.hidden=[64, 32, 16])"),
    (["model=sparse_ae", "model.activation=relu"], "model.sparsity_weight: the KL sparsity penalty needs activation=sigmoid"),
    (["model=dae", "model.noise_level=1.5"], "model.noise_level: masking noise needs a fraction in (0, 1), got 1.5"),
    (["model=rbm", "model.k=0"], "model.k: 0 is outside the allowed range [1, 1000]"),
])
def test_generative_bad_input_one_line_exit_2(dlx, workdir, args, message):
    proc = dlx("train", *args, "dataset=digits", "logger=none")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("dlx train: error: ")
    assert message in proc.stderr
    assert not (workdir / "outputs").exists() or not any(p.is_file() for p in (workdir / "outputs").rglob("*"))


def test_sampling_a_classifier_or_mismatched_pretrained_layers_fail_clearly(dlx, workdir):
    dlx("train", "model=mlp", "dataset=digits", "trainer.epochs=1", "logger=none", "hydra.run.dir=mlp", check=True)
    proc = dlx("sample", "run=mlp")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("dlx sample: error: run=mlp: model=mlp does not generate samples; dlx sample works on runs "
                                   "of model=autoencoder, captioning, char_rnn, dbn, rbm (ae, dae and sparse_ae are autoencoders)")
    assert not (workdir / "mlp" / "samples").exists()

    dlx("train", "model=dbn", "dataset=digits", "model.hidden=[32,16]", "model.pretrain.epochs=1", "trainer.epochs=1",
        "logger=none", "hydra.run.dir=dbn", check=True)
    proc = dlx("train", "model=dbn", "dataset=digits", "model.hidden=[32,32,16]", "model.pretrain.from_run=dbn", "logger=none",
               "hydra.run.dir=again")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("model.pretrain.from_run=dbn: its pretrained layers are 64-32-16, "
                                        "but this network is 64-32-32-16 (input-model.hidden); they must match")
    assert not (workdir / "again" / "model.keras").exists()
    # matching sizes: the earlier pretraining is reused, no stage runs again
    dlx("train", "model=dbn", "dataset=digits", "model.hidden=[32,16]", "model.pretrain.from_run=dbn", "trainer.epochs=1",
        "logger=none", "hydra.run.dir=reuse", check=True)
    log = (workdir / "reuse" / "train.log").read_text()
    assert "pretrained layers from dbn" in log and "pretrain/layer1 epoch" not in log


# --------------------------------------------------------------------------- what autoencoders learn
def test_a_denoising_autoencoder_removes_noise(tmp_path):
    """Trained with 30 % masking noise, a DAE's reconstruction of a corrupted test digit is closer to
    the clean digit than the corrupted input is."""
    metrics, objects = train(tiny_cfg("model=dae", "dataset=digits", "model.hidden=[64]", "model.activation=sigmoid",
                                      "model.tied=false", "model.noise_level=0.3", "trainer.epochs=40",
                                      "trainer.batch_size=32", "optimizer.lr=3e-3"), tmp_path / "dae")
    model, data = objects["model"], objects["data"]
    clean = data.test.x.reshape(len(data.test.x), -1)
    corrupted = clean * (np.random.default_rng(0).random(clean.shape) >= 0.3)
    restored = np.asarray(model(corrupted.reshape(data.test.x.shape), training=False)).reshape(clean.shape)
    corrupted_error = ((corrupted - clean) ** 2).mean()
    restored_error = ((restored - clean) ** 2).mean()
    assert restored_error < 0.6 * corrupted_error, (restored_error, corrupted_error)


def test_a_sparse_autoencoders_mean_activation_is_near_its_target(tmp_path):
    """The KL penalty (weight 3, target 0.05) holds the hidden units' mean activation on test digits
    near 0.05; the same network without it sits far above."""
    base = ["model=sparse_ae", "dataset=digits", "model.hidden=[64]", "trainer.epochs=40", "trainer.batch_size=32",
            "optimizer.lr=3e-3"]
    means = {}
    for weight in (3.0, 0.0):
        _, objects = train(tiny_cfg(*base, f"model.sparsity_weight={weight}"), tmp_path / str(weight))
        means[weight] = float(np.asarray(objects["model"].encode(objects["data"].test.x)).mean())
    assert abs(means[3.0] - 0.05) < 0.03 and means[0.0] > 0.2, means
