r"""Linear inversion attack of sec. 5.1 / appendix F (gradient descent, after Luo et al. 2022).

Threat model: the conservative one of sec. 5.1. The attack sees the release
(:class:`~attacks.threat_model.ObservedRelease`) and is granted the mixing weights and the
partner graph (:class:`~attacks.threat_model.AttackerKnowledge`), optionally the valid input
range; never the noise vectors, never a private input.
"""

from __future__ import annotations

import math
import time

import torch

from .base import ATTACKS, Attack
from .optim import ProjectedAdam
from .regularisers import has_tv, tv_and_grad, tv_per_image
from .threat_model import AttackerKnowledge, ObservedRelease, Reconstruction

__all__ = ["LinearInversionAttack", "reference_loss"]

_INITS = ("mixed", "midrange", "uniform")
# Rows per chunk when ``batch_rows`` is None: about this many values (cache-friendly on CPU).
_AUTO_CHUNK_VALUES = 2**18


@ATTACKS.register
class LinearInversionAttack(Attack[ObservedRelease, AttackerKnowledge]):
    r"""Recover the private inputs by inverting the known linear mixing with Adam.

    The attacker knows the mixing weights ``w`` and the partner permutation ``pi``, hence
    the linear map ``W`` from private inputs to noiseless mixtures,

    .. math::

        (W X)_i = w_{i1} X_i + w_{i2} X_{\pi(i)},

    but not the noise vectors ``e_i``. It estimates the private inputs ``X`` (shape
    ``(n, d)`` flattened, images of ``sample_shape`` otherwise) by minimising

    .. math::

        L(X) = \frac{1}{n d} \sum_i \lVert (W X)_i - \tilde x_i \rVert_2^2
             + \lambda_{tv} \frac{1}{n} \sum_i \mathrm{TV}(X_i)
             + \lambda_2 \frac{1}{n d} \sum_i \lVert X_i \rVert_2^2 ,

    with the anisotropic total variation of one image ``X_i`` of shape ``(C, H, W)``

    .. math::

        \mathrm{TV}(X_i) = \operatorname{mean}_{c,h,w} |X_{c,h+1,w} - X_{c,h,w}|
                         + \operatorname{mean}_{c,h,w} |X_{c,h,w+1} - X_{c,h,w}|

    (:mod:`attacks.regularisers`). TV is skipped for 1-D samples (flat vectors, features); for samples of more than two
    dimensions it acts on the last two. Adam runs ``steps`` full-batch steps; after each
    step ``X`` is clipped to the known valid range (``knowledge.valid_range``, skipped when
    not granted). With ``e_i = 0`` and a granted range this is a regularised least-squares
    solve of ``W X = x~``; with noise, the data term asks ``W X`` to also explain
    ``w_{i2} e_i``, which the priors and the clipping can only partly reject. In clamped
    mode the release is not exactly linear (the noisy partner was clipped); the attack
    still uses the linear model, as the paper's does.

    Parameters
    ----------
    steps : int
        Adam steps (paper: 200).
    lr : float
        Adam learning rate (paper: 0.05).
    tv_weight : float
        :math:`\lambda_{tv}` (paper: 1e-3).
    l2_weight : float
        :math:`\lambda_2` (paper: 1e-4).
    batch_rows : int or None
        Rows per chunk when evaluating the loss and its gradient; ``None`` picks about
        2**18 values per chunk. The loss is a sum over rows and the gradient is
        accumulated over chunks, so every step is the *same* full-batch Adam step whatever
        the chunking: it only bounds temporaries (useful for ``n x d`` in the gigabytes)
        and keeps the work cache-friendly. The gradient is computed analytically, without
        an autograd graph (checked against autograd in the tests).
    device : str or torch.device
        Where to optimise; the reconstruction is returned on CPU.
    seed : int
        Seeds the ``"uniform"`` initialisation (the other initialisations are deterministic).
    init : {"mixed", "midrange", "uniform"}
        Starting point: the mixed inputs clipped to the valid range, the middle of the valid
        range (zeros without one), or uniform noise in the valid range.
    """

    name = "linear"
    observes = ObservedRelease
    requires = AttackerKnowledge

    def __init__(
        self,
        *,
        steps: int = 200,
        lr: float = 0.05,
        tv_weight: float = 1e-3,
        l2_weight: float = 1e-4,
        batch_rows: int | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        init: str = "mixed",
    ) -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if tv_weight < 0 or l2_weight < 0:
            raise ValueError("tv_weight and l2_weight must be >= 0")
        if batch_rows is not None and batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1 or None, got {batch_rows}")
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        self.steps = int(steps)
        self.lr = float(lr)
        self.tv_weight = float(tv_weight)
        self.l2_weight = float(l2_weight)
        self.batch_rows = batch_rows
        self.device = torch.device(device)
        self.seed = int(seed)
        self.init = init

    def __repr__(self) -> str:
        return (
            f"LinearInversionAttack(steps={self.steps}, lr={self.lr}, tv_weight={self.tv_weight}, "
            f"l2_weight={self.l2_weight}, batch_rows={self.batch_rows}, device='{self.device}', "
            f"seed={self.seed}, init='{self.init}')"
        )

    def reconstruct(self, observed: ObservedRelease, knowledge: AttackerKnowledge) -> Reconstruction:
        """Estimate every row's clean private component from the release and the knowledge.

        Raises
        ------
        ValueError
            If ``knowledge.weights`` or ``knowledge.partner`` was not granted, or shapes
            disagree with the release.
        """
        knowledge.require("weights", "partner", attack="the linear inversion attack")
        started = time.perf_counter()
        n = observed.n
        shape = tuple(observed.sample_shape)
        dim = math.prod(shape)
        if knowledge.weights.shape[0] != n or knowledge.partner.shape[0] != n:
            raise ValueError(
                f"knowledge covers {knowledge.weights.shape[0]} weights / {knowledge.partner.shape[0]} partners "
                f"but the release has {n} rows"
            )
        dev = self.device
        # float16 uploads are optimised in float32; float64 stays float64.
        dtype = torch.float64 if observed.x.dtype == torch.float64 else torch.float32
        target = observed.x.reshape(n, *shape).to(dev, dtype)
        a = knowledge.weights[:, 0].to(dev, dtype).reshape(n, *([1] * len(shape)))
        b = knowledge.weights[:, 1].to(dev, dtype).reshape(n, *([1] * len(shape)))
        partner = knowledge.partner.to(dev).long()
        lo, hi = _bounds(knowledge.valid_range, shape, dev, dtype)

        X = self._initial(target, lo, hi).requires_grad_(True)
        # Fused Adam (same update, several times faster), projected onto the valid range.
        solver = ProjectedAdam(X, lr=self.lr, bounds=(lo, hi), fused=True)
        chunk = min(n, self.batch_rows or max(1, _AUTO_CHUNK_VALUES // max(dim, 1)))
        use_tv = self.tv_weight > 0 and has_tv(shape)
        data_scale = 1.0 / (n * dim)
        last = {"data": float("nan"), "tv": 0.0, "l2": 0.0}
        for _ in range(self.steps):
            solver.zero_grad()
            last = self._accumulate(X, target, a, b, partner, chunk, data_scale, use_tv)  # sets X.grad
            solver.step()
        with torch.no_grad():
            final = self._accumulate(X, target, a, b, partner, chunk, data_scale, use_tv, backward=False)
        details = {
            "steps": self.steps,
            "lr": self.lr,
            "tv_weight": self.tv_weight,
            "l2_weight": self.l2_weight,
            "tv_used": use_tv,
            "init": self.init,
            "clipped_to_valid_range": lo is not None,
            "final_loss": final,
            "last_step_loss": last,
            "noise_mode": knowledge.noise_mode,
            "threat_model": knowledge.description,
            "seconds": time.perf_counter() - started,
        }
        return Reconstruction(x=X.detach().to("cpu"), method=self.name, details=details)

    # -- internals ---------------------------------------------------------------------------

    def _initial(self, target: torch.Tensor, lo, hi) -> torch.Tensor:
        if self.init == "mixed":
            X = target.clone()
            return X.clamp_(lo, hi) if lo is not None else X
        if self.init == "midrange":
            if lo is None:
                return torch.zeros_like(target)
            return ((lo + hi) / 2).expand_as(target).clone() if isinstance(lo, torch.Tensor) else torch.full_like(target, (lo + hi) / 2)
        generator = torch.Generator(device=target.device).manual_seed(self.seed)
        u = torch.rand(target.shape, generator=generator, device=target.device, dtype=target.dtype)
        if lo is None:
            return u
        return lo + (hi - lo) * u

    def _accumulate(self, X, target, a, b, partner, chunk, data_scale, use_tv, backward=True) -> dict[str, float]:
        """Loss and, with ``backward``, its exact gradient written to ``X.grad``.

        The gradient is analytic (no autograd graph): with residual
        ``R_i = a_i X_i + b_i X_pi(i) - x~_i``, ``dL/dX_j`` collects ``2 a_j R_j`` from
        row ``j`` and ``2 b_i R_i`` from the row ``i`` with ``pi(i) = j``, both times
        ``1 / (n d)``; the L2 term adds ``2 lambda_2 X_j / (n d)`` and TV the signs of the
        neighbour differences (the subgradient autograd would use, ``sign(0) = 0``).
        Rows are processed in chunks; the partner contributions are scattered with
        ``index_add_`` (``pi`` is a permutation, so no two rows of a chunk collide).
        """
        n = X.shape[0]
        Xd = X.detach()
        grad = torch.zeros_like(Xd) if backward else None
        totals = {"data": 0.0, "tv": 0.0, "l2": 0.0}
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            own = Xd[start:stop]
            rows = partner[start:stop]
            residual = a[start:stop] * own + b[start:stop] * Xd.index_select(0, rows) - target[start:stop]
            totals["data"] += float(residual.square().sum()) * data_scale
            totals["l2"] += float(own.square().sum()) * self.l2_weight * data_scale
            if use_tv:
                tv_value, tv_grad = tv_and_grad(own, need_grad=backward)
                totals["tv"] += float(tv_value) * self.tv_weight / n
            if backward:
                g = grad[start:stop]
                g.add_(residual * a[start:stop], alpha=2 * data_scale)
                g.add_(own, alpha=2 * self.l2_weight * data_scale)
                if use_tv:
                    g.add_(tv_grad, alpha=self.tv_weight / n)
                grad.index_add_(0, rows, residual * b[start:stop], alpha=2 * data_scale)
        if backward:
            X.grad = grad
        totals["total"] = totals["data"] + totals["tv"] + totals["l2"]
        return totals


def reference_loss(
    X: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    partner: torch.Tensor,
    *,
    tv_weight: float,
    l2_weight: float,
) -> torch.Tensor:
    """The attack's objective written with plain differentiable ops (for gradient checks).

    ``X`` and ``target`` have shape ``(n, *sample_shape)``; TV is used when the sample has
    at least two dimensions, as in :class:`LinearInversionAttack`.
    """
    n = X.shape[0]
    view = (n,) + (1,) * (X.ndim - 1)
    mixed = weights[:, 0].reshape(view) * X + weights[:, 1].reshape(view) * X[partner]
    loss = (mixed - target).square().mean() + l2_weight * X.square().mean()
    if has_tv(X.shape[1:]):
        loss = loss + tv_weight * tv_per_image(X).mean()
    return loss


def _bounds(valid_range, shape, device, dtype):
    """``(lo, hi)`` as floats or tensors broadcastable to ``(n, *shape)``; ``(None, None)`` if not granted."""
    if valid_range is None:
        return None, None
    lo, hi = valid_range
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        dim = math.prod(shape)
        lo_t = torch.as_tensor(lo).to(device, dtype).reshape(-1)
        hi_t = torch.as_tensor(hi).to(device, dtype).reshape(-1)
        if lo_t.numel() == 1:
            return float(lo_t), float(hi_t)
        if lo_t.numel() != dim:
            raise ValueError(f"valid_range vectors need {dim} values (one per coordinate), got {lo_t.numel()}")
        return lo_t.reshape(1, *shape), hi_t.reshape(1, *shape)
    return float(lo), float(hi)
