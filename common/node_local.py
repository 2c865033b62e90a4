"""Node-local data, the pure part: the run config's contract keys and each party's hold-outs.

A node-local run (``data-source = "node-local"``) has every SuperNode read its own data
(:mod:`loaders.local`); the run config only states what that data must look like (class
names or count, input kind and shape, normalisation or valid range). This module parses and
checks those keys, and splits a party's own rows into the part it trains on (or mixes), the
part it holds out for model selection and, without a server test set, the part it holds out
for testing. The split is drawn from the run seed *and* a fingerprint of the party's own
data, so that neither the server nor another party can rebuild it from the run config.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from common.seeds import Stream, derive_seed

if TYPE_CHECKING:  # the config imports this module
    import torch

    from common.config import RunConfig

__all__ = ["HoldOut", "check_node_local", "data_seed", "floats", "hold_out", "parse_shape"]


def floats(key: str, text: str) -> tuple[float, ...]:
    """Comma-separated finite numbers of run-config key ``key``.

    Raises
    ------
    ValueError
        Naming ``key`` (the config's checks turn it into a line of :class:`ConfigError`).
    """
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{key}: comma-separated numbers; got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{key}: comma-separated finite numbers; got {text!r}")
    return values


def parse_shape(text: str) -> tuple[int, ...]:
    """``input-shape`` (``3x32x32``, ``3,32,32`` or ``64``) as a tuple of positive ints."""
    parts = [p for p in text.replace(",", "x").replace(" ", "").split("x") if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"input-shape: positive integers separated by x, e.g. 3x32x32; got {text!r}")
    return tuple(int(p) for p in parts)


def check_node_local(cfg: RunConfig) -> None:
    """What a node-local run must declare; every message starts with the key at fault.

    Raises
    ------
    ValueError
        A missing or inconsistent contract key.
    """
    from common.defences import DEFAULT_DEFENCE

    shape = cfg.sample_shape
    if cfg.input_kind == "image" and (len(shape) != 3 or shape[0] not in (1, 3)):
        raise ValueError("input-shape: an image is channels x height x width with 1 or 3 channels, "
                         f"e.g. 3x32x32; got {cfg.input_shape!r}")
    if cfg.input_kind == "vector" and len(shape) != 1:
        raise ValueError(f"input-shape: a vector sample has one dimension, e.g. 64; got {cfg.input_shape!r}")
    names = cfg.class_names
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ValueError(f"classes: names must be distinct and non-empty; got {cfg.classes!r}")
    if names and cfg.num_classes and cfg.num_classes != len(names):
        raise ValueError(f"num-classes: {cfg.num_classes}, but classes names {len(names)}")
    if cfg.contract_num_classes < 2:
        raise ValueError("classes: a node-local run names its classes (or num-classes), at least 2")
    if cfg.input_kind == "image":
        mean, std = cfg.image_stats
        for key, values in (("image-mean", mean), ("image-std", std)):
            if len(values) not in (1, shape[0]):
                raise ValueError(f"{key}: one value or one per channel ({shape[0]}); got {len(values)}")
        if any(v <= 0 for v in std):
            raise ValueError("image-std: every value must be positive")
    else:
        lo, hi = cfg.value_range
        if not lo < hi:
            raise ValueError(f"vector-range: lo < hi needed; got {cfg.vector_range!r}")
    if cfg.public_fraction > 0:
        raise ValueError("public-fraction: a node-local run has no public pool (it would come from a shared data "
                         "set); leave it at 0")
    if cfg.uses_backbone:
        if cfg.input_kind != "image":
            raise ValueError("backbone: a backbone needs input-kind = 'image'")
        if not os.path.isabs(cfg.backbone_weights) or not cfg.backbone_sha256:
            raise ValueError("backbone-sha256: a node-local backbone run names the weights file every node reads "
                             "from its own disk (backbone-weights = absolute path) and its SHA-256")
    if cfg.strategy == "local-only" and not cfg.server_test_path:
        raise ValueError("strategy: 'local-only' tests every party's own model on the server; a node-local run needs "
                         "server-test-path for it")
    if cfg.defence != DEFAULT_DEFENCE and cfg.input_kind != "image":
        raise ValueError(f"defence: {cfg.defence} augments images; node-local vectors need defence = 'none'")


def data_seed(x: torch.Tensor, y: torch.Tensor) -> int:
    """A 60-bit integer from the content of a party's data (every byte of inputs and labels):
    part of the seed of its hold-outs, so that they follow from the party's data, not from
    the run config alone."""
    digest = hashlib.sha256()
    digest.update(str((tuple(x.shape), str(x.dtype))).encode())
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().numpy().astype(np.int64).tobytes())
    return int(digest.hexdigest()[:15], 16)


@dataclass(frozen=True)
class HoldOut:
    """Indices (sorted) of a party's training, validation and test parts; together a
    partition of its rows."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def hold_out(num_rows: int, *, run_seed: int, party: int, content_seed: int, val_fraction: float,
             test_fraction: float) -> HoldOut:
    """Split ``num_rows`` rows into training, validation and (``test_fraction > 0``) test parts.

    The validation part has at least 2 rows, a test part at least 1, the training part at
    least 2; the permutation is drawn from ``(run_seed, party, SPLIT, content_seed)``.

    Raises
    ------
    ValueError
        Too few rows for the three parts.
    """
    n_val = max(2, int(round(val_fraction * num_rows)))
    n_test = max(1, int(round(test_fraction * num_rows))) if test_fraction > 0 else 0
    if num_rows - n_val - n_test < 2:
        raise ValueError(f"{num_rows} rows: too few to hold out {n_val} for validation and {n_test} for testing "
                         "and keep 2 to train on")
    rng = np.random.default_rng(derive_seed(run_seed, party, Stream.SPLIT, content_seed))
    order = rng.permutation(num_rows)
    return HoldOut(train=np.sort(order[n_val + n_test:]), val=np.sort(order[:n_val]),
                   test=np.sort(order[n_val:n_val + n_test]))
