"""InstaHide (Huang et al., 2020) as the paper's section 3.1 states it, equations (3)-(4).

Every private sample ``x_i`` is mixed with ``k_s - 1`` other private samples and ``k - k_s``
public samples, and the sign of every coordinate of the mixture is flipped at random::

    x~_i = sigma_i o ( w_i1 x_i + sum_{j=2..k_s} w_ij x_{pi_j(i)} + sum_{j=k_s+1..k} w_ij p_{rho_j(i)} )
    y~_i = ( w_i1 y_i + sum_{j=2..k_s} w_ij y_{pi_j(i)} ) / (w_i1 + ... + w_ik_s)

with ``w_i ~ Dirichlet(concentration 1_k)``, ``pi_j`` a uniform permutation of the private
set for every private slot ``j`` (so every private sample appears in exactly ``k_s``
encodings: once as itself and once in each other private slot), ``rho_j`` indices into the
public pool, and ``sigma_i`` uniform in ``{-1, +1}^d``. Public samples only add structured
noise: their labels are not mixed in. Equation (4) leaves the label mass at
``w_i1 + ... + w_ik_s``; here the label is divided by that mass so that it lies on the
simplex (same proportions, same arg-max), which is what soft-label training and the
server's upload checks expect.

Privacy caveats
---------------
This encoding is a comparator, not a defence the platform recommends. Its security argument
treats pixels as independent; Carlini et al. (2021) recover the private images by working on
``|x~|`` (which removes the sign mask), clustering the encodings that share a private
component (each private sample appears in ``k_s`` of them) and solving the resulting linear
system. Singularized mixup (``common.mixup``) mixes two private samples only and perturbs
the partner, to remove exactly that repeated component.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .secure_random import SystemRandom, randperm, uniform

__all__ = ["InstaHideRelease", "instahide_encode"]


@dataclass(frozen=True)
class InstaHideRelease:
    """What one application of InstaHide produces, and the mixing graph behind it.

    Attributes
    ----------
    x : torch.Tensor
        Encoded inputs, same shape and dtype as the private inputs.
    y : torch.Tensor
        Soft labels ``(n, C)`` from the private components only, on the simplex.
    private_index : torch.Tensor
        ``(n, k_s)`` int64: private samples mixed into row ``i``; column 0 is ``i`` itself.
    public_index : torch.Tensor
        ``(n, k - k_s)`` int64: rows of the public pool mixed into row ``i``.
    weights : torch.Tensor
        ``(n, k)``: the first ``k_s`` columns weigh ``private_index``, the rest
        ``public_index``; every row sums to 1.
    sign_mask : torch.Tensor
        ``(n, d)`` int8 in ``{-1, +1}``, applied to the flattened mixture.
    """

    x: torch.Tensor
    y: torch.Tensor
    private_index: torch.Tensor
    public_index: torch.Tensor
    weights: torch.Tensor
    sign_mask: torch.Tensor


def _open_uniform(shape: tuple[int, ...], source: torch.Generator | SystemRandom) -> torch.Tensor:
    """Uniforms in (0, 1]: the Dirichlet draw takes a logarithm of them."""
    return 1.0 - uniform(source, shape)


def instahide_encode(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    public_x: torch.Tensor | None,
    k: int = 4,
    k_private: int = 2,
    num_classes: int,
    concentration: float = 1.0,
    generator: torch.Generator | SystemRandom | None = None,
) -> InstaHideRelease:
    """Encode one party's private set with InstaHide (equations 3-4 of the paper).

    Parameters
    ----------
    x : torch.Tensor
        Private inputs ``(n, ...)``, floating point, ``n >= k_private``.
    y : torch.Tensor
        Class indices ``(n,)``.
    public_x : torch.Tensor or None
        Public pool ``(m, ...)`` with the private rows' shape; needed when ``k > k_private``.
        Drawn without replacement per public slot when ``m >= n``, with replacement otherwise.
    k, k_private : int
        Samples per encoding and how many of them are private (``1 <= k_private <= k``);
        the paper's comparator is ``k = 4`` (Table 4).
    num_classes : int
    concentration : float
        Dirichlet concentration of the weights (1: uniform on the simplex).
    generator : torch.Generator, SystemRandom or None
        A seeded CPU generator (simulation, tests) or the operating system's CSPRNG (``None``).

    Returns
    -------
    InstaHideRelease
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"x must be floating point, got {x.dtype}")
    n = x.shape[0]
    if not 1 <= k_private <= k:
        raise ValueError(f"need 1 <= k_private <= k, got k_private={k_private}, k={k}")
    if n < k_private:
        raise ValueError(f"{n} private samples cannot fill {k_private} private slots")
    if y.shape != (n,):
        raise ValueError(f"y must hold {n} class indices, got shape {tuple(y.shape)}")
    if concentration <= 0 or not math.isfinite(concentration):
        raise ValueError(f"concentration must be a positive number, got {concentration}")
    k_public = k - k_private
    if k_public and (public_x is None or public_x.shape[0] == 0):
        raise ValueError(f"k - k_private = {k_public} public slots need a public pool (public_x)")
    if k_public and tuple(public_x.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(f"public rows {tuple(public_x.shape[1:])} differ from private rows {tuple(x.shape[1:])}")
    source = SystemRandom() if generator is None else generator
    device = x.device

    # Slot 0 is the sample itself; every further private slot is a fresh permutation.
    private_index = torch.empty((n, k_private), dtype=torch.int64)
    private_index[:, 0] = torch.arange(n)
    for slot in range(1, k_private):
        private_index[:, slot] = randperm(source, n)
    public_index = torch.empty((n, k_public), dtype=torch.int64)
    for slot in range(k_public):
        m = public_x.shape[0]
        if m >= n:
            public_index[:, slot] = randperm(source, m)[:n]
        else:
            public_index[:, slot] = (_open_uniform((n,), source) * m).long().clamp_max(m - 1)
    # Dirichlet(c 1_k) as normalised Gamma(c) draws; for c = 1 these are exponentials.
    if concentration == 1.0:
        gammas = -torch.log(_open_uniform((n, k), source))
    else:
        # torch's gamma sampler takes no generator: draw from NumPy, seeded from the source.
        seed = int(_open_uniform((1,), source).item() * 2**62)
        gammas = torch.from_numpy(np.random.default_rng(seed).gamma(float(concentration), size=(n, k)))
    weights = gammas / gammas.sum(dim=1, keepdim=True)
    signs = torch.where(_open_uniform((n, int(x[0].numel())), source) < 0.5, -1, 1).to(torch.int8)

    flat = x.reshape(n, -1)
    w = weights.to(device=device, dtype=x.dtype)
    mixed = torch.zeros_like(flat)
    for slot in range(k_private):
        mixed.addcmul_(flat.index_select(0, private_index[:, slot].to(device)), w[:, slot : slot + 1])
    if k_public:
        public_flat = public_x.reshape(public_x.shape[0], -1).to(device=device, dtype=x.dtype)
        for slot in range(k_public):
            mixed.addcmul_(public_flat.index_select(0, public_index[:, slot].to(device)),
                           w[:, k_private + slot : k_private + slot + 1])
    mixed.mul_(signs.to(device=device, dtype=x.dtype))

    one_hot = torch.nn.functional.one_hot(y.long().cpu(), num_classes).to(torch.float64)
    labels = torch.zeros((n, num_classes), dtype=torch.float64)
    for slot in range(k_private):
        labels += weights[:, slot : slot + 1] * one_hot[private_index[:, slot]]
    labels /= weights[:, :k_private].sum(dim=1, keepdim=True)
    return InstaHideRelease(
        x=mixed.reshape(x.shape), y=labels.float().to(device), private_index=private_index,
        public_index=public_index, weights=weights.float(), sign_mask=signs,
    )
