"""Data sets as labelled train/test tensors. Reading files lives here, not in ``common/``.

``load_dataset`` knows digits (bundled with scikit-learn) and the image sets MNIST, CIFAR-10,
CIFAR-100 (torchvision's layout) and Tiny-ImageNet (its zip's layout) under ``data_dir``.
``loaders.format_writers`` writes those formats with random pixels for tests and benchmarks.
"""

from .errors import DatasetNotFoundError
from .registry import DATASET_NAMES, LabelledSplits, load_dataset

__all__ = ["DATASET_NAMES", "DatasetNotFoundError", "LabelledSplits", "load_dataset"]
