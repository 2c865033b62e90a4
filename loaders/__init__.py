"""Data sets as labelled train/test tensors. Reading files lives here, not in ``common/``."""

from .registry import LabelledSplits, load_dataset

__all__ = ["LabelledSplits", "load_dataset"]
