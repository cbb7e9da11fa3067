"""Logistic regression: p(y=1|x) = sigmoid(w.x + b) for two classes, softmax(W x + b) for more.
The output is always the (N, classes) probabilities, so evaluation is shared with every classifier.

With `optimizer=newton` every training step is one Newton-Raphson step on the whole training
split (IRLS for the binary case): the gradient g and the exact Hessian H of the mean log-loss
plus l2 ||W||^2, and theta -= t (H + damping I)^-1 g, the step length t halved from `lr` until
the objective decreases enough (Armijo backtracking: damped Newton). The system is solved by conjugate
gradients (preconditioned by the Hessian's diagonal) on Hessian-vector products (H v = X^T (S (X v)) / n + 2 l2 v), so H (size
(D+1)^2 classes^2) is never formed; CG stops at the usual truncated-Newton tolerance
min(0.1, sqrt|g|) |g| (the forcing term of an inexact Newton method: superlinear local convergence). Training stops when the
gradient's largest component is below `optimizer.tol`. `optimizer.hessian_fraction` < 1 takes the
curvature from every (1/fraction)-th example only (subsampled Newton; the gradient stays exact),
which makes each CG iteration that much cheaper on large data.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from dlx.models.classic import Classic, features_of, flat

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable("dlx")
class LogisticRegression(Classic):
    def __init__(self, n_inputs: int, n_classes: int, l1: float = 0.0, l2: float = 0.0, zero_init: bool = True,
                 newton: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.n_inputs, self.n_classes, self.l1, self.l2, self.zero_init = n_inputs, n_classes, l1, l2, zero_init
        self.newton = newton  # {"lr", "tol", "damping", "max_cg"} or None for gradient optimizers
        self.outputs_n = 1 if n_classes == 2 else n_classes

    def build(self, input_shape):
        reg = keras.regularizers.L1L2(l1=self.l1, l2=self.l2) if (self.l1 or self.l2) else None
        init = "zeros" if self.zero_init else "glorot_uniform"
        self.kernel = self.add_weight(shape=(self.n_inputs, self.outputs_n), initializer=init, regularizer=reg, name="kernel")
        self.bias = self.add_weight(shape=(self.outputs_n,), initializer="zeros", name="bias")

    def call(self, x):
        z = tf.matmul(flat(x), self.kernel) + self.bias
        if self.outputs_n == 1:
            p = tf.sigmoid(z)
            return tf.concat([1.0 - p, p], axis=1)
        return tf.nn.softmax(z)

    # ------------------------------------------------------------------ Newton's method
    def train_step(self, data):
        if self.newton is None:
            return super().train_step(data)
        x, y = data[0], data[1]
        xa = flat(x)
        xa = tf.concat([xa, tf.ones_like(xa[:, :1])], axis=1)  # bias as the last input
        n = tf.cast(tf.shape(xa)[0], tf.float32)
        theta = tf.concat([self.kernel, self.bias[None, :]], axis=0)  # (D+1, C)
        mask = tf.concat([tf.ones_like(self.kernel), tf.zeros_like(self.bias[None, :])], axis=0)  # bias unpenalised
        y = tf.reshape(tf.cast(y, tf.int32), (-1,))
        l2, damping = self.l2, self.newton["damping"]
        binary = self.outputs_n == 1
        targets = tf.cast(y[:, None], tf.float32) if binary else tf.one_hot(y, self.n_classes)

        def objective(th):  # mean log-loss + l2 ||W||^2
            logits = tf.matmul(xa, th)
            if binary:
                nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
            else:
                nll = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
            return tf.reduce_mean(nll) + l2 * tf.reduce_sum(tf.square(mask * th))

        z = tf.matmul(xa, theta)
        p = tf.sigmoid(z) if binary else tf.nn.softmax(z)
        residual = p - targets
        # the curvature from every `stride`-th example (1: the exact Hessian; more: subsampled Newton)
        stride = self.newton.get("hessian_stride", 1)
        xh, ph = xa[::stride], p[::stride]
        nh = tf.cast(tf.shape(xh)[0], tf.float32)
        spread = ph * (1.0 - ph)  # binary: the IRLS weights; softmax: the Hessian's diagonal blocks

        def curvature(a):
            if binary:
                return spread * a
            pa = ph * a  # the softmax Jacobian applied row by row: P*a - P*(P.a)
            return pa - ph * tf.reduce_sum(pa, axis=1, keepdims=True)

        if binary:
            center = tf.identity
        else:
            # adding one vector to every class column changes no probability: Newton works in the
            # subspace of class-centred parameters (where the l2 optimum lies), in which H is definite
            def center(v):
                return v - tf.reduce_mean(v, axis=1, keepdims=True)

        def hess_vec(v):
            v = center(v)
            hv = tf.matmul(xh, curvature(tf.matmul(xh, v)), transpose_a=True) / nh + 2.0 * l2 * mask * v + damping * v
            return center(hv)

        grad = center(tf.matmul(xa, residual, transpose_a=True) / n + 2.0 * l2 * mask * theta)
        # Jacobi preconditioner: the Hessian's diagonal, sum_n x_nd^2 S_nk / n + 2 l2 (+ damping)
        diagonal = tf.matmul(tf.square(xh), spread, transpose_a=True) / nh + 2.0 * l2 * mask + damping

        def precondition(r):
            return center(r / tf.maximum(diagonal, 1e-12))

        direction, cg_iters = _conjugate_gradients(hess_vec, grad, self.newton["max_cg"], precondition)
        loss = objective(theta)
        t = _backtrack(objective, theta, loss, grad, direction, self.newton["lr"])
        step = t * direction
        new = theta - step
        self.kernel.assign(new[:-1])
        self.bias.assign(new[-1])
        return {"loss": loss, "grad": tf.reduce_max(tf.abs(grad)), "step": tf.reduce_max(tf.abs(step)),
                "step_length": t, "cg_iterations": tf.cast(cg_iters, tf.float32)}

    def fit_callbacks(self) -> list:
        return [NewtonConverged(self.newton["tol"])] if self.newton is not None else []

    def get_config(self):
        return {**super().get_config(), "n_inputs": self.n_inputs, "n_classes": self.n_classes, "l1": self.l1,
                "l2": self.l2, "zero_init": self.zero_init, "newton": self.newton}


def _backtrack(objective, theta, f0, grad, direction, t0: float, shrink: float = 0.5, tries: int = 20):
    """Damped Newton: the longest t in t0, t0/2, ... with sufficient decrease (Armijo, c = 1e-4)."""
    slope = -tf.reduce_sum(grad * direction)  # directional derivative along -direction (< 0)

    def too_long(t, k):
        return tf.logical_and(k < tries, objective(theta - t * direction) > f0 + 1e-4 * t * slope)

    t, _ = tf.while_loop(too_long, lambda t, k: (t * shrink, k + 1), (tf.constant(t0, tf.float32), tf.constant(0)))
    return t


def _conjugate_gradients(matvec, b, max_iter: int, precondition):
    """Solve A x = b for symmetric positive (semi-)definite A given only x -> A x, by conjugate
    gradients preconditioned with `precondition(r)` (an approximation of A^-1 r)."""

    def dot(u, v):
        return tf.reduce_sum(u * v)

    b_norm = tf.sqrt(dot(b, b))
    target = tf.minimum(0.1, tf.sqrt(b_norm)) * b_norm
    z0 = precondition(b)

    def cond(i, x, r, p, rz):
        return tf.logical_and(i < max_iter, tf.sqrt(dot(r, r)) > target)

    def body(i, x, r, p, rz):
        ap = matvec(p)
        curv = dot(p, ap)
        alpha = tf.where(curv > 0, rz / tf.maximum(curv, 1e-30), 0.0)  # no curvature: stop moving
        x = x + alpha * p
        r = tf.where(curv > 0, r - alpha * ap, tf.zeros_like(r))
        z = precondition(r)
        rz_new = dot(r, z)
        p = z + (rz_new / tf.maximum(rz, 1e-30)) * p
        return i + 1, x, r, p, rz_new

    i, x, *_ = tf.while_loop(cond, body, (tf.constant(0), tf.zeros_like(b), b, z0, dot(b, z0)))
    return x, i


class NewtonConverged(keras.callbacks.Callback):
    """Stop at the first step that started from a point whose largest gradient component is below
    `tol` (first-order optimality; a parameter-change test stalls at float32's resolution)."""

    def __init__(self, tol: float):
        super().__init__()
        self.tol = tol
        self.iterations = 0

    def on_epoch_end(self, epoch, logs=None):
        self.iterations = epoch + 1
        if (logs or {}).get("grad", float("inf")) < self.tol:
            log.info("newton: converged after %d iterations (largest gradient component %.1e < tol %.0e)", epoch + 1, logs["grad"], self.tol)
            self.model.stop_training = True


def build(cfg, reg, spec, optimizer=None, trainer=None) -> keras.Model:
    newton = None
    if optimizer is not None and str(optimizer.name) == "newton":
        newton = {"lr": float(optimizer.lr), "tol": float(optimizer.tol), "damping": float(optimizer.damping),
                  "max_cg": int(optimizer.max_cg), "hessian_stride": max(1, round(1.0 / optimizer.hessian_fraction))}
    model = LogisticRegression(features_of(spec), spec.num_classes, reg.l1, reg.l2, cfg.zero_init, newton, name="logistic_regression")
    model.build((None, *spec.input_shape))
    return model
