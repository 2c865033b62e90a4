"""On-disk cache of extracted features, shared by every simulated party.

One file per (data set, split, backbone, weights, pooling, image size, data fingerprint):
``<cache-dir>/<key>.npy`` (float16, one row per image, in the split's order) plus a JSON
sidecar describing it. The first process that needs a file takes an exclusive lock, extracts
into ``<key>.npy.partial`` and renames it into place; every other process waits on the lock
and then memory-maps the finished file, so 100 parties share one extraction and each reads
only its own rows. An interrupted extraction leaves only a ``.partial`` file, never a
truncated cache entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["CacheResult", "FeatureKey", "cached_features", "data_fingerprint"]


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A cheap content hash: shape, every label and a strided sample of ~1,000 images.

    Guards against a cache entry of another copy of the "same" data set (e.g. a regenerated
    benchmark folder) being reused.
    """
    digest = hashlib.sha256()
    digest.update(str(tuple(images.shape)).encode() + str(images.dtype).encode())
    digest.update(labels.cpu().numpy().astype(np.int64).tobytes())
    stride = max(1, images.shape[0] // 1000)
    digest.update(images[::stride].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class FeatureKey:
    """Everything that determines a feature file's content."""

    dataset: str
    split: str
    backbone: str
    weights_tag: str
    pool: str
    image_size: int
    fingerprint: str

    @property
    def stem(self) -> str:
        return (
            f"{self.dataset}-{self.split}-{self.backbone}-{self.weights_tag}-{self.pool}"
            f"-{self.image_size}px-{self.fingerprint}"
        )


@dataclass(frozen=True)
class CacheResult:
    features: np.ndarray  # read-only memory map, float16, (rows, dim)
    path: Path
    hit: bool  # True when the file existed (this process extracted nothing)
    seconds: float  # time spent extracting or waiting for another process's extraction


def cached_features(
    key: FeatureKey,
    *,
    cache_dir: str | os.PathLike,
    rows: int,
    dim: int,
    extract: Callable[[np.ndarray], dict],
) -> CacheResult:
    """Return the features of ``key``, calling ``extract(out)`` only on a miss.

    ``extract`` fills the writable float16 memory map ``out`` of shape ``(rows, dim)`` and
    returns facts for the sidecar (throughput, device). A file whose shape disagrees with
    ``(rows, dim)`` is an error, not silently recomputed.
    """
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{key.stem}.npy"
    started = time.perf_counter()
    with open(folder / f"{key.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        hit = final.exists()
        if not hit:
            partial = folder / f"{key.stem}.npy.partial"
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(rows, dim))
            facts = extract(out)
            out.flush()
            del out
            os.replace(partial, final)
            meta = {**asdict(key), "rows": rows, "dim": dim, "dtype": "float16", **facts}
            (folder / f"{key.stem}.json").write_text(json.dumps(meta, indent=2))
    features = np.load(final, mmap_mode="r")
    if features.shape != (rows, dim):
        raise RuntimeError(
            f"feature cache {final} holds shape {features.shape}, expected {(rows, dim)}; "
            "delete it to recompute"
        )
    return CacheResult(features=features, path=final, hit=hit, seconds=time.perf_counter() - started)
