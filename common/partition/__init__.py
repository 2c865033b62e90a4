"""Partitioners that split one labelled data set among collaborating parties.

Adding a partitioner: one module with a subclass of :class:`Partitioner` decorated with
``@PARTITIONERS.register``, imported below.
"""

from .base import PARTITIONERS, Partitioner, get_partitioner
from .dirichlet import DirichletPartitioner, dirichlet_partition
from .size_skew import SizeSkewPartitioner, size_skew_partition

DEFAULT_PARTITIONER = "dirichlet"

__all__ = [
    "DEFAULT_PARTITIONER",
    "PARTITIONERS",
    "DirichletPartitioner",
    "Partitioner",
    "SizeSkewPartitioner",
    "dirichlet_partition",
    "get_partitioner",
    "size_skew_partition",
]
