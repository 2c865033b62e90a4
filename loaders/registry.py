"""Which data sets exist and how each is read.

``digits`` is bundled with scikit-learn and needs no files. The image sets read local copies
under the run-config ``data-dir``: MNIST, CIFAR-10 and CIFAR-100 in torchvision's layout
(:mod:`loaders.torchvision_sets`), Tiny-ImageNet in its zip's folder layout
(:mod:`loaders.tiny_imagenet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DATASET_NAMES: tuple[str, ...] = ("digits", "mnist", "cifar10", "cifar100", "tiny-imagenet")

# Pixels are stored as uint8 0..255; after the /255 of preprocessing they lie in [0, 1].
IMAGE_VALID_RANGE: tuple[float, float] = (0.0, 1.0)

# Data sets without an official test split (digits) are split with the run's seed: runs over
# seeds then also average over test sets instead of all leaning on one draw of a small test set.


@dataclass(frozen=True)
class LabelledSplits:
    """A data set's train and test parts.

    Two kinds of data set share this container, told apart by ``kind``:

    - ``"vector"`` (digits): inputs are float32 rows (N, D) already scaled to ``valid_range``;
    - ``"image"`` (mnist, cifar10, cifar100, tiny-imagenet): inputs are the stored pixels,
      uint8 tensors of shape (N, C, H, W) with C = 1 for MNIST and 3 otherwise, never resized
      or normalised here (``common.preprocess`` does that after dividing by 255).

    Attributes
    ----------
    train_x, test_x : torch.Tensor
        Inputs, one sample per leading index (see above for dtype and shape per kind).
    train_y, test_y : torch.Tensor
        Class indices, int64, shape (N,).
    num_classes : int
        10 for digits, MNIST and CIFAR-10; 100 for CIFAR-100; 200 for Tiny-ImageNet.
    valid_range : (float, float)
        Range every input value lies in once scaled (images: pixels / 255, so (0, 1)); the
        clamped noise mode clips to it.
    name : str
        The name ``load_dataset`` was called with.
    kind : {"vector", "image"}
        How to read ``train_x``/``test_x``, see above.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    valid_range: tuple[float, float]
    name: str
    kind: str = "vector"

    @property
    def input_dim(self) -> int:
        """Number of input values per sample, ``prod(train_x.shape[1:])``."""
        return int(np.prod(self.train_x.shape[1:]))


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        k = int(round(test_fraction * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1797 x 64 pixels 0..16, labels), read the way
    ``sklearn.datasets.load_digits`` reads it, without importing scikit-learn (1-3 s of
    imports in every simulated party's process and the server's)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package, imports nothing
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(roots[0]) / "datasets" / "data" / "digits.csv.gz" if roots else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data, bunch.target
    with gzip.open(path, mode="rt", encoding="utf-8") as handle:
        data = np.loadtxt(handle, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int, copy=False)


def _load_digits(test_fraction: float, split_seed: int) -> LabelledSplits:
    pixels, labels = _digits_arrays()
    # Pixel intensities are integers 0..16; scale to [0, 1].
    x = pixels.astype(np.float32) / 16.0
    y = labels.astype(np.int64)
    train, test = _stratified_split(y, test_fraction, split_seed)
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
def load_dataset(
    name: str, *, data_dir: str = "", test_fraction: float = 0.2, download: bool = False, split_seed: int = 0
) -> LabelledSplits:
    """Load a data set by name. Cached per process: simulated parties share one copy.

    Parameters
    ----------
    name : {"digits", "mnist", "cifar10", "cifar100", "tiny-imagenet"}
    data_dir : str, default ""
        Folder of local copies (run-config ``data-dir``); unused by digits, required by the
        image sets (an empty value is an error, the current directory is never searched).
    test_fraction : float, default 0.2
        Held-out share for digits, which has no official split. The image sets use their
        official splits (Tiny-ImageNet: its labelled ``val/`` as test) and ignore it.
    split_seed : int, default 0
        Seed of digits' stratified test split (the run's ``seed``); ignored by the image sets.
    download : bool, default False
        Let torchvision fetch MNIST/CIFAR into ``data_dir`` when files are missing there.
        Tiny-ImageNet is never downloaded.

    Returns
    -------
    LabelledSplits

    Raises
    ------
    ValueError
        For an unknown name, or files that are present but malformed.
    DatasetNotFoundError
        When an image set's files are not under ``data_dir`` (and could not be downloaded).
    """
    if name == "digits":
        return _load_digits(test_fraction, split_seed)
    # Imported here: torchvision and PIL are only needed for the image sets, and the loader
    # modules import this one (LabelledSplits).
    if name in ("mnist", "cifar10", "cifar100"):
        from .torchvision_sets import load_torchvision_set

        return load_torchvision_set(name, data_dir=data_dir, download=download)
    if name == "tiny-imagenet":
        from .tiny_imagenet import load_tiny_imagenet

        return load_tiny_imagenet(data_dir=data_dir, download=download)
    available = ", ".join(repr(n) for n in DATASET_NAMES)
    raise ValueError(f"unknown data set {name!r}; available: {available}")
