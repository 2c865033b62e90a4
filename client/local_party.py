"""A party built from the SuperNode's own data (``data-source = "node-local"``).

The node config names the data (``data-path``, ``data-format``; the format is inferred
from the path when absent: a folder is an image-folder, ``*.npz`` an archive); the run
config's contract says what it must look like (:mod:`loaders.local` checks it and refuses
what does not fit). The party holds out its validation part and, without a server test
set, its test part, drawn from the run seed and its own data (:func:`common.node_local.hold_out`).
With a backbone the weights file on this node's disk is checked against ``backbone-sha256``
before anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from common.config import RunConfig
from common.device import resolve_device
from common.node_local import data_seed, hold_out
from common.party import PartyData
from features.backbones import check_weights_file
from features.node_local import check_value_range, node_local_splits
from features.pipeline import BackboneImageSpace, input_bounds, preprocessing_for, split_inputs
from loaders.local import DATA_FORMATS, LocalDataError, load_local_data

__all__ = ["data_location", "local_party"]

log = logging.getLogger("flwr.mixupfl.client")


def data_location(node_config: Mapping[str, object]) -> tuple[str, str]:
    """``(data-path, data-format)`` of a SuperNode's node config.

    Raises
    ------
    LocalDataError
        No ``data-path``, or a format that is neither given nor inferable.
    """
    path = str(node_config.get("data-path", "") or "")
    if not path:
        raise LocalDataError("the run has data-source = 'node-local' but this SuperNode's node config names no "
                             "data-path (start it with --node-config \"data-path='/abs/folder' data-format="
                             "'image-folder'\")")
    fmt = str(node_config.get("data-format", "") or "")
    if not fmt:
        if path.endswith(".npz"):
            fmt = "npz"
        elif Path(path).expanduser().is_dir():
            fmt = "image-folder"
        else:
            raise LocalDataError(f"data-path {path}: cannot tell its format; set data-format to one of "
                                 f"{', '.join(DATA_FORMATS)}")
    return path, fmt


def local_party(cfg: RunConfig, node_config: Mapping[str, object]) -> PartyData:
    """This SuperNode's party, built once per process, run config and data location."""
    path, fmt = data_location(node_config)
    return _build(cfg, int(node_config["partition-id"]), int(node_config["num-partitions"]), path, fmt)


@lru_cache(maxsize=4)
def _build(cfg: RunConfig, partition_id: int, num_partitions: int, path: str, fmt: str) -> PartyData:
    if cfg.backbone_sha256:  # refuse a wrong weights file before reading any data
        check_weights_file(cfg.backbone_weights, cfg.backbone_sha256)
    own = load_local_data(path, data_format=fmt, contract=cfg.data_contract, dataset=cfg.dataset)
    check_value_range(cfg, own, path)
    test_fraction = 0.0 if cfg.server_test_path else cfg.local_test_fraction
    try:
        parts = hold_out(int(own.y.shape[0]), run_seed=cfg.seed, party=partition_id, content_seed=data_seed(own.x, own.y),
                         val_fraction=cfg.val_fraction, test_fraction=test_fraction)
    except ValueError as err:
        raise LocalDataError(f"{path}: {err}") from None
    data = node_local_splits(cfg, train=own)
    rows = np.concatenate([parts.train, parts.val, parts.test])
    inputs = split_inputs(cfg, data, "train", device=resolve_device(cfg.device), rows=rows)
    n_train, n_val = parts.train.size, parts.val.size
    pre = preprocessing_for(cfg, data)
    log.info("party %d: %s, %d rows (%d train, %d validation, %d test, %d dropped)", partition_id, fmt,
             own.y.shape[0], n_train, n_val, parts.test.size, own.dropped)
    return PartyData(
        partition_id=partition_id, num_partitions=num_partitions,
        train_x=inputs[:n_train], train_y=own.y[parts.train],
        val_x=inputs[n_train:n_train + n_val], val_y=own.y[parts.val],
        num_classes=data.num_classes, input_bounds=input_bounds(cfg, data),
        train_images=own.x[parts.train] if cfg.uses_backbone else None,
        image_shape=None if cfg.uses_backbone or pre is None else tuple(pre.output_shape(cfg.sample_shape)),
        image_space=BackboneImageSpace(cfg, data) if cfg.uses_backbone else None,
        test_x=inputs[n_train + n_val:] if parts.test.size else None,
        test_y=own.y[parts.test] if parts.test.size else None,
        source=fmt, dropped=own.dropped,
    )


local_party.cache_clear = _build.cache_clear  # type: ignore[attr-defined]
