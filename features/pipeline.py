"""What a model sees of a data set: raw rows, normalised images, or backbone features.

* vector data (digits): the stored rows, unchanged.
* images with ``backbone = "none"``: normalised at native size (Table 7 statistics), flattened.
* images with a backbone: features of the frozen backbone on the images resized to
  ``image-size``, from the shared on-disk cache (:mod:`features.cache`).

Both the ClientApp (its rows of the training split) and the ServerApp (the test split) go
through :func:`split_inputs`, so the two always agree on the input space.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import torch

from common.config import RunConfig
from common.device import resolve_device
from common.preprocess import NORMALISATION, ImagePreprocessing, channel_bounds
from features.backbones import BackboneWeights, FrozenBackbone, build_backbone, check_weights_file, feature_dim
from features.cache import CacheResult, FeatureKey, cached_features, data_fingerprint
from features.extraction import extract_features, forward_features
from loaders import LabelledSplits, load_dataset

__all__ = [
    "BackboneImageSpace",
    "backbone_for",
    "load_run_data",
    "describe_inputs",
    "input_bounds",
    "load_backbone",
    "preprocessing_for",
    "split_features",
    "split_inputs",
]

log = logging.getLogger("flwr.mixupfl.features")


def load_run_data(cfg: RunConfig) -> LabelledSplits:
    """The run's data set; a data set without an official test split (digits) is split with
    the run's ``seed``, so that runs over seeds also average over test sets."""
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction, download=cfg.download,
                        split_seed=cfg.seed)


def preprocessing_for(cfg: RunConfig, data: LabelledSplits) -> ImagePreprocessing | None:
    """The image map of appendix E for this run; ``None`` for vector data."""
    if data.kind != "image":
        return None
    mean, std = cfg.image_stats if cfg.node_local else NORMALISATION[data.name]
    if cfg.uses_backbone:
        return ImagePreprocessing(mean=mean, std=std, size=cfg.image_size, channels=3)
    return ImagePreprocessing(mean=mean, std=std)


def input_bounds(cfg: RunConfig, data: LabelledSplits):
    """Valid range of each model-input coordinate, for the clamped mode of raw inputs.

    Floats for vector data, per-coordinate vectors for normalised raw images, ``None`` for
    backbone features (the clamp then acts in image space, in the radius mapping).
    """
    if cfg.uses_backbone:
        return None
    pre = preprocessing_for(cfg, data)
    if pre is None:
        return data.valid_range
    return channel_bounds(pre, tuple(data.train_x.shape[1:]))


@lru_cache(maxsize=2)
def load_backbone(name: str, weights: str, pool: str, device: str) -> tuple[FrozenBackbone, BackboneWeights]:
    """One frozen backbone per process and configuration (simulated parties share it)."""
    backbone, info = build_backbone(name=name, weights=weights, pool=pool, device=device)
    log.info("backbone %s (%s pooling), weights: %s %s", name, pool, info.source, info.name)
    return backbone, info


def backbone_for(cfg: RunConfig, device: torch.device | str) -> tuple[FrozenBackbone, BackboneWeights]:
    """The run's frozen backbone on ``device``; with ``backbone-sha256`` the weights file on
    this machine's disk is checked against it first (a wrong file is refused, both hashes named)."""
    if cfg.backbone_sha256:
        check_weights_file(cfg.backbone_weights, cfg.backbone_sha256)
    return load_backbone(cfg.backbone, cfg.backbone_weights, cfg.feature_pool, str(device))


class BackboneImageSpace:
    """A backbone run's image space for a party's noise calibration
    (:class:`common.party.ImageSpace`): appendix E's preprocessing and the frozen backbone."""

    def __init__(self, cfg: RunConfig, data: LabelledSplits) -> None:
        if not cfg.uses_backbone:
            raise ValueError("an image space for calibration needs a backbone run")
        self._cfg = cfg
        self._pre = preprocessing_for(cfg, data)

    def preprocess(self, images: torch.Tensor, *, device: torch.device) -> torch.Tensor:
        return self._pre(images, device=device)

    def valid_bounds(self, *, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self._pre.valid_bounds(3, device=device)

    def features(self, images: torch.Tensor, *, device: torch.device) -> torch.Tensor:
        cfg = self._cfg
        backbone, _ = backbone_for(cfg, device)
        return forward_features(backbone, images, device=device)


def _split(data: LabelledSplits, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if split == "train":
        return data.train_x, data.train_y
    if split == "test":
        return data.test_x, data.test_y
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def split_features(cfg: RunConfig, data: LabelledSplits, split: str, *, device: torch.device) -> CacheResult:
    """Backbone features of a whole split, extracted once and cached on disk."""
    if not cfg.uses_backbone:
        raise ValueError("split_features needs a backbone")
    images, labels = _split(data, split)
    backbone, weights = backbone_for(cfg, device)
    key = FeatureKey(
        dataset=data.name,
        split=split,
        backbone=cfg.backbone,
        weights_tag=weights.tag,
        pool=cfg.feature_pool,
        image_size=cfg.image_size,
        fingerprint=data_fingerprint(images, labels),
    )
    pre = preprocessing_for(cfg, data)

    def extract(out: np.ndarray) -> dict:
        log.info("extracting %s/%s features (%d images) on %s", data.name, split, images.shape[0], device)
        facts = extract_features(
            images,
            backbone=backbone,
            preprocessing=pre,
            out=out,
            device=device,
            batch_size=cfg.extract_batch_size,
            desc=f"{data.name}/{split} {cfg.backbone}",
        )
        log.info("extracted %d images at %.0f img/s", images.shape[0], facts["images_per_second"])
        return {**facts, "weights": weights.as_dict()}

    dim = feature_dim(cfg.backbone, cfg.feature_pool, cfg.image_size)
    return cached_features(key, cache_dir=cfg.feature_cache_dir, rows=images.shape[0], dim=dim, extract=extract)


def split_inputs(
    cfg: RunConfig,
    data: LabelledSplits,
    split: str,
    *,
    device: torch.device,
    rows: np.ndarray | None = None,
) -> torch.Tensor:
    """Model inputs of ``split`` (all rows, or ``rows``), on the CPU.

    float32 rows for vector data and raw images; float16 for backbone features (the cache's
    dtype: cast to float32 where arithmetic needs it).
    """
    images, _ = _split(data, split)
    index = slice(None) if rows is None else np.asarray(rows)
    if data.kind != "image":
        return images[index]
    if cfg.uses_backbone:
        cache = split_features(cfg, data, split, device=device)
        return torch.from_numpy(np.array(cache.features[index]))  # a private, writable copy
    pre = preprocessing_for(cfg, data)
    selected = images[index]
    out = torch.empty((selected.shape[0], int(np.prod(pre.output_shape(tuple(images.shape[1:]))))))
    for start in range(0, selected.shape[0], 4096):
        block = pre(selected[start : start + 4096])
        out[start : start + block.shape[0]] = block.reshape(block.shape[0], -1)
    return out


def describe_inputs(cfg: RunConfig, data: LabelledSplits, *, input_dim: int, device: torch.device,
                    load_weights: bool = True) -> dict:
    """What the models were trained on, for the run summary: data, preprocessing, backbone
    and the exact weights it used (source, name, SHA-256 of the tensors). Without
    ``load_weights`` (a node-local server that never extracts features) the weights are
    described by the file and its SHA-256 that every party checked."""
    pre = preprocessing_for(cfg, data)
    described: dict = {
        "dataset": data.name,
        "kind": data.kind,
        "train_rows": int(data.train_x.shape[0]),
        "test_rows": int(data.test_x.shape[0]),
        "num_classes": data.num_classes,
        "input_dim": input_dim,
        "backbone": cfg.backbone,
        "preprocessing": None if pre is None else {
            "mean": list(pre.mean), "std": list(pre.std), "size": pre.size, "channels": pre.channels,
            "table": "paper Table 7" if data.name != "digits" else "identity (digits is not in the paper)",
        },
    }
    if cfg.uses_backbone:
        weights = (backbone_for(cfg, device)[1].as_dict() if load_weights else
                   {"source": "local-file", "name": cfg.backbone_weights, "file_sha256": cfg.backbone_sha256,
                    "checked_by": "every party, on its own disk"})
        described.update(
            backbone_weights=weights,
            feature_pool=cfg.feature_pool,
            image_size=cfg.image_size,
            feature_cache_dir=cfg.feature_cache_dir,
            frozen=True,
        )
    return described
