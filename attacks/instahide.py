r"""Carlini et al. (2021) against InstaHide: clustering of ``|x~|`` and the noisy linear solve.

InstaHide (:mod:`common.instahide`) releases, for every private sample ``i``,

.. math::

    \tilde x_i = \sigma_i \circ \Big( \sum_{s=1}^{k_s} w_{is} X_{\pi_s(i)}
                 + \sum_{t=k_s+1}^{k} w_{it} P_{\rho_t(i)} \Big),
    \qquad \pi_1(i) = i,

with ``X`` the ``n`` private samples, ``P`` a public pool and ``sigma_i`` a random sign mask.
Carlini et al. (2021; appendix C of the singularized-mixup paper) break it in two stages,
both of which start from ``|x~|``, where the sign mask is gone:

1. **Clustering** (stage 1; Luo et al.'s step 2): decide which encodings share a private
   component, from a pairwise similarity of ``|x~_i|`` and ``|x~_j|``. Carlini et al. train
   a comparator network on InstaHide encodings of *public* data;
   :func:`similarity_neighbours` uses a fixed correlation instead, a weaker attacker whose
   precision is a lower bound on what clustering finds.
2. **Linear solve** (stage 2): with the mixing graph and weights known (the weights leak
   through the soft labels), solve the noisy system ``|W X + public part| = |x~|`` by
   gradient descent: :class:`CarliniInstaHideAttack`.

Stage 1 and its scoring live in :mod:`attacks.clustering` and are re-exported here.

Threat model
------------
Attacks here see only :class:`~attacks.threat_model.ObservedRelease` (what the server
received: ``x~``, ``y~``, the sample shape) and an explicit :class:`InstaHideKnowledge`
(mixing graph, mixing weights, mean of the public pool, valid range; each ``None`` when not
granted). No object an attack receives holds the private inputs, the sign masks or which
public images went into which row. :func:`shares_component` and
:func:`neighbour_precision` need the true mixing graph: they are *evaluation* functions,
run by the experimenter, never by an attack.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from common.instahide import InstaHideRelease

from .base import ATTACKS, Attack
from .clustering import SIMILARITIES, neighbour_precision, shares_component, similarity_neighbours
from .linear import _bounds
from .optim import ProjectedAdam
from .regularisers import has_tv, tv_and_grad, tv_per_image
from .threat_model import ObservedRelease, Reconstruction, ValidRange, _copy_range, _cpu_copy

__all__ = [
    "SIMILARITIES",
    "CarliniInstaHideAttack",
    "InstaHideKnowledge",
    "grant_instahide_knowledge",
    "instahide_reference_loss",
    "neighbour_precision",
    "shares_component",
    "similarity_neighbours",
]


# -- threat model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstaHideKnowledge:
    """Side information about an InstaHide release; ``None`` means *not granted*.

    Deliberately absent: the sign masks ``sigma_i`` and the public indices ``rho_t(i)``
    (which public images went into which row). The public *data set* is public, so its
    mean may be granted; the draw of public images per row is the party's secret.

    Attributes
    ----------
    private_index : torch.Tensor or None
        Mixing graph, int64 ``(n, k_s)``: the private samples (indexed ``0 .. n-1``) mixed
        into each encoded row; column 0 is the row's own sample.
    weights : torch.Tensor or None
        Mixing weights ``(n, k)``: the first ``k_s`` columns weigh ``private_index``, the
        remaining ``k - k_s`` the (unknown) public images. The private weights leak through
        the soft labels (Carlini et al.); the conservative threat model grants all ``k``.
    public_mean : torch.Tensor or None
        ``(d,)`` mean of the public pool (flattened like a row of ``x~``).
    valid_range : (lo, hi) or None
        Range of a valid input: floats, or per-coordinate vectors of length ``d``.
    description : str
        Human-readable statement of what was granted, for reports.
    """

    private_index: torch.Tensor | None
    weights: torch.Tensor | None
    public_mean: torch.Tensor | None
    valid_range: ValidRange | None
    description: str

    def __post_init__(self) -> None:
        idx = self.private_index
        if idx is not None:
            if idx.ndim != 2 or idx.shape[1] < 1:
                raise ValueError(f"private_index must have shape (n, k_s) with k_s >= 1, got {tuple(idx.shape)}")
            if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
                raise ValueError(f"private_index must hold integer indices, got {idx.dtype}")
            n = idx.shape[0]
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"private_index must index the {n} private samples (0 .. {n - 1})")
        w = self.weights
        if w is not None:
            if w.ndim != 2 or not w.dtype.is_floating_point:
                raise ValueError(f"weights must be a floating tensor of shape (n, k), got {tuple(w.shape)}, {w.dtype}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError("weights must be finite and non-negative")
            if idx is not None and (w.shape[0] != idx.shape[0] or w.shape[1] < idx.shape[1]):
                raise ValueError(
                    f"weights {tuple(w.shape)} do not fit private_index {tuple(idx.shape)}: need (n, k) with k >= k_s"
                )
        mu = self.public_mean
        if mu is not None and (mu.ndim != 1 or not mu.dtype.is_floating_point):
            raise ValueError(f"public_mean must be a floating tensor of shape (d,), got {tuple(mu.shape)}, {mu.dtype}")
        if self.valid_range is not None and len(self.valid_range) != 2:
            raise ValueError("valid_range must be a pair (lo, hi)")

    @property
    def k_private(self) -> int | None:
        """``k_s``, the private slots per encoding (``None`` without the mixing graph)."""
        return None if self.private_index is None else int(self.private_index.shape[1])

    def require(self, *names: str, attack: str = "this attack") -> None:
        """Raise ``ValueError`` naming every field in ``names`` that was not granted."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"{attack} needs attacker knowledge of {', '.join(missing)}, which the threat model "
                f"did not grant (InstaHideKnowledge.{missing[0]} is None)"
            )


def grant_instahide_knowledge(
    release: InstaHideRelease,
    *,
    public_pool: torch.Tensor | None,
    valid_range,
    graph: bool = True,
    weights: bool = True,
) -> InstaHideKnowledge:
    """Side information a threat model grants about an InstaHide ``release``.

    The default (graph and weights granted) is the setting of Carlini et al.'s second
    stage: the attacker has already clustered the encodings (stage 1) and read the private
    weights off the soft labels. The sign masks and the public indices are never granted;
    ``public_pool`` (the public data set, which the attacker can download too) only
    contributes its mean.

    Parameters
    ----------
    release : InstaHideRelease
        The party's release.
    public_pool : torch.Tensor or None
        The public data set ``(m, ...)`` (rows like the release's); ``None`` grants no
        public mean.
    valid_range : (lo, hi) or None
        Range of valid inputs known to the attacker (floats or per-coordinate vectors).
    graph, weights : bool
        Whether the private mixing graph and the ``k`` mixing weights are granted.

    Returns
    -------
    InstaHideKnowledge
        Detached CPU copies.
    """
    n = release.x.shape[0]
    d = release.x[0].numel() if n else math.prod(release.x.shape[1:])
    mean = None
    if public_pool is not None:
        if public_pool.ndim < 1 or public_pool.shape[0] == 0:
            raise ValueError("public_pool must hold at least one row")
        if public_pool[0].numel() != d:
            raise ValueError(f"public_pool rows have {public_pool[0].numel()} values but release rows have {d}")
        mean = _cpu_copy(public_pool).reshape(public_pool.shape[0], d).to(torch.float64).mean(0)
        mean = mean.to(release.x.dtype if release.x.dtype.is_floating_point else torch.float32)
    granted = [label for label, flag in (
        ("private mixing graph", graph), ("mixing weights (all k)", weights), ("public-pool mean", mean is not None),
        ("valid range", valid_range is not None),
    ) if flag]
    label = "Carlini stage 2: mixing graph and weights known" if graph and weights else (
        "partial side information" if granted else "release only: no side information")
    description = (
        f"{label}; granted: {', '.join(granted) or 'nothing'}; never granted: sign masks, "
        f"which public images were mixed into which row"
    )
    return InstaHideKnowledge(
        private_index=_cpu_copy(release.private_index).long() if graph else None,
        weights=_cpu_copy(release.weights).float() if weights else None,
        public_mean=mean,
        valid_range=_copy_range(valid_range),
        description=description,
    )


# -- stage 2: the noisy linear system on absolute values ---------------------------------------


@ATTACKS.register
class CarliniInstaHideAttack(Attack[ObservedRelease, InstaHideKnowledge]):
    r"""Recover the private samples from ``|x~|`` with the mixing graph known (Carlini stage 2).

    The attacker knows the mixing graph ``pi_s(i)`` (``knowledge.private_index``), the
    weights ``w_i`` and, optionally, the mean ``mu`` of the public pool. The sign mask is
    removed by working on ``|x~_i|``; the public images, whose identities are unknown, are
    replaced by their mean, so row ``i`` is modelled as

    .. math::

        m_i(X) = \sum_{s=1}^{k_s} w_{is} X_{\pi_s(i)} + c_i \mu,
        \qquad c_i = \sum_{t > k_s} w_{it},

    (``c_i mu = 0`` when ``mu`` is not granted; ``details`` then says the public part is
    unmodelled). The error ``sum_t w_it (P_rho_t(i) - mu)`` is noise of mean zero that the
    system averages over the rows sharing a private sample. The attack minimises, with
    Adam and full-batch steps,

    .. math::

        L(X) = \frac{1}{n d} \sum_{i} r_i \lVert\, |m_i(X)| - |\tilde x_i| \,\rVert_2^2
             + \lambda_{tv} \frac{1}{n} \sum_j \mathrm{TV}(X_j)
             + \lambda_{\mu} \frac{1}{n d} \sum_j \lVert X_j - \mu \rVert_2^2 .

    * ``r_i`` are row weights. With ``noise_weighting`` they are inverse noise variances:
      the public residual has per-coordinate variance proportional to
      ``v_i = sum_{t > k_s} w_it^2``, so ``r_i = 1 / (v_i + noise_floor)``, normalised to
      mean 1 (a weighted least-squares solve; all ``r_i = 1`` when ``k = k_s`` or with
      ``noise_weighting=False``).
    * ``TV`` is the anisotropic total variation of :mod:`attacks.regularisers`, as in
      :class:`~attacks.linear.LinearInversionAttack` (mean absolute vertical + horizontal
      differences of a ``(C, H, W)`` sample), skipped for 1-D samples.
    * The last term is a Gaussian prior centred on the public mean (used only when
      ``public_mean`` is granted): the public data set tells the attacker what an image
      looks like on average. It makes the system, whose matrix ``W`` is square with
      ``k_s`` non-zeros per row and can be badly conditioned, a MAP estimate.

    With ``noise_weighting=False`` and ``prior_weight=0`` the objective is exactly the
    noisy system ``B = M A + e`` of Carlini et al. on absolute values (plus TV). On digits
    (``k = 4``, ``k_s = 2``) the two refinements raise the mean SNR by about 2 dB; see
    the tests.

    After every step ``X`` is clipped to ``knowledge.valid_range`` when granted. For
    non-negative data in a non-negative range ``m_i >= 0``, so ``|m_i| = m_i`` and the
    problem is a (convex) constrained least-squares solve; otherwise it is non-convex.
    The gradient is analytic (no autograd graph, checked against autograd in the tests):
    with ``g_i = 2 r_i (|m_i| - |x~_i|) sgn(m_i) / (n d)`` and ``sgn(0) := +1`` (a valid
    subgradient of ``|.|``, which lets a start at ``m = 0`` move), ``dL/dX_j`` collects
    ``w_is g_i`` over every slot ``(i, s)`` with ``pi_s(i) = j``, scattered with
    ``index_add_``. Memory is a few ``(n, d)`` tensors, so ``n = 5000``, ``d = 3072``
    (CIFAR-sized rows) needs about 1 GB.

    Starting point: the public mean (clipped to the valid range) when granted, else the
    middle of the valid range, else zeros.

    Limitation: signed data. When valid inputs can be negative (normalised images), the
    mixture ``m_i`` has coordinates of either sign and ``|.|`` discards them: every row
    and coordinate admits two branches, and with a range symmetric about 0 and no public
    part ``X`` and ``-X`` fit equally well. The solve then finds points that fit ``|x~|``
    better than the truth does without being close to it. Measured on digits (300
    private rows, ``k = 4``, ``k_s = 2``, scored in the ``[0, 1]`` pixel scale): inputs in
    ``[0, 1]`` give 8.7-9.6 dB against a 4.9-5.2 dB public-mean baseline; the same
    digits mapped to ``[-1, 1]`` give no gain over the baseline (5.07 vs 5.08 dB), and
    z-scored with one global mean and deviation 6.6 vs 5.1 dB. Reconstructions of InstaHide
    applied to normalised inputs are therefore a weak lower bound on its leakage.

    Parameters
    ----------
    steps : int
        Adam steps.
    lr : float
        Adam learning rate.
    tv_weight : float
        :math:`\lambda_{tv}`.
    prior_weight : float
        :math:`\lambda_{\mu}` (ignored without a granted public mean).
    noise_weighting : bool
        Weigh rows by their inverse public-noise variance (see above).
    noise_floor : float
        Added to ``v_i`` before inverting; bounds the weight of rows with little public mass.
    device : str or torch.device
        Where to optimise; the reconstruction is returned on CPU.
    """

    name = "carlini-instahide"
    observes = ObservedRelease
    requires = InstaHideKnowledge

    def __init__(
        self,
        *,
        steps: int = 500,
        lr: float = 0.05,
        tv_weight: float = 1e-3,
        prior_weight: float = 0.05,
        noise_weighting: bool = True,
        noise_floor: float = 0.01,
        device: str | torch.device = "cpu",
    ) -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if tv_weight < 0 or prior_weight < 0:
            raise ValueError("tv_weight and prior_weight must be >= 0")
        if not noise_floor > 0:
            raise ValueError(f"noise_floor must be positive, got {noise_floor}")
        self.steps = int(steps)
        self.lr = float(lr)
        self.tv_weight = float(tv_weight)
        self.prior_weight = float(prior_weight)
        self.noise_weighting = bool(noise_weighting)
        self.noise_floor = float(noise_floor)
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return (
            f"CarliniInstaHideAttack(steps={self.steps}, lr={self.lr}, tv_weight={self.tv_weight}, "
            f"prior_weight={self.prior_weight}, noise_weighting={self.noise_weighting}, "
            f"noise_floor={self.noise_floor}, device='{self.device}')"
        )

    def reconstruct(self, observed: ObservedRelease, knowledge: InstaHideKnowledge) -> Reconstruction:
        """Estimate every private sample (row ``i`` <-> private sample ``i``).

        Raises
        ------
        ValueError
            If ``knowledge.private_index`` or ``knowledge.weights`` was not granted, or
            shapes disagree with the release.
        """
        knowledge.require("private_index", "weights", attack="the Carlini InstaHide attack")
        started = time.perf_counter()
        n = observed.n
        shape = tuple(observed.sample_shape)
        dim = math.prod(shape)
        idx, w = knowledge.private_index, knowledge.weights
        if idx.shape[0] != n or w.shape[0] != n:
            raise ValueError(
                f"knowledge covers {idx.shape[0]} graph rows / {w.shape[0]} weight rows but the release has {n} rows"
            )
        if knowledge.public_mean is not None and knowledge.public_mean.numel() != dim:
            raise ValueError(f"public_mean has {knowledge.public_mean.numel()} values but samples have {dim}")
        dev = self.device
        dtype = torch.float64 if observed.x.dtype == torch.float64 else torch.float32
        ks = idx.shape[1]
        k_public = w.shape[1] - ks
        problem = self._problem(observed, knowledge, dev, dtype)
        mu = problem.mean
        public_mass = w[:, ks:].sum(1)
        lo, hi = _bounds(knowledge.valid_range, (dim,), dev, dtype)

        X = self._initial(n, dim, mu, lo, hi, dev, dtype).requires_grad_(True)
        # Fused Adam (same update, several times faster), projected onto the valid range.
        solver = ProjectedAdam(X, lr=self.lr, bounds=(lo, hi), fused=True)
        use_tv = self.tv_weight > 0 and has_tv(shape)
        last = {"data": float("nan"), "tv": 0.0, "prior": 0.0, "total": float("nan")}
        for _ in range(self.steps):
            solver.zero_grad()
            last = self._objective(X, problem, use_tv)  # sets X.grad
            solver.step()
        with torch.no_grad():
            final = self._objective(X, problem, use_tv, backward=False)
        details = {
            "steps": self.steps,
            "lr": self.lr,
            "tv_weight": self.tv_weight,
            "prior_weight": self.prior_weight if problem.prior is not None else 0.0,
            "noise_weighting": problem.row_weights is not None,
            "noise_floor": self.noise_floor,
            "tv_used": use_tv,
            "k": int(w.shape[1]),
            "k_private": int(ks),
            "public_slots": int(k_public),
            "public_mean_used": mu is not None and k_public > 0,
            "init": "public mean" if mu is not None else ("midrange" if lo is not None else "zeros"),
            "clipped_to_valid_range": lo is not None,
            "final_loss": final,
            "last_step_loss": last,
            "threat_model": knowledge.description,
            "seconds": time.perf_counter() - started,
        }
        if k_public and mu is None:
            details["note"] = (
                f"{k_public} public slots per row but no public mean granted: the public part "
                f"(mass {float(public_mass.mean()):.3f} on average) is modelled as zero"
            )
        return Reconstruction(x=X.detach().to("cpu").reshape(n, *shape), method=self.name, details=details)

    # -- internals ---------------------------------------------------------------------------

    def _problem(self, observed: ObservedRelease, knowledge: InstaHideKnowledge, device, dtype) -> _Problem:
        """The fixed tensors of the objective (``|x~|``, graph, offset, row weights, prior)."""
        n = observed.n
        dim = math.prod(observed.sample_shape)
        ks = knowledge.private_index.shape[1]
        w = knowledge.weights.to(device, dtype)
        k_public = w.shape[1] - ks
        mu = knowledge.public_mean.to(device, dtype).reshape(1, dim) if knowledge.public_mean is not None else None
        row_weights = None
        if self.noise_weighting and k_public:
            r = 1.0 / (w[:, ks:].square().sum(1, keepdim=True) + self.noise_floor)
            row_weights = r / r.mean()
        return _Problem(
            target=observed.x.reshape(n, dim).to(device, dtype).abs(),
            index=knowledge.private_index.to(device).long(),
            private_weights=w[:, :ks].contiguous(),
            offset=w[:, ks:].sum(1, keepdim=True) * mu if (mu is not None and k_public) else None,
            row_weights=row_weights,
            prior=mu if (mu is not None and self.prior_weight > 0) else None,
            mean=mu,
            shape=tuple(observed.sample_shape),
        )

    @staticmethod
    def _initial(n, dim, mu, lo, hi, device, dtype) -> torch.Tensor:
        if mu is not None:
            X = mu.expand(n, dim).clone()
        elif lo is not None:
            X = ((lo + hi) / 2) * torch.ones(n, dim, device=device, dtype=dtype)
        else:
            return torch.zeros(n, dim, device=device, dtype=dtype)
        return X.clamp_(lo, hi) if lo is not None else X

    def _objective(self, X: torch.Tensor, p: _Problem, use_tv: bool, backward: bool = True) -> dict[str, float]:
        """Loss terms and, with ``backward``, the exact gradient written to ``X.grad``."""
        n, dim = X.shape
        Xd = X.detach()
        scale = 1.0 / (n * dim)
        mixed = p.offset.clone() if p.offset is not None else torch.zeros_like(Xd)
        for s in range(p.index.shape[1]):
            mixed.addcmul_(Xd.index_select(0, p.index[:, s]), p.private_weights[:, s : s + 1])
        residual = mixed.abs() - p.target
        weighted = residual if p.row_weights is None else residual * p.row_weights
        totals = {"data": float((weighted * residual).sum()) * scale, "tv": 0.0, "prior": 0.0}
        grad = None
        if backward:
            # d|m|/dm with sgn(0) := +1; g = dL/dm.
            g = weighted.mul_(torch.where(mixed < 0, -1.0, 1.0).to(mixed.dtype)).mul_(2 * scale)
            grad = torch.zeros_like(Xd)
            for s in range(p.index.shape[1]):
                grad.index_add_(0, p.index[:, s], g * p.private_weights[:, s : s + 1])
        if p.prior is not None:
            diff = Xd - p.prior
            totals["prior"] = float(diff.square().sum()) * self.prior_weight * scale
            if backward:
                grad.add_(diff, alpha=2 * self.prior_weight * scale)
        if use_tv:
            images = Xd.reshape(n, *p.shape)
            tv_value, tv_grad = tv_and_grad(images, need_grad=backward)
            totals["tv"] = float(tv_value) * self.tv_weight / n
            if backward:
                grad.add_(tv_grad.reshape(n, dim), alpha=self.tv_weight / n)
        if backward:
            X.grad = grad
        totals["total"] = totals["data"] + totals["tv"] + totals["prior"]
        return totals


@dataclass
class _Problem:
    """The attack's fixed tensors: ``|x~|``, the graph, and the optional terms."""

    target: torch.Tensor
    index: torch.Tensor
    private_weights: torch.Tensor
    offset: torch.Tensor | None
    row_weights: torch.Tensor | None
    prior: torch.Tensor | None
    mean: torch.Tensor | None
    shape: tuple[int, ...]


def instahide_reference_loss(
    X: torch.Tensor,
    target: torch.Tensor,
    private_index: torch.Tensor,
    weights: torch.Tensor,
    public_mean: torch.Tensor | None,
    *,
    tv_weight: float,
    prior_weight: float,
    noise_weighting: bool,
    noise_floor: float,
) -> torch.Tensor:
    """:class:`CarliniInstaHideAttack`'s objective with plain differentiable ops (gradient checks).

    ``X`` is ``(n, *sample_shape)``, ``target`` the released ``x~`` (signed, same shape).
    """
    n = X.shape[0]
    flat = X.reshape(n, -1)
    ks = private_index.shape[1]
    mixed = sum(weights[:, s : s + 1] * flat[private_index[:, s]] for s in range(ks))
    k_public = weights.shape[1] - ks
    if public_mean is not None and k_public:
        mixed = mixed + weights[:, ks:].sum(1, keepdim=True) * public_mean.reshape(1, -1)
    sq = (mixed.abs() - target.reshape(n, -1).abs()).square()
    if noise_weighting and k_public:
        r = 1.0 / (weights[:, ks:].square().sum(1, keepdim=True) + noise_floor)
        sq = sq * (r / r.mean())
    loss = sq.mean()
    if public_mean is not None and prior_weight > 0:
        loss = loss + prior_weight * (flat - public_mean.reshape(1, -1)).square().mean()
    if has_tv(X.shape[1:]) and tv_weight > 0:
        loss = loss + tv_weight * tv_per_image(X).mean()
    return loss
