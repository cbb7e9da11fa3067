"""PNG plots for the run directory: learning curves, confusion matrix, decision boundary, regression
fit, and image grids (samples, reconstructions, filters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: dict[str, list[float]], path: Path) -> Path:
    """One panel per metric (loss, accuracy, ...), train and validation on the same axes."""
    plt = pyplot()
    names = sorted({k.removeprefix("val_") for k in history if k != "learning_rate"}, key=lambda k: (k != "loss", k))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history.get(name, history.get(f"val_{name}"))) + 1)
        if name in history:
            ax.plot(epochs, history[name], marker="o", ms=3, label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", ms=3, label="validation")
        ax.set(xlabel="epoch", title=name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(cm: np.ndarray, class_names: list[str], path: Path, title: str = "confusion matrix (test)") -> Path:
    plt = pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def decision_boundary(model, x: np.ndarray, y: np.ndarray, spec, path: Path, steps: int = 200) -> Path:
    """Predicted class over the plane of a 2-D input, with the (test) points on top."""
    plt = pyplot()
    pad = 0.5
    (x0, y0), (x1, y1) = x.min(axis=0) - pad, x.max(axis=0) + pad
    gx, gy = np.meshgrid(np.linspace(x0, x1, steps), np.linspace(y0, y1, steps))
    grid = np.c_[gx.ravel(), gy.ravel()].astype(np.float32)
    probs = model.predict(grid, batch_size=4096, verbose=0)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.contourf(gx, gy, probs.argmax(axis=1).reshape(gx.shape), levels=np.arange(spec.num_classes + 1) - 0.5, cmap="coolwarm", alpha=0.25)
    if spec.num_classes == 2:
        ax.contour(gx, gy, probs[:, 1].reshape(gx.shape), levels=[0.5], colors="k", linewidths=1)
    for k, name in enumerate(spec.class_names):
        ax.scatter(*x[y == k].T, s=10, label=name)
    names = spec.feature_names or ["x1", "x2"]
    scaled = "" if spec.scaling == "none" else f" ({spec.scaling})"
    ax.set(xlabel=names[0] + scaled, ylabel=names[1] + scaled, title=f"{model.name}: decision boundary (test points)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def regression_fit(x: np.ndarray, y: np.ndarray, pred: np.ndarray, spec, path: Path) -> Path:
    """One input: the data and the fitted curve. More: predicted against true values."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    y, pred = y.reshape(-1), pred.reshape(-1)
    if x.reshape(len(x), -1).shape[1] == 1:
        xs = x.reshape(-1)
        order = np.argsort(xs)
        ax.scatter(xs, y, s=8, alpha=0.6, label="test data")
        ax.plot(xs[order], pred[order], color="C3", label="model")
        ax.set(xlabel=(spec.feature_names or ["x"])[0] + ("" if spec.scaling == "none" else f" ({spec.scaling})"), ylabel="y")
    else:
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax.scatter(y, pred, s=10, alpha=0.7)
        ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="y = prediction")
        ax.set(xlabel="true", ylabel="predicted")
    r2 = 1 - ((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12)
    ax.set_title(f"{spec.name}: test R^2 = {r2:.3f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_grid(images: np.ndarray, path: Path, zoom: int = 2) -> Path:
    """(rows, cols, h, w) values in [0, 1] -> one grey PNG, tiles 1 pixel apart, each pixel
    `zoom` x `zoom`: (rows * (h + 1) + 1) * zoom high, (cols * (w + 1) + 1) * zoom wide."""
    rows, cols, h, w = images.shape
    canvas = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1), 0.5, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            canvas[1 + r * (h + 1) : (r + 1) * (h + 1), 1 + c * (w + 1) : (c + 1) * (w + 1)] = images[r, c]
    canvas = np.kron(np.clip(canvas, 0, 1), np.ones((zoom, zoom), np.float32))
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(canvas * 255).astype(np.uint8), mode="L").save(path, optimize=True)  # 8-bit grey
    return path


def tiles(vectors: np.ndarray, shape: tuple[int, int], cols: int | None = None, normalise: bool = False) -> np.ndarray:
    """(n, h*w) -> (rows, cols, h, w) for `image_grid`, empty cells black; `normalise` stretches
    each tile to [0, 1] (filters)."""
    n = len(vectors)
    cols = cols or max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    v = np.asarray(vectors, np.float32).reshape(n, -1)
    if normalise:
        lo, hi = v.min(axis=1, keepdims=True), v.max(axis=1, keepdims=True)
        v = (v - lo) / np.where(hi > lo, hi - lo, 1.0)
    out = np.zeros((rows * cols, *shape), np.float32)
    out[:n] = v.reshape(n, *shape)
    return out.reshape(rows, cols, *shape)


def picture_shape(input_shape) -> tuple[int, int]:
    """How one input is drawn: an image as itself, a feature vector as a one-pixel-high strip."""
    return (int(input_shape[0]), int(input_shape[1])) if len(input_shape) >= 2 else (1, int(np.prod(input_shape)))


def run_figures(family, model, data, result, plot_dir: Path, test_batches) -> dict[str, Path]:
    """Learning curves, and by task: confusion matrix, decision boundary (2-D inputs), fit plot,
    or what an unsupervised family draws (filters, reconstructions). Returns the figures worth
    logging as images. `test_batches`: the test split as it was evaluated (`loop.in_order`)."""
    learning_curves(result.history, plot_dir / "learning_curves.png")
    own = family.figures(model, data, plot_dir)  # unsupervised and sequence families draw their own
    if own is not None:
        return own
    out = model.predict(test_batches, verbose=0)
    spec = data.spec
    if spec.task == "regression":
        return {"fit": regression_fit(data.test.x, data.test.y, out, spec, plot_dir / "fit.png")}
    cm = confusion(data.test.y, out.argmax(axis=1), spec.num_classes)
    shown = {"confusion_matrix": confusion_matrix(cm, spec.class_names, plot_dir / "confusion_matrix.png")}
    if spec.kind == "tabular" and spec.input_shape == (2,):
        shown["decision_boundary"] = decision_boundary(model, data.test.x, data.test.y, spec, plot_dir / "decision_boundary.png")
    return shown


def confusion(y_true, y_pred, num_classes: int):
    import numpy as np

    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm
