"""PNG plots for the run directory: learning curves and the confusion matrix."""

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
    names = sorted((k for k in history if not k.startswith("val_") and k != "learning_rate"), key=lambda k: k != "loss")
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
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
