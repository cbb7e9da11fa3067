"""Bernoulli-Bernoulli restricted Boltzmann machine trained by contrastive divergence.

    E(v, h) = -v.b - h.c - v W h          p(h_j = 1 | v) = sigm(c_j + v W[:, j])
    F(v) = -v.b - sum_j softplus(c_j + v W[:, j])      p(v_i = 1 | h) = sigm(b_i + W[i] h)

The update is the log-likelihood gradient estimate <v h>_data - <v h>_model: the positive phase
from the batch (hidden probabilities), the negative phase from the end of a k-step Gibbs chain
(sampled visibles, hidden probabilities). CD-k starts that chain at the batch's own hidden
sample; PCD-k (Tieleman 2008) at chains that persist from batch to batch. `train_step` hands the
estimate to the optimizer as a gradient: nothing is back-propagated through the sampling.

Logged per epoch, for train and validation data:
- `loss`: reconstruction cross-entropy of v -> p(h|v) -> p(v|h), summed over pixels;
- `pseudo_likelihood`: D * log sigm(F(x with one random bit flipped) - F(x)) on binarised x,
  the stochastic estimate the book's tutorial and scikit-learn's `score_samples` use;
- `free_energy`: mean F(v).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dlx.models.classic import features_of, flat


def hidden_probs(v, w, c):
    return tf.sigmoid(tf.matmul(v, w) + c)


def visible_logits(h, w, b):
    return tf.matmul(h, w, transpose_b=True) + b


def free_energy(v, w, b, c):
    return -tf.linalg.matvec(v, b) - tf.reduce_sum(tf.nn.softplus(tf.matmul(v, w) + c), axis=1)


def bernoulli(probs, uniform):
    return tf.cast(uniform < probs, probs.dtype)


def cd_gradients(v0, h_start, w, b, c, u_v, u_h, ph0=None):
    """Contrastive-divergence gradient of the negative log-likelihood (batch means).

    `h_start` (chains x H, binary) starts the negative chain; `u_v[i]`, `u_h[i]` are the uniform
    numbers of Gibbs step i (k of each); `ph0` = p(h | v0) if already computed. Returns
    ((dW, db, dc), the chain's last hidden sample, for PCD to continue from).
    """
    ph0 = hidden_probs(v0, w, c) if ph0 is None else ph0
    h = h_start
    for uv, uh in zip(u_v, u_h):
        v = bernoulli(tf.sigmoid(visible_logits(h, w, b)), uv)
        ph = hidden_probs(v, w, c)
        h = bernoulli(ph, uh)
    n0, nk = tf.cast(tf.shape(v0)[0], v0.dtype), tf.cast(tf.shape(v)[0], v0.dtype)
    dw = tf.matmul(v, ph, transpose_a=True) / nk - tf.matmul(v0, ph0, transpose_a=True) / n0
    db = tf.reduce_mean(v, axis=0) - tf.reduce_mean(v0, axis=0)
    dc = tf.reduce_mean(ph, axis=0) - tf.reduce_mean(ph0, axis=0)
    return (dw, db, dc), h


def monitor_values(v, w, b, c, flip_index, pre=None):
    """(reconstruction cross-entropy, pseudo-likelihood, free energy) per example.

    `pre` = v W + c if already computed. The pseudo-likelihood flips bit `flip_index[n]` of
    x = round(v): x~ W differs from x W by one row of W, gathered instead of multiplied, so the
    three cost two matrix products besides `pre`.
    """
    pre = tf.matmul(v, w) + c if pre is None else pre
    energy = -tf.linalg.matvec(v, b) - tf.reduce_sum(tf.nn.softplus(pre), axis=1)
    logits = visible_logits(tf.sigmoid(pre), w, b)
    recon = tf.reduce_sum(tf.nn.softplus(logits) - v * logits, axis=1)  # -log p(v | mean-field h), stable
    x = tf.round(v)
    pre_x = tf.matmul(x, w) + c
    sign = 1.0 - 2.0 * tf.gather(x, flip_index, batch_dims=1)  # +1: the bit turns on, -1: off
    pre_flipped = pre_x + sign[:, None] * tf.gather(w, flip_index)
    bx = tf.linalg.matvec(x, b)
    fe_x = -bx - tf.reduce_sum(tf.nn.softplus(pre_x), axis=1)
    fe_flipped = -(bx + sign * tf.gather(b, flip_index)) - tf.reduce_sum(tf.nn.softplus(pre_flipped), axis=1)
    d = tf.cast(tf.shape(v)[1], v.dtype)
    return recon, d * tf.math.log_sigmoid(fe_flipped - fe_x), energy


def pseudo_likelihood(v, w, b, c, flip_index):
    """D * log sigm(F(x~) - F(x)) with x = round(v) and x~ = x with bit `flip_index[n]` flipped."""
    return monitor_values(v, w, b, c, flip_index)[1]


@keras.saving.register_keras_serializable("dlx")
class RBM(keras.Model):
    def __init__(self, n_visible: int, n_hidden: int, k: int = 1, persistent: bool = True, chains: int = 20,
                 l2: float = 0.0, visible_bias_init: str = "data", **kwargs):
        super().__init__(**kwargs)
        self.n_visible, self.n_hidden, self.k, self.persistent = n_visible, n_hidden, k, persistent
        self.chains, self.l2, self.visible_bias_init = chains, l2, visible_bias_init
        self.seeds = keras.random.SeedGenerator()
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "pseudo_likelihood", "free_energy")]

    def build(self, input_shape=None):
        d, h = self.n_visible, self.n_hidden
        self.w = self.add_weight(shape=(d, h), initializer=keras.initializers.RandomNormal(stddev=0.01), name="kernel")
        self.b = self.add_weight(shape=(d,), initializer="zeros", name="visible_bias")
        self.c = self.add_weight(shape=(h,), initializer="zeros", name="hidden_bias")
        # PCD's persistent chains (hidden samples); all off at the start, as in scikit-learn
        self.chain = self.add_weight(shape=(self.chains, h), initializer="zeros", trainable=False, name="chain")

    @property
    def metrics(self):
        return self.trackers

    def data_init(self, x) -> None:
        """Before fitting: visible biases log(p_i / (1 - p_i)), p_i the mean of input i in the
        training data (Hinton's practical guide, section 8), unless `visible_bias_init` is zero."""
        if self.visible_bias_init == "data":
            p = np.clip(np.asarray(x, np.float64).reshape(len(x), -1).mean(axis=0), 1e-3, 1 - 1e-3)
            self.b.assign(np.log(p / (1 - p)).astype(np.float32))

    def uniform(self, shape):
        """Uniform numbers from the model's seed stream (shape may be a tensor)."""
        return tf.random.stateless_uniform(shape, seed=tf.cast(self.seeds.next(), tf.int32))

    def encode(self, x):
        """p(h | v): the features a DBN passes up."""
        return hidden_probs(flat(x), self.w, self.c)

    def objective(self):
        return None, None  # train_step and test_step compute and report their own values

    def pretrained_layer(self):
        """(W, visible bias, hidden bias): what a DBN layer keeps of this RBM."""
        return self.w.numpy(), self.b.numpy(), self.c.numpy()

    def call(self, x):
        """Mean-field reconstruction p(v | p(h | v)), shaped like the input."""
        v = flat(x)
        return tf.reshape(tf.sigmoid(visible_logits(hidden_probs(v, self.w, self.c), self.w, self.b)), tf.shape(x))

    def train_step(self, data):
        v0 = flat(data[0] if isinstance(data, tuple) else data)
        pre = tf.matmul(v0, self.w) + self.c
        ph0 = tf.sigmoid(pre)
        h_start = self.chain if self.persistent else bernoulli(ph0, self.uniform(tf.shape(ph0)))
        n = tf.shape(h_start)[0]
        u_v = [self.uniform(tf.stack([n, self.n_visible])) for _ in range(self.k)]
        u_h = [self.uniform(tf.shape(h_start)) for _ in range(self.k)]
        logs = self.monitor(v0, pre)  # the weights this update starts from
        (dw, db, dc), h = cd_gradients(v0, h_start, self.w, self.b, self.c, u_v, u_h, ph0)
        if self.l2:
            dw += self.l2 * self.w
        if self.persistent:
            self.chain.assign(h)
        self.optimizer.apply_gradients([(dw, self.w), (db, self.b), (dc, self.c)])
        return logs

    def test_step(self, data):
        return self.monitor(flat(data[0] if isinstance(data, tuple) else data))

    def monitor(self, v, pre=None):
        n = tf.shape(v)[0]
        flip = tf.random.stateless_uniform(tf.stack([n]), tf.cast(self.seeds.next(), tf.int32), 0, self.n_visible, tf.int32)
        for tracker, value in zip(self.trackers, monitor_values(v, self.w, self.b, self.c, flip, pre)):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}

    def get_config(self):
        return {**super().get_config(), "n_visible": self.n_visible, "n_hidden": self.n_hidden, "k": self.k,
                "persistent": self.persistent, "chains": self.chains, "l2": self.l2,
                "visible_bias_init": self.visible_bias_init}


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    chains = trainer.batch_size if trainer is not None else 20
    model = RBM(features_of(spec), cfg.hidden, cfg.k, cfg.persistent, chains, reg.l2, str(cfg.visible_bias_init), name="rbm")
    model.build()
    return model


# --------------------------------------------------------------------------- sampling
def gibbs_frames(stack, v_start: np.ndarray, n_frames: int, steps_between: int, seed: int) -> np.ndarray:
    """Gibbs chains in the top RBM of `stack` ([(W, b, c)], bottom first), seen through the layers below.

    `v_start` (chains x D) is propagated up (mean field) to the top RBM's visibles; every frame is
    `steps_between` Gibbs steps further along, shown as p(v) at the top propagated down to the
    pixels. Returns (n_frames + 1, chains, D): the start, then the frames.
    """
    layers = [tuple(tf.constant(a, tf.float32) for a in layer) for layer in stack]
    *below, (w, b, c) = layers
    gen = tf.random.Generator.from_seed(seed)

    def down(p):
        for lw, lb, _ in reversed(below):
            p = tf.sigmoid(visible_logits(p, lw, lb))
        return p

    @tf.function
    def advance(v):
        def step(i, v, p):
            ph = hidden_probs(v, w, c)
            h = bernoulli(ph, gen.uniform(tf.shape(ph)))
            p = tf.sigmoid(visible_logits(h, w, b))
            return i + 1, bernoulli(p, gen.uniform(tf.shape(p))), p
        _, v, p = tf.while_loop(lambda i, *_: i < steps_between, step, (0, v, tf.zeros_like(v)))
        return v, p

    v = tf.constant(v_start, tf.float32)
    for lw, _, lc in below:
        v = hidden_probs(v, lw, lc)
    frames = [np.asarray(v_start, np.float32)]
    for _ in range(n_frames):
        v, p = advance(v)
        frames.append(down(p).numpy())
    return np.stack(frames)


def draw_chains(stack, data, cfg, out_dir: Path) -> dict[str, Path]:
    """`dlx sample` for RBMs and DBNs: Gibbs chains (one per column, a frame per row, the start on
    top) into gibbs.png, and the first layer's filters into filters.png."""
    from dlx import plots

    rng = np.random.default_rng(cfg.seed)
    shape = plots.picture_shape(data.spec.input_shape)
    n_visible = stack[0][0].shape[0]
    if cfg.start == "test":
        picked = rng.choice(len(data.test), cfg.n_chains, replace=cfg.n_chains > len(data.test))
        start = data.test.x[picked].reshape(cfg.n_chains, -1)
    else:  # noise
        start = (rng.random((cfg.n_chains, n_visible)) < 0.5).astype(np.float32)
    frames = gibbs_frames(stack, start, cfg.n_frames, cfg.steps_between, cfg.seed)
    return {
        "gibbs": plots.image_grid(frames.reshape(len(frames), cfg.n_chains, *shape), out_dir / "gibbs.png"),
        "filters": filters_png(stack[0][0], shape, cfg.n_filters, out_dir / "filters.png"),
    }


def filters_png(kernel: np.ndarray, shape, n: int, path: Path) -> Path:
    """The first `n` columns of a (inputs x units) kernel, one tile per unit."""
    from dlx import plots

    return plots.image_grid(plots.tiles(kernel.T[:n], shape, normalise=True), path)


def sample(model, run_dir, data, cfg, out_dir: Path) -> dict[str, Path]:
    return draw_chains([model.pretrained_layer()], data, cfg, out_dir)


def figures(model, data, plot_dir: Path) -> dict[str, Path]:
    from dlx import plots

    return {"filters": filters_png(model.w.numpy(), plots.picture_shape(data.spec.input_shape), 100, plot_dir / "filters.png")}
