"""A party's private data in simulation: its partition of the training set, split into the
part it trains on (or mixes) and the part it holds out for model selection.

The partition comes from the run config's ``partitioner`` (:mod:`common.partition`); the
result is a :class:`common.party.PartyData`, the only thing encodings and defences see.

A simulation worker (one Ray actor) serves many parties, one message at a time, in whatever
order the runtime hands them out. Each party is built once per worker and run config and kept
(:class:`PartyCache`), whatever the number of parties: a round at P = 100 on two workers then
rebuilds nothing. The cache holds at most ``MIXUPFL_PARTY_CACHE_MB`` (default 4096) MiB of
party tensors per process; past that the least recently used parties are rebuilt when asked
again (backbone features of a full-size data set, say). The split of the data set into
partitions is computed once per run config and party count, not once per party.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from functools import lru_cache, partial

import numpy as np
import torch

from common.config import RunConfig
from common.device import resolve_device
from common.party import PartyData
from common.seeds import Stream, derive_seed
from features.pipeline import BackboneImageSpace, input_bounds, load_run_data, preprocessing_for, split_inputs

__all__ = [
    "PartyCache", "PartyData", "load_party", "load_public_pool", "partition_indices", "private_pool", "public_indices",
]


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


@lru_cache(maxsize=4)
def _partitions(cfg: RunConfig, num_partitions: int) -> tuple[np.ndarray, ...]:
    """Every party's rows of the training split (indices into it), for one run config and
    party count: the partitioner runs once, not once per party."""
    cfg.partitioner_spec.check_parties(cfg, num_partitions)
    labels = load_run_data(cfg).train_y.numpy()
    if cfg.public_fraction > 0:  # partition what is left after the public pool
        pool = private_pool(cfg, labels.size)
        return tuple(pool[idx] for idx in partition_indices(cfg, labels[pool], num_partitions))
    return tuple(partition_indices(cfg, labels, num_partitions))


def _build_party(cfg: RunConfig, partition_id: int, num_partitions: int) -> PartyData:
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} outside [0, {num_partitions})")
    data = load_run_data(cfg)
    idx = _partitions(cfg, num_partitions)[partition_id]
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


def _party_bytes(party: PartyData) -> int:
    tensors = (party.train_x, party.train_y, party.val_x, party.val_y, party.train_images)
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class PartyCache:
    """Parties built in this process, least recently used first out past ``max_bytes``.

    ``builds`` counts constructions per ``(partition id, party count)``: with a large enough
    budget, a worker builds each party of a run config once.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parties: OrderedDict[tuple, tuple[PartyData, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.builds: Counter = Counter()
        self.hits = 0

    def get(self, cfg: RunConfig, partition_id: int, num_partitions: int) -> PartyData:
        key = (cfg, partition_id, num_partitions)
        with self._lock:
            if key in self._parties:
                self._parties.move_to_end(key)
                self.hits += 1
                return self._parties[key][0]
        party = _build_party(cfg, partition_id, num_partitions)
        size = _party_bytes(party)
        with self._lock:
            self.builds[(partition_id, num_partitions)] += 1
            if key not in self._parties:
                self._parties[key] = (party, size)
                self._bytes += size
            while self._bytes > self.max_bytes and len(self._parties) > 1:
                _, (_, dropped) = self._parties.popitem(last=False)
                self._bytes -= dropped
        return party

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._parties)

    def clear(self) -> None:
        with self._lock:
            self._parties.clear()
            self._bytes = 0
            self.builds.clear()
            self.hits = 0
        _partitions.cache_clear()


PARTIES = PartyCache(max_bytes=int(float(os.environ.get("MIXUPFL_PARTY_CACHE_MB", "4096")) * 2**20))
"""This process's parties (a simulation worker keeps every party it has served)."""


def load_party(cfg: RunConfig, partition_id: int, num_partitions: int) -> PartyData:
    """Party ``partition_id`` of ``num_partitions``, built once per process and run config
    (:data:`PARTIES`); callers share the object and must not modify its tensors."""
    return PARTIES.get(cfg, partition_id, num_partitions)


load_party.cache_clear = PARTIES.clear  # type: ignore[attr-defined]  # the functools-style reset callers use


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
