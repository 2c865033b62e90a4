"""Randomness from the operating system's CSPRNG, for releases made in deployment.

A seeded PyTorch generator (Mersenne Twister on CPU, Philox on CUDA) is predictable from its
seed and from enough of its output; an attacker who learns the stream learns every noise
vector ``e_i`` and can subtract it. :class:`SystemRandom` draws every random bit of a release
(partner permutation, mixing weights, noise directions) from ``os.urandom`` instead: uniform
floats from 53 random bits, normal deviates by the Box-Muller transform, permutations by
sorting uniform keys. It is slower than PyTorch's generators (the bytes come from the kernel
and are made on the CPU) and cannot be seeded, by design: runs that use it are not
reproducible.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

__all__ = ["RandomSource", "SystemRandom", "fill_normal_", "randperm", "uniform"]

_TWO_POW_53 = float(2**53)


class SystemRandom:
    """Uniform, normal and permutation draws from ``os.urandom`` (no seed, no state)."""

    def uniform(self, shape: tuple[int, ...], *, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Independent draws from Uniform(0, 1) (0 excluded, 1 excluded), 53 bits each."""
        count = math.prod(shape)
        bits = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) >> np.uint64(11)
        values = (bits.astype(np.float64) + 0.5) / _TWO_POW_53
        return torch.from_numpy(values.reshape(shape)).to(device=device, dtype=dtype)

    def normal_(self, out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` with N(0, 1) deviates (Box-Muller on pairs of uniforms), in place."""
        count = out.numel()
        pairs = (count + 1) // 2
        u = self.uniform((2, pairs))
        radius = torch.sqrt(-2.0 * torch.log(u[0]))
        angle = 2.0 * math.pi * u[1]
        z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:count]
        out.copy_(z.reshape(out.shape).to(dtype=out.dtype))
        return out

    def randperm(self, n: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
        """A uniform permutation of ``range(n)``: the order of ``n`` uniform keys (ties among
        53-bit keys have probability below ``n^2 / 2^54``)."""
        return torch.argsort(self.uniform((n,))).to(device)


RandomSource = torch.Generator | SystemRandom


def uniform(source: RandomSource, shape: tuple[int, ...], *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Float64 uniforms from either source: ``[0, 1)`` from a PyTorch generator (on its
    device), ``(0, 1)`` from the CSPRNG."""
    if isinstance(source, SystemRandom):
        return source.uniform(shape, device=device)
    return torch.rand(shape, generator=source, device=device, dtype=torch.float64)


def randperm(source: RandomSource, n: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """A uniform permutation of ``range(n)`` from either source."""
    if isinstance(source, SystemRandom):
        return source.randperm(n, device=device)
    return torch.randperm(n, generator=source, device=device)


def fill_normal_(source: RandomSource, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out`` with N(0, 1) deviates from either source, in place."""
    if isinstance(source, SystemRandom):
        return source.normal_(out)
    return out.normal_(generator=source)
