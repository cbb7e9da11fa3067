"""Soft-margin support vector machine trained by sequential minimal optimisation (SMO).

Training solves, for each pair of classes (one-vs-one), the dual problem
    min_a 1/2 a^T Q a - 1^T a,  0 <= a_i <= C,  y^T a = 0,  Q_ij = y_i y_j K(x_i, x_j)
with LIBSVM's solver (Fan, Chen & Lin 2005): the working pair is the maximal violating i and the
j with the largest second-order decrease of the objective; a two-variable analytic update; stop
when the maximal KKT violation is below `tol`. Kernel rows come from a cache of `cache_mb` per
pair (the whole kernel matrix when it fits).

Why SMO does not run in `train_step`: each iteration picks the next pair from the full gradient
vector and changes two coordinates, a sequential, data-dependent loop over the whole training set
with no mini-batches to feed. So the family implements `solve(x, y)` (NumPy), which the training
loop calls in place of `model.fit`; everything after it is shared: the fitted model is a Keras
model whose `call` (TensorFlow) computes the one-vs-one decision values from the support vectors,
so evaluation, logging, saving, `dlx eval` and `dlx predict` are the same as for every family.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict

import keras
import numpy as np
import tensorflow as tf

from dlx.errors import DlxError
from dlx.models.classic import features_of, flat

TAU = 1e-12  # LIBSVM's floor for a non-positive curvature
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- kernels (NumPy, training)
def kernel_matrix(kind: str, a: np.ndarray, b: np.ndarray, gamma: float, degree: int, coef0: float) -> np.ndarray:
    dot = a @ b.T
    if kind == "linear":
        return dot
    if kind == "poly":
        return (gamma * dot + coef0) ** degree
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * dot
    return np.exp(-gamma * np.maximum(sq, 0.0))


class KernelRows:
    """Rows K(x_i, X) on demand: the full matrix when it fits in `cache_bytes`, else an LRU of rows."""

    def __init__(self, x: np.ndarray, kernel, cache_bytes: float):
        self.x, self.kernel = x, kernel
        n = len(x)
        self.full = kernel(x, x) if n * n * 8 <= cache_bytes else None
        self.rows: OrderedDict[int, np.ndarray] = OrderedDict()
        self.capacity = max(2, int(cache_bytes // (8 * n)))
        if self.full is not None:
            self.diag = np.diag(self.full).copy()
        else:  # K(x_i, x_i) from small diagonal blocks, not n one-element kernel calls
            self.diag = np.concatenate([np.diagonal(kernel(x[i : i + 256], x[i : i + 256])) for i in range(0, n, 256)])

    def row(self, i: int) -> np.ndarray:
        if self.full is not None:
            return self.full[i]
        r = self.rows.get(i)
        if r is None:
            r = self.rows[i] = self.kernel(self.x[i : i + 1], self.x)[0]
            if len(self.rows) > self.capacity:
                self.rows.popitem(last=False)
        else:
            self.rows.move_to_end(i)
        return r


def smo(k: KernelRows, y: np.ndarray, c: float, tol: float, max_iter: int | None) -> tuple[np.ndarray, float, int]:
    """LIBSVM's SMO with second-order working-set selection; returns (alpha, rho, iterations)."""
    n = len(y)
    alpha = np.zeros(n)
    grad = -np.ones(n)  # gradient of the dual objective, Q alpha - 1
    qd = k.diag
    pos = y > 0
    up = np.ones(n, dtype=bool)  # I_up: y=+1 with alpha < C, y=-1 with alpha > 0
    low = np.ones(n, dtype=bool)  # I_low: y=+1 with alpha > 0, y=-1 with alpha < C
    up[~pos] = False
    low[pos] = False
    iterations = 0
    while max_iter is None or iterations < max_iter:
        yg = y * grad
        masked = np.where(up, -yg, -np.inf)
        i = int(masked.argmax())
        gmax = masked[i]
        gmax2 = np.where(low, yg, -np.inf).max()
        if gmax + gmax2 < tol or not np.isfinite(gmax):
            break
        ki = k.row(i)
        b = gmax + yg  # > 0 for the t in I_low that violate KKT together with i
        a = qd[i] + qd - 2.0 * ki
        a = np.where(a > 0, a, TAU)
        obj = np.where(low & (b > 0), -(b * b) / a, np.inf)
        j = int(obj.argmin())
        if not np.isfinite(obj[j]):
            break
        kj = k.row(j)
        ai, aj = alpha[i], alpha[j]
        quad = max(qd[i] + qd[j] - 2.0 * ki[j], TAU)  # Q_ii + Q_jj -/+ 2 Q_ij, in kernel terms either way
        if y[i] != y[j]:
            delta = (-grad[i] - grad[j]) / quad
            diff = ai - aj
            ai, aj = ai + delta, aj + delta
            if diff > 0:
                if aj < 0:
                    aj, ai = 0.0, diff
            elif ai < 0:
                ai, aj = 0.0, -diff
            if diff > 0:
                if ai > c:
                    ai, aj = c, c - diff
            elif aj > c:
                aj, ai = c, c + diff
        else:
            delta = (grad[i] - grad[j]) / quad
            total = ai + aj
            ai, aj = ai - delta, aj + delta
            if total > c:
                if ai > c:
                    ai, aj = c, total - c
            elif aj < 0:
                aj, ai = 0.0, total
            if total > c:
                if aj > c:
                    aj, ai = c, total - c
            elif ai < 0:
                ai, aj = 0.0, total
        d_i, d_j = ai - alpha[i], aj - alpha[j]
        alpha[i], alpha[j] = ai, aj
        grad += (y[i] * d_i) * (y * ki) + (y[j] * d_j) * (y * kj)
        for t in (i, j):
            up[t] = alpha[t] < c if pos[t] else alpha[t] > 0
            low[t] = alpha[t] > 0 if pos[t] else alpha[t] < c
        iterations += 1
    return alpha, _rho(alpha, y * grad, y, c), iterations


def _rho(alpha: np.ndarray, yg: np.ndarray, y: np.ndarray, c: float) -> float:
    """The offset (LIBSVM calculate_rho): mean y G over free vectors, else the feasible midpoint."""
    free = (alpha > 0) & (alpha < c)
    if free.any():
        return float(yg[free].mean())
    at_upper, pos = alpha >= c, y > 0
    ub_mask = (at_upper & ~pos) | (~at_upper & pos)
    lb_mask = ~ub_mask
    ub = yg[ub_mask].min() if ub_mask.any() else np.inf
    lb = yg[lb_mask].max() if lb_mask.any() else -np.inf
    return float((ub + lb) / 2)


# --------------------------------------------------------------------------- the model
def multiclass_hinge(y_true, scores):
    """The loss dlx reports for an SVM: max(0, 1 + best wrong score - true score), mean over examples."""
    y = tf.reshape(tf.cast(y_true, tf.int32), (-1,))
    onehot = tf.one_hot(y, tf.shape(scores)[1], dtype=scores.dtype)
    true = tf.reduce_sum(scores * onehot, axis=1)
    wrong = tf.reduce_max(scores - 1e9 * onehot, axis=1)
    return tf.maximum(0.0, 1.0 + wrong - true)


@keras.saving.register_keras_serializable("dlx")
class SVM(keras.Model):
    """Outputs scikit-learn's one-vs-rest view of the one-vs-one decisions: votes per class plus
    the summed decision values squashed into (-1/3, 1/3), which only break ties."""

    def __init__(self, n_inputs: int, n_classes: int, kernel: str = "rbf", C: float = 1.0, gamma: str = "scale",
                 degree: int = 3, coef0: float = 0.0, tol: float = 1e-3, cache_mb: float = 200.0,
                 max_iter: int | None = None, n_sv: int = 0, gamma_value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_inputs, self.n_classes = n_inputs, n_classes
        self.kernel_name, self.C, self.gamma, self.degree, self.coef0 = kernel, C, gamma, degree, coef0
        self.tol, self.cache_mb, self.max_iter = tol, cache_mb, max_iter
        self.n_sv, self.gamma_value = n_sv, gamma_value
        self.pairs = [(a, b) for a in range(n_classes) for b in range(a + 1, n_classes)]
        self.summary_metrics: dict = {}

    def build(self, input_shape=None):
        p = len(self.pairs)
        self.support = self.add_weight(shape=(self.n_sv, self.n_inputs), initializer="zeros", trainable=False, name="support")
        self.dual = self.add_weight(shape=(self.n_sv, p), initializer="zeros", trainable=False, name="dual_coef")
        self.rho = self.add_weight(shape=(p,), initializer="zeros", trainable=False, name="rho")
        first = np.zeros((p, self.n_classes), np.float32)
        second = np.zeros((p, self.n_classes), np.float32)
        for q, (a, b) in enumerate(self.pairs):
            first[q, a] = second[q, b] = 1.0
        self._first, self._second = tf.constant(first), tf.constant(second)

    def _gamma(self, x: np.ndarray) -> float:
        if self.gamma == "scale":
            var = float(x.var())
            return 1.0 / (x.shape[1] * var) if var > 0 else 1.0
        if self.gamma == "auto":
            return 1.0 / x.shape[1]
        return float(self.gamma)

    def kernel_np(self, a, b):
        return kernel_matrix(self.kernel_name, a, b, self.gamma_value, self.degree, self.coef0)

    def solve(self, x: np.ndarray, y: np.ndarray) -> dict:
        """Fit every one-vs-one problem by SMO; build the model from the support vectors."""
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        y = np.asarray(y).reshape(-1)
        self.gamma_value = self._gamma(x)
        t0 = time.perf_counter()
        coef_by_index: dict[int, np.ndarray] = {}
        rhos, iterations = [], 0
        pairs = self.pairs
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=len(pairs), desc="SMO", unit="pair", leave=False)
        for q, (a, b) in enumerate(pairs):
            idx = np.flatnonzero((y == a) | (y == b))
            if len(idx) == 0 or not ((y[idx] == a).any() and (y[idx] == b).any()):
                raise DlxError(f"svm: classes {a} and {b} need training examples each (check dataset.subset)")
            yy = np.where(y[idx] == a, 1.0, -1.0)
            rows = KernelRows(x[idx], self.kernel_np, self.cache_mb * 2**20)
            alpha, rho, its = smo(rows, yy, self.C, self.tol, self.max_iter)
            iterations += its
            rhos.append(rho)
            for t in np.flatnonzero(alpha > 0):
                coef_by_index.setdefault(int(idx[t]), np.zeros(len(pairs)))[q] = alpha[t] * yy[t]
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        order = sorted(coef_by_index)
        self.n_sv = len(order)
        self.build()
        self.support.assign(x[order].astype(np.float32))
        self.dual.assign(np.stack([coef_by_index[i] for i in order]).astype(np.float32))
        self.rho.assign(np.asarray(rhos, np.float32))
        per_class = np.bincount(y[order].astype(int), minlength=self.n_classes)
        seconds = time.perf_counter() - t0
        log.info("SMO: %d one-vs-one problem(s), %d iterations, %d support vectors (%s per class), gamma %.4g, %.1fs",
                 len(pairs), iterations, self.n_sv, "/".join(map(str, per_class)), self.gamma_value, seconds)
        self.summary_metrics = {"support_vectors": self.n_sv, "support_vectors_per_class": per_class.tolist(),
                                "smo_iterations": iterations, "gamma": self.gamma_value}
        return {"smo_iterations": float(iterations), "support_vectors": float(self.n_sv)}

    def decision_values(self, x):
        """(N, pairs) one-vs-one decision values f(x) = sum a_i y_i K(x_i, x) - rho."""
        x = flat(x)
        sv = self.support
        dot = tf.matmul(x, sv, transpose_b=True)
        if self.kernel_name == "linear":
            k = dot
        elif self.kernel_name == "poly":
            k = tf.pow(self.gamma_value * dot + self.coef0, float(self.degree))
        else:
            sq = tf.reduce_sum(x * x, 1, keepdims=True) + tf.reduce_sum(sv * sv, 1)[None, :] - 2.0 * dot
            k = tf.exp(-self.gamma_value * tf.maximum(sq, 0.0))
        return tf.matmul(k, self.dual) - self.rho

    def call(self, x):
        f = self.decision_values(x)
        wins = tf.cast(f > 0, tf.float32)
        votes = tf.matmul(wins, self._first) + tf.matmul(1.0 - wins, self._second)
        confidence = tf.matmul(f, self._first - self._second)
        return votes + confidence / (3.0 * (tf.abs(confidence) + 1.0))

    def get_config(self):
        return {**super().get_config(), "n_inputs": self.n_inputs, "n_classes": self.n_classes, "kernel": self.kernel_name,
                "C": self.C, "gamma": self.gamma, "degree": self.degree, "coef0": self.coef0, "tol": self.tol,
                "cache_mb": self.cache_mb, "max_iter": self.max_iter, "n_sv": self.n_sv, "gamma_value": self.gamma_value}

    def build_from_config(self, config):
        self.build()


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    # built by `solve`, once the number of support vectors is known
    return SVM(features_of(spec), spec.num_classes, str(cfg.kernel), float(cfg.C), str(cfg.gamma), int(cfg.degree), float(cfg.coef0),
               float(cfg.tol), float(cfg.cache_mb), cfg.max_iter, name="svm")
