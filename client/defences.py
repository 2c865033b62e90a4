"""A party's local update under each client-side defence of the iterative strategies.

Thin: it reads the run config and the party's data and calls the maths in ``common``.
The same function serves the ClientApp's ``train`` and the gradient-leakage audit
(:mod:`simulations.gradient_audit`), so the audited update is the update a run makes.

* ``defence = "none"``: the plain FedProx/FedAvg update (:func:`common.training.train_local`).
* ``"fed-augmix"``: the same loop with Fed-AugMix's objective (:mod:`common.augmix`):
  cross-entropy on the original plus lambda times the Jensen-Shannon divergence between the
  predictions on the original and two AugMix views, lambda from the loss-scaling schedule.
  AugMix acts on pixels: normalised image rows are mapped back to [0, 1] for it.
* ``"dp-mix-self"`` / ``"dp-mix-diff"``: DP-SGD on DP-Mix views (:mod:`common.dp_mix`).
  The party's (epsilon, delta) after ``server_round`` rounds is accounted here from the
  steps it has taken (RDP accountant, Poisson sampling); the proximal term is added after
  clipping and noise, so it costs no privacy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import torch
from torch import nn

from client.party import PartyData
from common.augmix import FedAugMixObjective, LossScaling
from common.config import RunConfig
from common.dp_mix import dp_epsilon, load_diffusion_samples, steps_per_epoch, train_local_dp_mix
from common.training import train_local

__all__ = ["LocalUpdate", "dp_mix_epsilon", "local_update"]


@dataclass(frozen=True)
class LocalUpdate:
    """What a local update reports besides the new weights (held by the model).

    ``train_loss`` and ``metrics`` may be sent to the server; ``train_loss`` is ``None`` for
    DP-Mix, whose unprivatised loss stays in ``local_metrics`` with the other figures computed
    from private rows outside the DP guarantee (for logs and the audit, never for messages).
    """

    train_loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    local_metrics: dict[str, float] = field(default_factory=dict)


class _FromPixels(nn.Module):
    """``model(lo + p * (hi - lo))``: lets AugMix work on pixels in [0, 1] when the model's
    inputs are normalised rows with per-coordinate bounds ``(lo, hi)``."""

    def __init__(self, model: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("lo", lo)
        self.register_buffer("span", hi - lo)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + pixels * self.span)


def _pixel_bounds(party: PartyData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-coordinate ``(lo, hi)`` of normalised image rows, ``None`` when rows are pixels already."""
    bounds = party.input_bounds
    if bounds is None:
        raise ValueError("client-side augmentations need raw inputs; this party holds backbone features")
    lo, hi = bounds
    if not torch.is_tensor(lo):
        return None if (float(lo), float(hi)) == (0.0, 1.0) else (
            torch.full((party.train_x.shape[1],), float(lo), device=device),
            torch.full((party.train_x.shape[1],), float(hi), device=device),
        )
    return lo.to(device).reshape(-1), hi.to(device).reshape(-1)


def fed_augmix_objective(cfg: RunConfig, party: PartyData, generator: torch.Generator) -> FedAugMixObjective:
    """Fed-AugMix's batch loss (Algorithm 1, lines 4-9) with this run's settings."""
    if party.image_shape is None:
        raise ValueError("defence = fed-augmix augments raw images; this party holds backbone features")
    scaling = (
        LossScaling(base_weight=cfg.js_weight, large_weight=cfg.js_large_weight, scale=cfg.js_scale)
        if cfg.loss_scaling
        else LossScaling.constant(cfg.js_weight)
    )
    return FedAugMixObjective(
        sample_shape=party.image_shape,
        severity=cfg.augmix_severity,
        generator=generator,
        scaling=scaling,
        width=cfg.augmix_width,
        max_depth=cfg.augmix_depth,
        alpha=cfg.augmix_alpha,
        value_range=(0.0, 1.0),
    )


@lru_cache(maxsize=2)
def _diffusion_samples(cfg: RunConfig, num_classes: int, image_shape: tuple[int, int, int]):
    # Class names are not part of the data sets' tensors; the prompts use the class index
    # names torchvision gives for the supported sets, or the digit names.
    names = [str(i) for i in range(num_classes)]
    return load_diffusion_samples(
        cfg.diffusion_model_path,
        class_names=names,
        per_class=cfg.diffusion_samples_per_class,
        image_shape=image_shape,
        seed=cfg.seed,
        device="cuda" if cfg.device == "cuda" else "cpu",
    )


def dp_mix_epsilon(cfg: RunConfig, num_examples: int, *, rounds: int) -> float:
    """The party's epsilon at ``dp-delta`` after ``rounds`` rounds of ``local-epochs`` epochs.

    Record-level DP of the party's own training rows against anyone who sees all its
    updates (the server, or an eavesdropper), by the RDP accountant for the Poisson-sampled
    Gaussian mechanism. It counts every round as taken (an upper bound when the party missed
    one) and assumes the noise is truly random: seeded simulation noise is not.
    """
    steps = rounds * cfg.local_epochs * steps_per_epoch(num_examples, cfg.batch_size)
    rate = min(1.0, cfg.batch_size / num_examples)
    return dp_epsilon(noise_multiplier=cfg.dp_noise_multiplier, sample_rate=rate, steps=steps, delta=cfg.dp_delta)


def local_update(
    cfg: RunConfig,
    party: PartyData,
    model: nn.Module,
    *,
    lr: float,
    proximal_mu: float,
    generator: torch.Generator,
    server_round: int,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    optimizer: Literal["adamw", "sgd"] = "adamw",
) -> LocalUpdate:
    """Train ``model`` in place with the run's defence; return the loss and metrics.

    ``x``, ``y``, ``epochs``, ``batch_size`` and ``optimizer`` default to the party's
    training part and the run config (AdamW); the gradient-leakage audit passes a small
    batch and plain SGD (Algorithm 1 of Fed-AugMix). ``server_round`` counts the rounds this
    party has trained, for the DP accounting.
    """
    x = party.train_x if x is None else x
    y = party.train_y if y is None else y
    epochs = cfg.local_epochs if epochs is None else epochs
    batch_size = cfg.batch_size if batch_size is None else batch_size
    device = next(model.parameters()).device
    if cfg.defence == "none":
        loss = train_local(
            model, x, y, epochs=epochs, lr=lr, generator=generator, proximal_mu=proximal_mu,
            batch_size=batch_size, weight_decay=cfg.weight_decay, optimizer=optimizer,
        )
        return LocalUpdate(train_loss=loss)
    if cfg.defence == "fed-augmix":
        objective = fed_augmix_objective(cfg, party, generator)
        bounds = _pixel_bounds(party, device)
        target: nn.Module = model
        if bounds is not None:  # AugMix on pixels; the model still sees normalised rows
            lo, hi = bounds
            x = ((x.to(device) - lo) / (hi - lo)).cpu()
            target = _FromPixels(model, lo, hi)
        loss = train_local(
            target, x, y, epochs=epochs, lr=lr, generator=generator, proximal_mu=proximal_mu,
            batch_size=batch_size, weight_decay=cfg.weight_decay, optimizer=optimizer, objective=objective,
        )
        stats = objective.summary()
        return LocalUpdate(
            train_loss=loss,
            metrics={
                "js-large-weight-share": float(stats["large_weight_share"]),
                "js-divergence": float(stats["last_divergence"]),
                "js-weight": float(stats["last_weight"]),
            },
        )
    # DP-Mix: DP-SGD on views of each sample alone (and, for 'diff', diffusion samples).
    if party.image_shape is None:
        raise ValueError(f"defence = {cfg.defence} augments raw images; this party holds backbone features")
    synthetic = None
    if cfg.defence == "dp-mix-diff":
        synthetic = _diffusion_samples(cfg, party.num_classes, party.image_shape)
    result = train_local_dp_mix(
        model, x, y,
        sample_shape=party.image_shape,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        noise_multiplier=cfg.dp_noise_multiplier,
        max_grad_norm=cfg.dp_max_grad_norm,
        num_augmentations=cfg.dpmix_augmentations,
        num_mixups=cfg.dpmix_mixups,
        alpha=cfg.dpmix_alpha,
        generator=generator,
        proximal_mu=proximal_mu,
        weight_decay=cfg.weight_decay,
        optimizer=optimizer,
        secure_mode=cfg.secure_rng,
        max_shift=cfg.dpmix_max_shift,
        flip=cfg.dpmix_flip,
        synthetic=synthetic,
    )
    # Only data-independent figures leave the party: the training loss and the share of
    # clipped gradients are computed from the private rows without noise, outside the
    # guarantee, so a DP party keeps them to itself (``local_metrics``).
    metrics = {"dp-steps": float(result.steps), "dp-sample-rate": float(result.sample_rate)}
    if x is party.train_x:  # the run's own update: account the party's privacy so far
        metrics["dp-epsilon"] = dp_mix_epsilon(cfg, int(x.shape[0]), rounds=server_round)
    return LocalUpdate(
        train_loss=None, metrics=metrics,
        local_metrics={"train-loss": float(result.mean_loss), "dp-clipped-share": float(result.clipped_share)},
    )
