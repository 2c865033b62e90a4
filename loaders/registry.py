"""Which data sets exist and how each is read."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

# Data sets without an official test split are split with this fixed seed, so that the test
# set is the same for every run seed, as CIFAR's official test split would be.
SPLIT_SEED = 0


@dataclass(frozen=True)
class LabelledSplits:
    """A data set's train and test parts.

    Attributes
    ----------
    train_x, test_x : torch.Tensor
        Inputs, float32, one row per sample (any trailing shape).
    train_y, test_y : torch.Tensor
        Class indices, int64.
    num_classes : int
    valid_range : (float, float)
        Range every input value lies in; the clamped noise mode clips to it.
    name : str
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    valid_range: tuple[float, float]
    name: str

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.train_x.shape[1:]))


def _stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        k = int(round(test_fraction * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_digits(test_fraction: float) -> LabelledSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel intensities are integers 0..16; scale to [0, 1].
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    train, test = _stratified_split(y, test_fraction)
    return LabelledSplits(
        train_x=torch.from_numpy(x[train]),
        train_y=torch.from_numpy(y[train]),
        test_x=torch.from_numpy(x[test]),
        test_y=torch.from_numpy(y[test]),
        num_classes=10,
        valid_range=(0.0, 1.0),
        name="digits",
    )


@lru_cache(maxsize=4)
def load_dataset(name: str, *, data_dir: str = "", test_fraction: float = 0.2) -> LabelledSplits:
    """Load a data set by name. Cached per process: simulated parties share one copy."""
    if name == "digits":
        return _load_digits(test_fraction)
    raise ValueError(f"unknown data set {name!r}; available: 'digits'")
