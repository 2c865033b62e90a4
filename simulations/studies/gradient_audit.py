"""Gradient-leakage audit of an iterative run: Inverting Gradients against one client update.

The threat model is the Fed-AugMix paper's (section V-B): an honest-but-curious server sees a
party's model update, knows the true labels of the attacked batch, and the batch is small
(4 samples) and trained for 5 local epochs, so the update is as revealing as training allows.
The audit re-makes that update with the run's own defence code (:func:`common.defences.local_update`,
the function the ClientApp calls), from a global model the run actually sent:

* ``"initial"``: the model of round 1 (UNTRAINED in the paper);
* ``"selected"``: the run's selected global model (CONVERGENT in the paper).

What the audit fixes, so that defences are compared on one protocol:

* the party trains on 4 of its training rows (distinct labels where it has them), one batch
  per local epoch, ``local_steps`` epochs of plain SGD ``w <- w - lr * grad`` (Algorithm 1 of
  Fed-AugMix; the runs themselves use AdamW, whose sign-like steps would blunt this attack);
* dropout is off in the audited update: the attacker cannot know the masks, and with them
  unknown the attack only gets weaker, so this is the worst case for the party;
* the attacker (:class:`attacks.gradient_inversion.InvertingGradientsAttack`) knows the labels,
  the architecture, the global model, the number of steps, the learning rate, the proximal mu
  and the weight decay; it simulates *plain* cross-entropy training, because the defences'
  randomness (AugMix draws, DP noise, DP-Mix views) is the client's secret.

Only the observed update (global and returned weights, reported size) and the knowledge
object reach the attack; the private batch is used afterwards to score the reconstruction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.gradient_inversion import (
    InvertingGradientsAttack,
    grant_gradient_knowledge,
    observe_update,
    reconstruction_scores,
)
from client.party import PartyData, load_party
from common.defences import local_update
from common.seeds import Stream, derive_seed
from common.config import RunConfig
from common.model import MixupClassifier

__all__ = ["AUDIT_STAGES", "AuditProtocol", "audit_party", "audit_target_batch", "load_global_models"]

AUDIT_STAGES = ("initial", "selected")


@dataclass(frozen=True)
class AuditProtocol:
    """The fixed protocol of the audit (Fed-AugMix section V-B, CPU-sized by default)."""

    batch_size: int = 4
    local_steps: int = 5
    local_lr: float = 0.1
    iterations: int = 1000
    attack_lr: float = 0.1
    tv_weight: float = 1e-6
    restarts: int = 1

    def describe(self) -> str:
        return (f"batch of {self.batch_size} with known labels, {self.local_steps} local SGD steps at lr "
                f"{self.local_lr:g} (dropout off), Inverting Gradients: cosine loss + TV {self.tv_weight:g}, Adam lr "
                f"{self.attack_lr:g}, {self.iterations} iterations, {self.restarts} restart(s)")


def load_global_models(weights_path: Path) -> dict[str, Any]:
    """The ``<run>.weights.pt`` a FedProx/FedAvg run writes beside its summary."""
    if not Path(weights_path).exists():
        raise FileNotFoundError(
            f"{weights_path} does not exist: the audit needs the global models the run saved (runs made before the "
            "audit existed did not save them; run them again)"
        )
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def audit_target_batch(party: PartyData, *, size: int, seed: int) -> np.ndarray:
    """Rows of the party's training part to attack: ``size`` rows, distinct labels first."""
    rng = np.random.default_rng(derive_seed(seed, party.partition_id, Stream.AUDIT))
    labels = party.train_y.numpy()
    order = rng.permutation(labels.size)
    chosen: list[int] = []
    seen: set[int] = set()
    for row in order:  # one row per class first, then fill up
        if int(labels[row]) not in seen:
            chosen.append(int(row))
            seen.add(int(labels[row]))
        if len(chosen) == size:
            break
    for row in order:
        if len(chosen) == size:
            break
        if int(row) not in chosen:
            chosen.append(int(row))
    if len(chosen) < size:
        raise ValueError(f"party {party.partition_id} has {labels.size} training rows, fewer than the batch {size}")
    return np.array(chosen)


def _audit_model(cfg: RunConfig, party: PartyData) -> MixupClassifier:
    return MixupClassifier(in_dim=int(party.train_x[0].numel()), num_classes=party.num_classes, dropout=0.0,
                           norm=cfg.model_norm)


def audit_party(
    cfg: RunConfig,
    *,
    party_id: int,
    num_parties: int,
    global_state: dict[str, torch.Tensor],
    protocol: AuditProtocol,
    attack_seed: int = 0,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Make one audited update of party ``party_id`` and attack it.

    Returns the scores (MSE, PSNR, SSIM; by index and best-matched) with the attack's
    figures, and the images (original batch and reconstruction, ``(B, C, H, W)``).
    """
    if cfg.strategy == "one-shot-mixup":
        raise ValueError("the gradient audit attacks iterative runs; one-shot releases have their own attacks")
    party = load_party(cfg, party_id, num_parties)
    if party.image_shape is None or party.input_bounds is None or torch.is_tensor(party.input_bounds[0]):
        raise ValueError("the gradient audit needs raw inputs with a scalar valid range (digits, or backbone 'none')")
    rows = audit_target_batch(party, size=protocol.batch_size, seed=cfg.seed)
    x = party.train_x[rows].float()
    y = party.train_y[rows]
    mu = cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0
    model = _audit_model(cfg, party)
    model.load_state_dict(global_state)
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, party_id, Stream.AUDIT, 1))
    started = time.perf_counter()
    update = local_update(
        cfg, party, model, lr=protocol.local_lr, proximal_mu=mu, generator=generator, server_round=1,
        x=x, y=y, epochs=protocol.local_steps, batch_size=protocol.batch_size, optimizer="sgd",
    )
    observed = observe_update(global_state=global_state, client_state=model.state_dict(), num_examples=int(x.shape[0]))
    lo, hi = (float(v) for v in party.input_bounds)
    knowledge = grant_gradient_knowledge(
        labels=y.clone(),
        sample_shape=party.image_shape,
        model_factory=lambda: _audit_model(cfg, party),
        local_steps=protocol.local_steps,
        local_lr=protocol.local_lr,
        proximal_mu=mu,
        weight_decay=cfg.weight_decay,
        valid_range=(lo, hi),
        input_is_flat=True,
        description="Fed-AugMix threat model: the update, the labels, the architecture and the local schedule",
    )
    attack = InvertingGradientsAttack(
        iterations=protocol.iterations, lr=protocol.attack_lr, tv_weight=protocol.tv_weight,
        restarts=protocol.restarts, seed=attack_seed,
    )
    reconstruction = attack.reconstruct(observed, knowledge)
    seconds = time.perf_counter() - started
    originals = x.reshape(x.shape[0], *party.image_shape)
    estimate = reconstruction.x.reshape(originals.shape)
    scores = reconstruction_scores(originals, estimate, data_range=hi - lo)
    # What an attacker without the update would guess: the mean image of the party's other rows.
    others = np.setdiff1d(np.arange(party.train_x.shape[0]), rows)
    prior = party.train_x[others].float().mean(dim=0, keepdim=True).expand_as(x).reshape(originals.shape)
    prior_scores = reconstruction_scores(originals, prior, data_range=hi - lo)
    record = {
        "party": party_id,
        "rows": [int(r) for r in rows],
        "labels": [int(v) for v in y],
        **scores,
        "prior_psnr": prior_scores["psnr"],
        "prior_ssim": prior_scores["ssim"],
        "prior_mse": prior_scores["mse"],
        "prior_psnr_centred": prior_scores["psnr_centred"],
        "final_cosine": float(reconstruction.details.get("final_cosine", float("nan"))),
        "update_metrics": {**update.metrics, **update.local_metrics},
        "seconds": seconds,
    }
    return record, {"original": originals, "reconstruction": estimate}
