"""One party's private data, as the encodings and defences see it (no Flower, no files).

The client builds it: from its partition of a data set in simulation
(:func:`client.party.load_party`), from the SuperNode's own data in a node-local run
(:func:`client.local_party.local_party`). What needs the data set's files or a backbone (the image space of a backbone
run, the public pool) is handed in as objects with a small interface, so that the maths here
never reads files itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["ImageSpace", "PartyData"]


class ImageSpace(Protocol):
    """A backbone run's image space: the party calibrates Theorem 2's noise on images, then
    maps the radius to features (section 5 of the paper)."""

    def preprocess(self, images: torch.Tensor, *, device: torch.device) -> torch.Tensor:
        """Stored pixels -> the backbone's normalised, resized input images."""

    def valid_bounds(self, *, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel valid range of preprocessed images (the clamped mode clips to it)."""

    def features(self, images: torch.Tensor, *, device: torch.device) -> torch.Tensor:
        """The frozen backbone's features of preprocessed images."""


@dataclass(frozen=True)
class PartyData:
    """One party's private data.

    ``train_x`` / ``val_x`` are model inputs (raw rows, normalised images or backbone
    features). ``train_images`` holds the stored pixels of the training part when inputs are
    backbone features, because the noise is calibrated in image space, and ``image_space``
    the preprocessing and backbone for that (both ``None`` otherwise). ``input_bounds`` is the
    valid range of each input coordinate for the clamped mode, ``None`` for features.
    ``image_shape`` is ``(C, H, W)`` of one raw input (``None`` for features).
    ``public_pool()`` returns the run's public pool in the same input space (``None``: the run
    holds none). ``test_x`` / ``test_y``: the party's own test part, held out only in a
    node-local run without a server test set (``None`` otherwise). ``source`` says where
    the rows came from (``"partition"`` or the node-local ``data-format``); ``dropped``
    counts rows of classes the run does not name that were left out.
    """

    partition_id: int
    num_partitions: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    input_bounds: tuple | None
    train_images: torch.Tensor | None = None
    image_shape: tuple[int, int, int] | None = None
    image_space: ImageSpace | None = None
    public_pool: Callable[[], torch.Tensor] | None = None
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    source: str = "partition"
    dropped: int = 0

    def description(self) -> dict[str, int | str]:
        """What the party tells the server about its data: the source and the size of each
        part (never where it lives or what it holds)."""
        return {"source": self.source, "num-train": int(self.train_y.shape[0]), "num-val": int(self.val_y.shape[0]),
                "num-test": int(self.test_y.shape[0]) if self.test_y is not None else 0, "dropped": self.dropped}
