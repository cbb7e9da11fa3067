"""PyTorch Lightning peer for `make bench-peers`: LightningModule + LightningDataModule + Trainer.fit."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from dlx.data.idx import read_idx


class FashionDataModule(pl.LightningDataModule):
    def __init__(self, path: str, batch_size: int = 128):
        super().__init__()
        self.path, self.batch_size = path, batch_size

    def setup(self, stage=None):
        def load(prefix):
            x = read_idx(f"{self.path}/{prefix}-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
            y = read_idx(f"{self.path}/{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
            return torch.from_numpy(x), torch.from_numpy(y)

        x, y = load("train")
        self.train = torch.utils.data.TensorDataset(x[:-5000], y[:-5000])
        self.val = torch.utils.data.TensorDataset(x[-5000:], y[-5000:])
        self.test = torch.utils.data.TensorDataset(*load("t10k"))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self):
        return torch.utils.data.DataLoader(self.test, batch_size=self.batch_size)


def build(arch: str) -> nn.Module:
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(  # the book's LeNet-5, as dlx's book_cnn_mnist preset without dropout/L2
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


class Classifier(pl.LightningModule):
    def __init__(self, arch: str = "mlp", lr: float = 1e-3):
        super().__init__()
        self.net, self.lr = build(arch), lr
        self.epoch_seconds: list[float] = []
        self._correct = self._seen = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch, _):
        x, y = batch
        self._correct += int((self(x).argmax(1) == y).sum())
        self._seen += len(y)

    def on_train_epoch_start(self):
        self._t0 = time.perf_counter()

    def on_validation_epoch_end(self):  # after the epoch's validation, like Keras' epoch time
        if hasattr(self, "_t0") and not self.trainer.sanity_checking:
            self.epoch_seconds.append(time.perf_counter() - self._t0)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
