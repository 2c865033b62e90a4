"""DP-SGD on DP-Mix views: a party's privatised local update (:func:`train_local_dp_mix`).

One step (Abadi et al., 2016), with Poisson sampling of rate ``q = min(1, batch_size / N)``,
expected batch size ``E = q N`` and per-sample losses over ``V = K + M`` views::

    l_i(w) = (1/V) sum_v CE(f_w(v_iv), y_iv),                 g_i = grad l_i(w),
    clip_C(g) = g * min(1, C / (||g||_2 + 1e-6)),             (Opacus' flat clipping)
    g~ = (1/E) (sum_{i in batch} clip_C(g_i) + N(0, sigma^2 C^2 I)),
    w <- opt(w, g~ + mu (w - w_global)).

Per-sample gradients come from Opacus' :class:`~opacus.GradSampleModule` (a ``(B, V, D)``
input gives one gradient per sample, its hooks summing over the views), clipping, noise and
the division by ``E`` from :class:`~opacus.optimizers.DPOptimizer` (``pre_step``), each step
counted by an :class:`~opacus.accountants.RDPAccountant` through the optimizer's public step
hook. The proximal term and the optimiser step come after the noise: post-processing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from opacus import GradSampleModule
from opacus.accountants import IAccountant, RDPAccountant
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.nn import functional as F

from ..secure_random import SystemRandom, uniform
from ..training import local_optimizer
from ._checks import _check_finite, _check_generator, _check_int, _check_positive, _check_view_arguments
from .accounting import steps_per_epoch
from .opacus_private import UrandomNoiseDPOptimizer, opacus_traces, remove_opacus_traces
from .views import _draw_seed, diffusion_mixup_views, self_mixup_views

__all__ = ["DPTrainingResult", "train_local_dp_mix"]


@dataclass(frozen=True)
class DPTrainingResult:
    """What :func:`train_local_dp_mix` reports.

    Attributes
    ----------
    mean_loss : float
        Mean per-sample loss over every sampled record (NaN if every batch was empty). Not
        privatised: computed on the raw private batches.
    steps : int
        DP-SGD steps taken, empty batches included (``epochs * steps_per_epoch(N, batch_size)``).
    sample_rate : float
        Poisson sampling rate ``q = min(1, batch_size / N)``.
    noise_multiplier : float
        ``sigma``: noise std ``sigma * C`` on the sum of clipped per-sample gradients.
    max_grad_norm : float
        The clip ``C``.
    clipped_share : float
        Share of per-sample gradients whose norm exceeded ``C`` (0 if no record was
        sampled). Not privatised.
    """

    mean_loss: float
    steps: int
    sample_rate: float
    noise_multiplier: float
    max_grad_norm: float
    clipped_share: float


def _check_dp_model(model: nn.Module) -> None:
    """Refuse a non-module, a model with BatchNorm, or one with nothing to train."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"model: {name or 'the model'} is {type(module).__name__}; BatchNorm mixes samples of a batch, so "
                "Opacus cannot compute per-sample gradients through it (DP-SGD needs them). Use a model without "
                "BatchNorm, e.g. MixupClassifier(..., norm='layer')"
            )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters")


def _per_sample_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``l_i = (1/V) sum_v CE(logits[i, v], t_iv)`` per sample, shape ``(B,)``.

    ``logits`` is ``(B, V, C)``; ``targets`` class indices ``(B,)``, soft labels ``(B, C)``
    shared by the views, or per-view soft labels ``(B, V, C)``; soft cross-entropy
    ``CE(z, t) = -sum_c t_c log softmax(z)_c``.
    """
    logp = torch.log_softmax(logits, dim=-1)
    if targets.ndim == 1:
        index = targets.long()[:, None, None].expand(-1, logp.shape[1], 1)
        nll = -logp.gather(-1, index).squeeze(-1)
    elif targets.ndim == 2:
        nll = -(targets[:, None, :] * logp).sum(dim=-1)
    else:
        nll = -(targets * logp).sum(dim=-1)
    return nll.mean(dim=1)


def _per_sample_norms(grad_samples: list[torch.Tensor]) -> torch.Tensor:
    """``||g_i||_2`` over all parameters for every sample ``i`` (as Opacus' flat clip)."""
    norms = [g.reshape(len(g), -1).norm(2, dim=-1) for g in grad_samples]
    return torch.stack(norms, dim=1).norm(2, dim=1)


def _dp_sgd_steps(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
    noise_generator: torch.Generator | None,
    secure_mode: bool = False,
    proximal_mu: float = 0.0,
    global_params: Sequence[torch.Tensor] | None = None,
    weight_decay: float = 0.0,
    optimizer: Literal["adamw", "sgd"] = "adamw",
    accountant: IAccountant | None = None,
    sample_rate: float | None = None,
) -> tuple[float, int, int, int]:
    """DP-SGD over given batches of views: the privatised core of :func:`train_local_dp_mix`.

    Parameters
    ----------
    model : nn.Module
        Trained in place, returned unwrapped and in its training mode on entry.
    batches : iterable of (views, targets)
        Views ``(B, V, *sample)`` in the model's input layout (``B = 0`` allowed: a
        pure-noise step), targets as :func:`_per_sample_loss` takes them.
    noise_generator : torch.Generator or None
        Seeded noise (simulation only), or ``None``: Opacus' default generator, or
        ``os.urandom`` with ``secure_mode`` (a seeded generator is then refused).
    global_params : sequence of torch.Tensor, optional
        The proximal anchor ``w_global`` (trainable parameters in ``model.parameters()``
        order), default the weights on entry.
    accountant : opacus.accountants.IAccountant, optional
        Stepped once per step taken with ``(noise_multiplier, sample_rate)`` through
        ``DPOptimizer.attach_step_hook``; needs ``sample_rate``.

    Returns
    -------
    tuple
        ``(loss_sum, samples, clipped, steps)``: the sum of per-sample losses, the number of
        sampled records, how many of their gradients exceeded the clip, steps taken.
    """
    if secure_mode and noise_generator is not None:
        raise ValueError(
            "noise_generator: a seeded noise generator is prohibited in secure mode (as Opacus' PrivacyEngine: "
            "'Passing seed is prohibited in secure mode'); secure mode draws the noise from os.urandom"
        )
    if accountant is not None and sample_rate is None:
        raise ValueError("sample_rate: an accountant needs the Poisson sampling rate of the batches")
    _check_dp_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    if global_params is None:
        global_params = [p.detach().clone() for p in params]
    elif len(global_params) != len(params):
        raise ValueError(f"global_params: {len(global_params)} tensors for {len(params)} trainable parameters")
    global_params = [g.detach().to(device) for g in global_params]
    had = opacus_traces(model)
    try:
        wrapped = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    except NotImplementedError as e:
        raise ValueError(f"model: Opacus cannot compute per-sample gradients for it: {e}") from e
    was_training = model.training
    model.train()  # the hooks only record activations in training mode
    dp_opt = None
    loss_sum, samples, clipped, steps = 0.0, 0, 0, 0
    try:
        base = local_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
        settings = dict(noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
                        expected_batch_size=expected_batch_size, loss_reduction="mean")
        if secure_mode:
            dp_opt = UrandomNoiseDPOptimizer(base, **settings)
        else:
            dp_opt = DPOptimizer(base, generator=noise_generator, **settings)
        if accountant is not None:
            dp_opt.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        wrapped.forbid_grad_accumulation()  # Poisson sampling: one backward per step
        for views, targets in batches:
            dp_opt.zero_grad(set_to_none=True)
            views = views.to(device=device, dtype=torch.float32)
            targets = targets.to(device)
            per_sample = _per_sample_loss(wrapped(views), targets)
            b = per_sample.shape[0]
            # GradSampleModule's "mean" multiplies the backprops by B: per-sample gradients of
            # l_i; DPOptimizer's "mean" divides the noisy sum by the expected batch size.
            with warnings.catch_warnings():
                # Opacus' full backward hooks on inputs that need no gradient: harmless.
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                (per_sample.mean() if b else per_sample.sum()).backward()
            if b:
                clipped += int((_per_sample_norms(dp_opt.grad_samples) > max_grad_norm).sum())
                loss_sum += float(per_sample.detach().sum())
                samples += b
            if dp_opt.pre_step():  # clip, sum, add noise, divide by E, step the accountant
                if proximal_mu > 0:  # after privatisation: data-independent, post-processing
                    with torch.no_grad():
                        for p, anchor in zip(params, global_params, strict=True):
                            p.grad.add_(p.detach() - anchor, alpha=proximal_mu)
                dp_opt.original_optimizer.step()
            steps += 1
    finally:
        if dp_opt is not None:
            dp_opt.zero_grad(set_to_none=True)
        wrapped.to_standard_module()  # removes the hooks and the per-parameter grad samples
        remove_opacus_traces(model, had)
        model.train(was_training)
    return loss_sum, samples, clipped, steps


def _to_images(rows: torch.Tensor, sample_shape: tuple[int, ...]) -> torch.Tensor:
    return rows.reshape(rows.shape[0], *sample_shape).float()


def _dp_mix_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sample_shape: tuple[int, int, int],
    steps: int,
    sample_rate: float,
    num_augmentations: int,
    num_mixups: int,
    alpha: float,
    generator: torch.Generator,
    sampling: torch.Generator | SystemRandom,
    max_shift: int,
    flip: bool,
    synthetic: tuple[torch.Tensor, torch.Tensor] | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``steps`` Poisson-sampled batches as ``(views (B, V, D), targets)``.

    Record ``i`` joins a batch when ``u_i < sample_rate``, ``u_i`` uniform from ``sampling``
    (``generator`` itself, or the CSPRNG in secure mode), so ``P(i in batch) = sample_rate``
    independently of the other records; the views come from ``generator``. ``y`` must
    already be one-hot/soft ``(N, L)`` when ``synthetic`` is given.
    """
    n = x.shape[0]
    in_dim = math.prod(sample_shape)
    for _ in range(steps):
        index = torch.nonzero(uniform(sampling, (n,)) < sample_rate).squeeze(1).to(x.device)
        images = _to_images(x[index], sample_shape)
        yb = y[index.to(y.device)]
        if synthetic is None:
            views = self_mixup_views(
                images, num_augmentations=num_augmentations, num_mixups=num_mixups, alpha=alpha,
                generator=generator, max_shift=max_shift, flip=flip,
            )
            targets = yb
        else:
            views, targets = diffusion_mixup_views(
                images, yb, synthetic[0], synthetic[1], num_augmentations=num_augmentations,
                num_mixups=num_mixups, alpha=alpha, generator=generator, max_shift=max_shift, flip=flip,
            )
        yield views.reshape(views.shape[0], views.shape[1], in_dim), targets


def _noise_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A noise generator on ``device`` seeded with 62 bits drawn from ``generator``."""
    return torch.Generator(device=device).manual_seed(_draw_seed(generator))


def _check_rows(x, y, sample_shape, model) -> tuple[tuple[int, int, int], int]:
    """Check the party's rows and labels against ``sample_shape``; return ``(sample_shape, N)``."""
    if not isinstance(sample_shape, (tuple, list)) or len(sample_shape) != 3:
        raise ValueError(f"sample_shape must be (C, H, W), got {sample_shape!r}")
    for v in sample_shape:
        _check_int("sample_shape", v, 1)
    sample_shape = tuple(int(v) for v in sample_shape)
    in_dim = math.prod(sample_shape)
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a tensor of rows (N, ...), got {getattr(x, 'shape', type(x).__name__)}")
    if tuple(x.shape[1:]) not in ((in_dim,), sample_shape):
        raise ValueError(
            f"sample_shape {sample_shape} does not match x of shape {tuple(x.shape)}: rows must be "
            f"({in_dim},) or {sample_shape}"
        )
    n = x.shape[0]
    if n < 1:
        raise ValueError("x is empty: a party needs at least one training row")
    if not isinstance(y, torch.Tensor) or y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must be class indices ({n},) or soft labels ({n}, L), got {getattr(y, 'shape', None)}")
    if y.ndim == 1 and (y.is_floating_point() or y.is_complex()):
        raise ValueError("y: 1-d labels must be integer class indices")
    _check_finite("x", x)
    _check_finite("y", y)
    model_in = getattr(model, "in_dim", None)
    if isinstance(model_in, int) and model_in != in_dim:
        raise ValueError(f"sample_shape {sample_shape} has {in_dim} values but the model takes in_dim = {model_in}")
    return sample_shape, n


def _check_synthetic(synthetic, y: torch.Tensor, sample_shape: tuple[int, int, int]):
    """DP-Mix_diff's ``(images, labels)`` as ``((S, C, H, W) float, (S, L) float)`` and ``y``
    as one-hot/soft ``(N, L)`` rows of the same width."""
    in_dim = math.prod(sample_shape)
    if not isinstance(synthetic, (tuple, list)) or len(synthetic) != 2:
        raise ValueError("synthetic must be a pair (images, one-hot labels)")
    syn_x, syn_y = synthetic
    if not isinstance(syn_x, torch.Tensor) or tuple(syn_x.shape[1:]) not in ((in_dim,), sample_shape):
        raise ValueError(
            f"synthetic images must be (S, {in_dim}) or (S, *{sample_shape}), got {getattr(syn_x, 'shape', None)}"
        )
    if syn_x.shape[0] < 1:
        raise ValueError("synthetic holds no image: DP-Mix_diff needs at least one synthetic sample")
    if not isinstance(syn_y, torch.Tensor) or syn_y.ndim != 2 or syn_y.shape[0] != syn_x.shape[0]:
        raise ValueError(
            f"synthetic labels must be one-hot ({syn_x.shape[0]}, L), got {getattr(syn_y, 'shape', None)}"
        )
    _check_finite("synthetic images", syn_x)
    _check_finite("synthetic labels", syn_y)
    width = syn_y.shape[1]
    if y.ndim == 1:
        if int(y.min()) < 0 or int(y.max()) >= width:
            raise ValueError(f"y: class indices must lie in [0, {width}) (the synthetic labels' width)")
        y = F.one_hot(y.long(), width).float()
    elif y.shape[1] != width:
        raise ValueError(f"y has {y.shape[1]} classes but the synthetic labels {width}")
    return (_to_images(syn_x, sample_shape), syn_y.float()), y


def train_local_dp_mix(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sample_shape: tuple[int, ...],
    epochs: int,
    lr: float,
    batch_size: int,
    noise_multiplier: float,
    max_grad_norm: float,
    num_augmentations: int,
    num_mixups: int,
    alpha: float,
    generator: torch.Generator,
    proximal_mu: float = 0.0,
    weight_decay: float = 0.0,
    optimizer: Literal["adamw", "sgd"] = "adamw",
    secure_mode: bool = False,
    max_shift: int = 2,
    flip: bool = False,
    synthetic: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DPTrainingResult:
    """A party's DP-Mix local update: DP-SGD on DP-Mix views, FedProx/FedAvg anchor.

    Takes ``T = epochs * steps_per_epoch(N, batch_size)`` steps. At each, every record joins
    the batch independently with probability ``q = min(1, batch_size / N)``; each sampled
    record gets ``K = num_augmentations`` self-augmentations and ``M = num_mixups`` mixups
    (:func:`~common.dp_mix.self_mixup_views`, or :func:`~common.dp_mix.diffusion_mixup_views`
    with ``synthetic``); its loss ``l_i`` is the mean soft cross-entropy over its ``K + M``
    views and its gradient ``g_i`` is clipped to ``C = max_grad_norm``. Then::

        w <- opt(w, (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / (q N) + mu (w - w_global))

    with ``w_global`` the weights on entry and ``opt`` AdamW (decoupled weight decay) or SGD
    (weight decay as an L2 term). An empty batch still takes its (pure-noise) step. The
    release of all ``T`` updates is ``(epsilon, delta)``-DP for this party's records with
    ``epsilon = dp_epsilon(noise_multiplier=sigma, sample_rate=q, steps=T, delta=delta)``,
    summed over rounds by the caller; see :mod:`common.dp_mix` for the caveats.

    Parameters
    ----------
    model : nn.Module
        Trained in place; it must not contain BatchNorm (Opacus refuses it), e.g.
        ``MixupClassifier(..., norm="layer")``, and accept ``(B, V, D)`` inputs. It is
        returned unwrapped (same state-dict keys and attributes, no Opacus hooks).
    x : torch.Tensor
        The party's rows, ``(N, prod(sample_shape))`` or ``(N, *sample_shape)``, finite.
    y : torch.Tensor
        Class indices ``(N,)`` or soft labels ``(N, L)``.
    sample_shape : tuple of int
        ``(C, H, W)`` of one image, e.g. ``(1, 8, 8)`` for digits.
    noise_multiplier : float
        ``sigma >= 0`` (0: no privacy, ``dp_epsilon`` gives ``inf``).
    max_grad_norm : float
        The clip ``C > 0``.
    generator : torch.Generator
        Drives the views and mixup weights and, unless ``secure_mode``, the Poisson
        sampling and the seed of the noise generator (reproducible simulation only: whoever
        knows the seed can subtract the noise).
    secure_mode : bool
        Poisson sampling and noise from ``os.urandom`` with Opacus' secure-mode noise
        construction (not reproducible); ``generator`` then only drives the views.
    synthetic : (images, labels), optional
        DP-Mix_diff's public synthetic images ``(S, *sample_shape)`` (or flat) and their
        one-hot labels ``(S, L)`` (:func:`~common.dp_mix.load_diffusion_samples`).

    Raises
    ------
    ValueError
        A BatchNorm model, non-finite data, or an argument out of range (named in the message).
    """
    _check_dp_model(model)
    generator = _check_generator(generator)
    sample_shape, n = _check_rows(x, y, sample_shape, model)
    epochs = _check_int("epochs", epochs, 1)
    lr = _check_positive("lr", lr)
    batch_size = _check_int("batch_size", batch_size, 1)
    noise_multiplier = _check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    max_grad_norm = _check_positive("max_grad_norm", max_grad_norm)
    k, m, a, s = _check_view_arguments(num_augmentations, num_mixups, alpha, max_shift)
    proximal_mu = _check_positive("proximal_mu", proximal_mu, allow_zero=True)
    weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    if not isinstance(secure_mode, bool):
        raise ValueError(f"secure_mode must be a bool, got {secure_mode!r}")
    if synthetic is not None:
        synthetic, y = _check_synthetic(synthetic, y, sample_shape)

    device = next(p for p in model.parameters() if p.requires_grad).device
    noise_generator = None if secure_mode else _noise_generator(generator, device)
    sampling: torch.Generator | SystemRandom = SystemRandom() if secure_mode else generator
    rate = min(1.0, batch_size / n)
    total_steps = epochs * steps_per_epoch(n, batch_size)
    batches = _dp_mix_batches(
        x, y, sample_shape=sample_shape, steps=total_steps, sample_rate=rate, num_augmentations=k,
        num_mixups=m, alpha=a, generator=generator, sampling=sampling, max_shift=s, flip=flip, synthetic=synthetic,
    )
    accountant = RDPAccountant()
    loss_sum, samples, clipped, steps = _dp_sgd_steps(
        model, batches, lr=lr, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        expected_batch_size=min(batch_size, n), noise_generator=noise_generator, secure_mode=secure_mode,
        proximal_mu=proximal_mu, weight_decay=weight_decay, optimizer=optimizer,
        accountant=accountant, sample_rate=rate,
    )
    if accountant.history != [(noise_multiplier, rate, total_steps)] or steps != total_steps:
        raise RuntimeError(  # dp_epsilon(steps=T) would then misreport the privacy spent
            f"DP-Mix took {steps} steps and Opacus accounted {accountant.history}, expected "
            f"[({noise_multiplier}, {rate}, {total_steps})]"
        )
    return DPTrainingResult(
        mean_loss=loss_sum / samples if samples else math.nan,
        steps=steps,
        sample_rate=rate,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        clipped_share=clipped / samples if samples else 0.0,
    )
