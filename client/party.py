"""A party's private data in simulation: its partition of the training set, split into the
part it trains on (or mixes) and the part it holds out for model selection.

The partition comes from the run config's ``partitioner`` (:mod:`common.partition`); the
result is a :class:`common.party.PartyData`, the only thing encodings and defences see.
"""

from __future__ import annotations

from functools import lru_cache, partial

import numpy as np
import torch

from common.config import RunConfig
from common.device import resolve_device
from common.party import PartyData
from common.seeds import Stream, derive_seed
from features.pipeline import BackboneImageSpace, input_bounds, load_run_data, preprocessing_for, split_inputs

__all__ = ["PartyData", "load_party", "load_public_pool", "partition_indices", "private_pool", "public_indices"]


def public_indices(cfg: RunConfig, num_train: int) -> np.ndarray:
    """Rows of the training split held out as the public pool (``public-fraction``), sorted.

    Drawn from the run seed alone (not the party), so every party and the server agree on
    the pool without talking; empty when ``public-fraction = 0``. No party holds these rows
    as private data: they are partitioned away before the parties are formed.
    """
    size = int(round(cfg.public_fraction * num_train))
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(derive_seed(cfg.seed, Stream.PUBLIC))
    return np.sort(rng.permutation(num_train)[:size])


def private_pool(cfg: RunConfig, num_train: int) -> np.ndarray:
    """Rows of the training split the parties share out: all but the public pool."""
    return np.setdiff1d(np.arange(num_train), public_indices(cfg, num_train), assume_unique=True)


def partition_indices(cfg: RunConfig, labels: np.ndarray, num_partitions: int) -> list[np.ndarray]:
    """The run's partitioner applied to ``labels`` (indices into ``labels``)."""
    return cfg.partitioner_spec.split(labels, num_parties=num_partitions, cfg=cfg)


@lru_cache(maxsize=8)
def load_party(cfg: RunConfig, partition_id: int, num_partitions: int) -> PartyData:
    """Build party ``partition_id`` of ``num_partitions``; cached per simulation worker."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} outside [0, {num_partitions})")
    cfg.partitioner_spec.check_parties(cfg, num_partitions)
    data = load_run_data(cfg)
    labels = data.train_y.numpy()
    if cfg.public_fraction > 0:  # partition what is left after the public pool
        pool = private_pool(cfg, labels.size)
        idx = pool[partition_indices(cfg, labels[pool], num_partitions)[partition_id]]
    else:
        idx = partition_indices(cfg, labels, num_partitions)[partition_id]
    rng = np.random.default_rng(derive_seed(cfg.seed, partition_id, Stream.SPLIT))
    idx = rng.permutation(idx)
    n_val = max(2, int(round(cfg.val_fraction * idx.size)))
    val, train = np.sort(idx[:n_val]), np.sort(idx[n_val:])
    if train.size < 2:
        raise ValueError(f"party {partition_id} has {idx.size} samples: too few to hold out validation")
    # One read of the split's inputs (one cache lookup and fingerprint) for both parts.
    inputs = split_inputs(cfg, data, "train", device=resolve_device(cfg.device), rows=np.concatenate([train, val]))
    return PartyData(
        partition_id=partition_id,
        num_partitions=num_partitions,
        train_x=inputs[: train.size],
        train_y=data.train_y[train],
        val_x=inputs[train.size :],
        val_y=data.train_y[val],
        num_classes=data.num_classes,
        input_bounds=input_bounds(cfg, data),
        train_images=data.train_x[train] if cfg.uses_backbone else None,
        image_shape=raw_image_shape(cfg, data),
        image_space=BackboneImageSpace(cfg, data) if cfg.uses_backbone else None,
        public_pool=partial(load_public_pool, cfg) if cfg.public_fraction > 0 else None,
    )


DIGITS_IMAGE_SHAPE = (1, 8, 8)


def raw_image_shape(cfg: RunConfig, data) -> tuple[int, int, int] | None:  # noqa: ANN001
    """``(C, H, W)`` of one raw model input, or ``None`` for backbone features."""
    if cfg.uses_backbone:
        return None
    if data.kind != "image":
        if data.input_dim != int(np.prod(DIGITS_IMAGE_SHAPE)):
            raise ValueError(f"vector data set {data.name} has no known image shape")
        return DIGITS_IMAGE_SHAPE
    return tuple(preprocessing_for(cfg, data).output_shape(tuple(data.train_x.shape[1:])))


@lru_cache(maxsize=4)
def load_public_pool(cfg: RunConfig) -> torch.Tensor:
    """The public pool's model inputs (same input space as the parties' rows), on the CPU.

    Every party computes the same pool from the run config; InstaHide mixes its rows into
    the encodings as structured noise (their labels are never used).
    """
    data = load_run_data(cfg)
    rows = public_indices(cfg, int(data.train_y.shape[0]))
    if rows.size == 0:
        raise ValueError("public-fraction = 0: this run holds out no public pool")
    return split_inputs(cfg, data, "train", device=resolve_device(cfg.device), rows=rows)
