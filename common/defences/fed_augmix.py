"""Fed-AugMix: AugMix views of every batch and a Jensen-Shannon consistency loss.

The batch loss is the cross-entropy on the originals plus lambda times the Jensen-Shannon
divergence between the predictions on the original and two AugMix views (Algorithm 1, lines
4-9, of Fed-AugMix; the maths in :mod:`common.augmix`), lambda from the loss-scaling rule.
AugMix acts on pixels: normalised image rows are mapped back to [0, 1] for it.

Privacy caveat: augmentation noise is not a differential-privacy mechanism; the defence
gives no formal guarantee, only what the gradient-leakage audit measures.
"""

from __future__ import annotations

import torch
from torch import nn

from common.fed_augmix_loss import FedAugMixObjective, LossScaling
from common.defences.base import DEFENCES, Defence, LocalUpdate
from common.training import train_local

__all__ = ["FedAugMix", "fed_augmix_objective"]


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


def _pixel_bounds(party, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:  # noqa: ANN001
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


def fed_augmix_objective(cfg, party, generator: torch.Generator) -> FedAugMixObjective:  # noqa: ANN001
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


@DEFENCES.register
class FedAugMix(Defence):
    """AugMix (Algorithm 2) on the raw images plus the JS consistency loss (eq. 6)."""

    name = "fed-augmix"
    label = "Fed-AugMix"
    needs_raw_inputs = True

    def local_update(self, cfg, party, model, *, lr, proximal_mu, generator, server_round, x, y, epochs,
                     batch_size, optimizer, own_rows) -> LocalUpdate:  # noqa: ANN001
        objective = fed_augmix_objective(cfg, party, generator)
        device = next(model.parameters()).device
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

    def summary(self, cfg, history) -> dict:  # noqa: ANN001
        shares = [r["js_large_weight_share"] for r in history if "js_large_weight_share" in r]
        return {
            "defence": self.name,
            "model_norm": self.model_norm,
            "augmix": {"severity": cfg.augmix_severity, "width": cfg.augmix_width, "depth": cfg.augmix_depth,
                       "alpha": cfg.augmix_alpha},
            "js_weight": cfg.js_weight,
            "loss_scaling": (
                {"large_weight": cfg.js_large_weight, "scale": cfg.js_scale,
                 "rule": "lambda = js-large-weight while L_c > js-scale * D_JS, else js-weight"}
                if cfg.loss_scaling else None
            ),
            "large_weight_share_per_round": shares,
            "formal_guarantee": "none: augmentation noise is not a differential-privacy mechanism",
        }

    def log_rows(self, summary) -> list[tuple[str, str]]:  # noqa: ANN001
        return [("defence", f"Fed-AugMix, severity {summary['augmix']['severity']:g}, lambda "
                 f"{summary['js_weight']:g}" + (", loss scaling" if summary.get("loss_scaling") else "")
                 + "; no formal guarantee")]
