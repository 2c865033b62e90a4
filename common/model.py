"""The classifier of the paper's appendix E, equation 9."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["MixupClassifier"]


class _FlattenSample(nn.Module):
    """Flatten each sample to ``in_dim`` values and keep every leading dimension.

    ``nn.Flatten`` merges everything after the batch dimension; the layer-norm variant must
    also accept ``(batch, views, *sample_shape)`` so that per-sample gradients can average
    over several views of one sample (DP-Mix), hence a flatten of the trailing sample
    dimensions only.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, keep = 1, x.dim()
        while keep > 0 and size < self.in_dim:
            keep -= 1
            size *= x.shape[keep]
        if size != self.in_dim:
            raise ValueError(f"input of shape {tuple(x.shape)} does not end in a sample of {self.in_dim} values")
        return x.reshape(*x.shape[:keep], self.in_dim)


class MixupClassifier(nn.Module):
    """``Flatten -> Linear(in, 1024) -> Norm -> GELU -> Dropout(0.5) -> Linear(1024, 512)
    -> Norm -> GELU -> Dropout(0.5) -> Linear(512, C)``.

    Parameters
    ----------
    in_dim : int
        Size of the flattened input (64 for 8x8 digits, 25,088 for ResNet-18 features).
    num_classes : int
        Number of classes ``C``.
    dropout : float
        Dropout probability after each hidden block (0.5 in the paper).
    norm : {"batch", "layer"}
        ``"batch"`` is the paper's BatchNorm. ``"layer"`` swaps it for LayerNorm, which has
        the same parameters (no running statistics) and mixes no information across samples,
        so DP-SGD can compute per-sample gradients (Opacus refuses BatchNorm); the layer-norm
        model also accepts ``(batch, views, *sample_shape)`` inputs.
    """

    def __init__(
        self, *, in_dim: int, num_classes: int, dropout: float = 0.5, norm: Literal["batch", "layer"] = "batch"
    ) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"need in_dim >= 1 and num_classes >= 2, got {in_dim}, {num_classes}")
        if norm not in ("batch", "layer"):
            raise ValueError(f"norm must be 'batch' or 'layer', got {norm!r}")
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.norm = norm

        def normalise(width: int) -> nn.Module:
            return nn.BatchNorm1d(width) if norm == "batch" else nn.LayerNorm(width)

        self.net = nn.Sequential(
            nn.Flatten() if norm == "batch" else _FlattenSample(in_dim),
            nn.Linear(in_dim, 1024),
            normalise(1024),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(1024, 512),
            normalise(512),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
