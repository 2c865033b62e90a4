"""Where tensors live: the one place that turns the run config's ``device`` into a device."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> CUDA when visible, else CPU; ``cuda`` without a GPU is an error."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device = 'cuda' but no CUDA device is visible to this process")
        return torch.device("cuda")
    if choice not in ("auto", "cpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {choice!r}")
    return torch.device("cpu")
