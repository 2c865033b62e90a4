"""Training loops shared by the one-shot server and the FedProx/FedAvg clients.

Recipe of the paper's appendix E: soft-label cross-entropy (equation 8), AdamW with
learning rate 1e-3 and weight decay 1e-4, batch size 128, cosine learning-rate schedule.
Model selection uses a validation split held out from the *training* data; the test set
never chooses anything.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

__all__ = [
    "CentralTrainer",
    "EpochRecord",
    "LocalObjective",
    "TrainingResult",
    "cosine_lr",
    "evaluate",
    "local_optimizer",
    "proximal_term",
    "soft_cross_entropy",
    "train_centralized",
    "train_local",
]

LocalObjective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``objective(model, xb, yb) -> loss``: a client's batch loss in place of the soft cross-entropy."""


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-(1/N) sum_i sum_j y_ij log softmax(o_i)_j`` (equation 8); ``target`` may be
    soft labels ``(N, C)`` or class indices ``(N,)``."""
    if target.ndim == 1:
        return nn.functional.cross_entropy(logits, target)
    return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine annealing from ``base_lr`` at step 0 towards 0 at ``total_steps``."""
    if total_steps <= 0:
        return base_lr
    return 0.5 * base_lr * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))


def proximal_term(model: nn.Module, global_params: Sequence[torch.Tensor]) -> torch.Tensor:
    """FedProx's ``(1/2) sum_k ||w_k - w_k^global||_2^2`` over trainable parameters.

    Squared norms, as in Li et al. (2020); the loss adds ``mu`` times this value.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if len(params) != len(global_params):
        raise ValueError(f"{len(params)} parameters but {len(global_params)} global tensors")
    total = torch.zeros((), device=params[0].device)
    for local, glob in zip(params, global_params, strict=True):
        total = total + (local - glob.detach()).pow(2).sum()
    return 0.5 * total


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024
) -> tuple[float, float]:
    """Return ``(mean soft cross-entropy, accuracy)``; accuracy compares the arg-max of the
    logits with the class index, or with the arg-max of soft labels."""
    model.eval()
    n = x.shape[0]
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True).float()
        yb = y[start : start + batch_size].to(device, non_blocking=True)
        logits = model(xb)
        loss_sum += float(soft_cross_entropy(logits, yb)) * xb.shape[0]
        hard = yb if yb.ndim == 1 else yb.argmax(dim=1)
        correct += int((logits.argmax(dim=1) == hard).sum())
    return loss_sum / n, correct / n


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float


@dataclass
class TrainingResult:
    """History of a centralised training run and the epoch chosen on validation."""

    best_epoch: int
    best_val_loss: float
    history: list[EpochRecord] = field(default_factory=list)
    last_state: dict | None = None  # weights after the final epoch, for reporting beside the selected ones


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    # A last batch of one sample cannot go through BatchNorm in training mode: drop it.
    return [b for b in order.split(batch_size) if b.numel() > 1]


def _step(model, optimizer, xb, yb, extra_loss=None, objective: LocalObjective | None = None) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = soft_cross_entropy(model(xb), yb) if objective is None else objective(model, xb, yb)
    if extra_loss is not None:
        loss = loss + extra_loss()
    loss.backward()
    optimizer.step()
    return loss.item()


class CentralTrainer:
    """Central training one epoch at a time (appendix E's recipe): AdamW, and a cosine
    learning rate that steps once per mini-batch over ``epochs x steps_per_epoch`` steps.

    The caller owns the loop over epochs (and what happens between them: collecting fresh
    releases, validating, keeping a checkpoint); this class owns the optimiser state.

    Parameters
    ----------
    model : nn.Module
        Trained in place.
    rows : int
        Rows of the first epoch's data; fixes the steps per epoch of the schedule (a later
        epoch with fewer rows, a party having dropped out, keeps the schedule's length).
    epochs : int
        Epochs the schedule spans.
    generator : torch.Generator
        CPU generator of the batch order.
    """

    def __init__(self, model: nn.Module, *, rows: int, epochs: int, generator: torch.Generator,
                 batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.model = model
        self.device = next(model.parameters()).device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.generator = generator
        self.batch_size = batch_size
        self.base_lr = lr
        steps_per_epoch = max(1, len(_batches(rows, batch_size, torch.Generator().manual_seed(0))))
        self.total_steps = epochs * steps_per_epoch
        self.step = 0

    @property
    def lr(self) -> float:
        """The learning rate the next step would use."""
        return cosine_lr(self.base_lr, self.step, self.total_steps)

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, row_order: torch.Tensor | None = None) -> float:
        """One pass over ``(x, y)`` in random batches; returns the mean batch loss.

        ``row_order`` (a permutation of ``range(n)``) makes the batches ``row_order[randperm(n)]``,
        so that they do not depend on the order in which the rows were stored (a union filled
        in reply-arrival order, say).
        """
        self.model.train()
        losses = []
        for idx in _batches(x.shape[0], self.batch_size, self.generator):
            if row_order is not None:
                idx = row_order[idx]
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
            xb = x[idx].to(self.device, non_blocking=True).float()
            yb = y[idx].to(self.device, non_blocking=True)
            losses.append(_step(self.model, self.optimizer, xb, yb))
            self.step += 1
        return sum(losses) / max(len(losses), 1)


def train_centralized(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    epochs: int,
    generator: torch.Generator,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    row_order: torch.Tensor | None = None,
) -> TrainingResult:
    """Train ``model`` on ``(x, y)`` for ``epochs`` epochs (:class:`CentralTrainer`) and keep
    the weights of the epoch with the lowest loss on ``(val_x, val_y)``; on return the model
    holds them. ``generator`` (CPU) drives the batch order; ``row_order`` as in
    :meth:`CentralTrainer.train_epoch`.
    """
    trainer = CentralTrainer(model, rows=x.shape[0], epochs=epochs, generator=generator, batch_size=batch_size,
                             lr=lr, weight_decay=weight_decay)
    best_state, best_loss, best_epoch = None, math.inf, 0
    history: list[EpochRecord] = []
    for epoch in range(1, epochs + 1):
        train_loss = trainer.train_epoch(x, y, row_order)
        val_loss, val_acc = evaluate(model, val_x, val_y)
        record = EpochRecord(epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_accuracy=val_acc,
                             lr=trainer.lr)
        history.append(record)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(record)
    last_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainingResult(best_epoch=best_epoch, best_val_loss=best_loss, history=history, last_state=last_state)


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    generator: torch.Generator,
    proximal_mu: float = 0.0,
    batch_size: int = 128,
    weight_decay: float = 1e-4,
    objective: LocalObjective | None = None,
    optimizer: Literal["adamw", "sgd"] = "adamw",
) -> float:
    """A client's local update for FedProx (``proximal_mu > 0``) or FedAvg (``0``).

    Minimises ``L(w) + mu * proximal_term(w, w_global)`` at a constant ``lr`` (the round's
    value of the server-side cosine schedule), ``w_global`` being the weights the model
    holds on entry. ``L`` is the soft cross-entropy of a batch, or ``objective(model, xb, yb)``
    (Fed-AugMix's consistency loss, say). ``optimizer`` is a fresh AdamW (the platform's
    runs), or plain SGD ``w <- w - lr * grad`` (Algorithm 1 of Fed-AugMix; the gradient-leakage
    audit). Returns the mean training loss.
    """
    device = next(model.parameters()).device
    global_params = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    opt = local_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
    extra = (lambda: proximal_mu * proximal_term(model, global_params)) if proximal_mu > 0 else None
    model.train()
    losses = []
    for _ in range(epochs):
        for idx in _batches(x.shape[0], batch_size, generator):
            xb = x[idx].to(device).float()
            yb = y[idx].to(device)
            losses.append(_step(model, opt, xb, yb, extra, objective))
    return sum(losses) / max(len(losses), 1)


def local_optimizer(
    model: nn.Module, kind: Literal["adamw", "sgd"], *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """A fresh local optimiser: AdamW (decoupled weight decay), or plain SGD with the weight
    decay as an L2 term, ``weight_decay * w`` added to the gradient."""
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {kind!r}")
