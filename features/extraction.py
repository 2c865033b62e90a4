"""Batched feature extraction through a frozen backbone.

On CUDA the backbone runs in bfloat16 autocast with channels-last tensors; uint8 images
travel to the GPU (4x smaller than floats) and are resized and normalised there. When the
whole output fits in a quarter of the free GPU memory it is gathered on the GPU and copied
to the host once, so the loop never waits for a device-to-host copy. On CPU everything is
float32 (CPU bfloat16 convolutions are slower, not faster).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from common.preprocess import ImagePreprocessing

__all__ = ["extract_features", "forward_features"]


def forward_features(
    backbone: torch.nn.Module, images: torch.Tensor, *, device: torch.device
) -> torch.Tensor:
    """Features of preprocessed float images already on ``device`` (bf16 autocast on CUDA)."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return backbone(images.contiguous(memory_format=torch.channels_last))
    return backbone(images)


@torch.inference_mode()
def extract_features(
    images: torch.Tensor,
    *,
    backbone: torch.nn.Module,
    preprocessing: ImagePreprocessing,
    out: np.ndarray,
    device: torch.device,
    batch_size: int = 256,
    desc: str = "features",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Fill ``out`` (``(N, F)`` float16, e.g. a memory map) with the features of ``images``.

    Parameters
    ----------
    images : torch.Tensor
        Stored pixels ``(N, C, H, W)``, uint8 or float in [0, 1], on the CPU.
    backbone : torch.nn.Module
        Frozen feature extractor, already on ``device``.
    preprocessing : ImagePreprocessing
        Resize / channel / normalisation map applied on ``device``.
    out : numpy.ndarray
        Destination, float16 ``(N, F)``.
    batch_size : int
        Images per forward pass.
    progress : callable, optional
        Called with ``(done, total)`` after each batch (tests); a tqdm bar is always shown
        on stderr.

    Returns
    -------
    dict
        ``seconds``, ``images_per_second``, ``device`` and ``precision`` for the cache sidecar.
    """
    n = images.shape[0]
    if out.shape[0] != n:
        raise ValueError(f"out has {out.shape[0]} rows for {n} images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if out.dtype != np.float16:
        raise TypeError(f"out must be float16, got {out.dtype}")
    started = time.perf_counter()
    on_gpu_out = None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if out.size * 2 < free // 4:
            on_gpu_out = torch.empty(out.shape, dtype=torch.float16, device=device)
        source = images.pin_memory() if images.device.type == "cpu" else images
    else:
        source = images
    host_out = torch.from_numpy(out)
    bar = tqdm(total=n, desc=desc, unit="img", file=sys.stderr, mininterval=2.0, dynamic_ncols=True)
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch = preprocessing(source[start:stop].to(device, non_blocking=True), device=device)
            feats = forward_features(backbone, batch, device=device).reshape(stop - start, -1)
            if feats.shape[1] != out.shape[1]:
                raise ValueError(f"backbone gives {feats.shape[1]} features, out has {out.shape[1]} columns")
            if on_gpu_out is not None:
                on_gpu_out[start:stop] = feats.to(torch.float16)
            else:
                host_out[start:stop] = feats.to(torch.float16).cpu()
            bar.update(stop - start)
            if progress is not None:
                progress(stop, n)
        if on_gpu_out is not None:
            host_out.copy_(on_gpu_out.cpu())
            del on_gpu_out
    finally:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    for start in range(0, n, 4096):  # chunked: out may be a multi-GB memory map
        if not np.isfinite(out[start : start + 4096]).all():
            raise FloatingPointError("non-finite features: the float16 cache overflowed (|feature| > 65504)")
    return {
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("inf"),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "precision": "bfloat16 autocast, channels-last" if device.type == "cuda" else "float32",
    }
