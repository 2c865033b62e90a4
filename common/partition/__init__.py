"""Partitioners that split one labelled data set among collaborating parties."""

from .dirichlet import dirichlet_partition
from .size_skew import size_skew_partition

__all__ = ["dirichlet_partition", "size_skew_partition"]
