"""The classifier of the paper's appendix E, equation 9."""

from __future__ import annotations

import torch
from torch import nn


class MixupClassifier(nn.Module):
    """``Flatten -> Linear(in, 1024) -> BN -> GELU -> Dropout(0.5) -> Linear(1024, 512)
    -> BN -> GELU -> Dropout(0.5) -> Linear(512, C)``.

    Parameters
    ----------
    in_dim : int
        Size of the flattened input (64 for 8x8 digits, 25,088 for ResNet-18 features).
    num_classes : int
        Number of classes ``C``.
    dropout : float
        Dropout probability after each hidden block (0.5 in the paper).
    """

    def __init__(self, *, in_dim: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"need in_dim >= 1 and num_classes >= 2, got {in_dim}, {num_classes}")
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(1024, 512),
            nn.BatchNorm1d(512),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
