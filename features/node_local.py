"""Node-local data in the run's input space: a party's own rows (or the server's own test
data) as :class:`loaders.LabelledSplits`, so that the preprocessing, backbone features and
valid input ranges of :mod:`features.pipeline` apply to them unchanged.

In a node-local run nobody holds a shared data set: the server knows only the run's
contract (classes, input kind and shape), from which it derives the model's input size and
the valid input range without reading any party's data.
"""

from __future__ import annotations

import numpy as np
import torch

from common.config import RunConfig
from features.backbones import feature_dim
from loaders import LabelledSplits
from loaders.local import LocalData, LocalDataError, load_local_data

__all__ = ["NODE_LOCAL", "check_value_range", "model_input_dim", "node_local_splits", "server_test_data"]

NODE_LOCAL = "node-local"
"""The ``name`` of node-local splits (feature-cache keys, summaries)."""


def _empty(cfg: RunConfig) -> torch.Tensor:
    dtype = torch.uint8 if cfg.input_kind == "image" else torch.float32
    return torch.zeros((0, *cfg.sample_shape), dtype=dtype)


def node_local_splits(cfg: RunConfig, *, train: LocalData | None = None,
                      test: LocalData | None = None) -> LabelledSplits:
    """Splits of the run's contract holding ``train`` and ``test`` (either may be absent:
    then an empty split of the contract's shape)."""
    empty_y = torch.zeros(0, dtype=torch.int64)
    return LabelledSplits(
        train_x=train.x if train is not None else _empty(cfg), train_y=train.y if train is not None else empty_y,
        test_x=test.x if test is not None else _empty(cfg), test_y=test.y if test is not None else empty_y,
        num_classes=cfg.contract_num_classes,
        valid_range=cfg.value_range if cfg.input_kind == "vector" else (0.0, 1.0),
        name=NODE_LOCAL, kind=cfg.input_kind,
    )


def model_input_dim(cfg: RunConfig) -> int:
    """Length of one model input, from the contract alone: backbone features, or the
    flattened sample (raw images keep their size and channels)."""
    if cfg.uses_backbone:
        return feature_dim(cfg.backbone, cfg.feature_pool, cfg.image_size)
    return int(np.prod(cfg.sample_shape))


def check_value_range(cfg: RunConfig, data: LocalData, where: str) -> None:
    """Refuse vector rows with a value outside ``vector-range`` (the clamped mode and the
    server's upload bound rely on it)."""
    if cfg.input_kind != "vector" or data.x.numel() == 0:
        return
    lo, hi = cfg.value_range
    low, high = float(data.x.min()), float(data.x.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < lo or high > hi:
        raise LocalDataError(f"{where}: values span [{low:g}, {high:g}], outside the run's vector-range "
                             f"[{lo:g}, {hi:g}]")


def server_test_data(cfg: RunConfig) -> LocalData:
    """The server's own labelled test data (``server-test-path``), checked like a party's."""
    data = load_local_data(cfg.server_test_path, data_format=cfg.server_test_format, contract=cfg.data_contract,
                           dataset=cfg.dataset, split="test")
    check_value_range(cfg, data, cfg.server_test_path)
    return data
