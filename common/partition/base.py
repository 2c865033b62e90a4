"""The partitioner interface: how one labelled data set is split among the parties.

One partitioner per module behind :class:`Partitioner`, registered in :data:`PARTITIONERS`
under the name of the run config's ``partitioner`` key (flwr-datasets' layout). An unknown
name is an error that lists the known ones; nothing falls back to another partitioner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from common.registry import Registry

if TYPE_CHECKING:
    from common.config import RunConfig

__all__ = ["PARTITIONERS", "Partitioner", "get_partitioner"]


class Partitioner(ABC):
    """Splits sample indices among ``P`` parties; the same run config gives the same split."""

    name: ClassVar[str]
    """The run config's ``partitioner`` value."""
    label: ClassVar[str]
    """How tables and logs name it."""

    def check_config(self, cfg: RunConfig) -> None:
        """Refuse settings this partitioner does not use or cannot run with
        (raise ``ValueError("key: why")``)."""

    def check_parties(self, cfg: RunConfig, num_parties: int) -> None:
        """Refuse a federation size this run config cannot be split into."""

    @abstractmethod
    def split(self, labels: np.ndarray, *, num_parties: int, cfg: RunConfig) -> list[np.ndarray]:
        """``P`` sorted, disjoint index arrays covering ``range(len(labels))``."""

    def describe(self, cfg: RunConfig) -> str:
        """Its settings in a few words, e.g. ``dirichlet beta = 0.1``."""
        return f"{self.name} beta = {cfg.beta}"


PARTITIONERS: Registry[Partitioner] = Registry("partitioner")


def get_partitioner(name: str) -> Partitioner:
    """An instance of the partitioner a run config names (registered name or ``module:Class``)."""
    return PARTITIONERS.create(name)
