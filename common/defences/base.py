"""The client-side defence interface of the iterative strategies (FedProx / FedAvg).

A defence changes a party's local update: plain training, Fed-AugMix's consistency loss,
or DP-SGD on DP-Mix views. One class per module, registered in :data:`DEFENCES` under the
name of the run config's ``defence`` key. The class states how the party trains
(:meth:`Defence.local_update`), which classifier normalisation it needs
(:attr:`Defence.model_norm`), which per-party figures must be kept as extremes instead of
averaged (:attr:`Defence.extreme_metrics`), the run summary's ``defence`` block
(:meth:`Defence.summary`) and its lines in the log table (:meth:`Defence.log_rows`).

The same :meth:`Defence.local_update` serves the ClientApp's ``train`` and the
gradient-leakage audit, so the audited update is the update a run makes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from common.registry import Registry

if TYPE_CHECKING:
    from common.config import RunConfig
    from common.party import PartyData

__all__ = ["DEFENCES", "Defence", "LocalUpdate", "get_defence"]


@dataclass(frozen=True)
class LocalUpdate:
    """What a local update reports besides the new weights (held by the model).

    ``train_loss`` and ``metrics`` may be sent to the server; ``train_loss`` is ``None`` for
    a defence whose unprivatised loss must stay with the party (DP-Mix), kept in
    ``local_metrics`` with the other figures computed from private rows outside the
    guarantee (for logs and the audit, never for messages).
    """

    train_loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    local_metrics: dict[str, float] = field(default_factory=dict)


class Defence(ABC):
    """A client-side defence; subclasses set the class attributes and implement
    :meth:`local_update` and :meth:`summary`."""

    name: ClassVar[str]
    """The run config's ``defence`` value."""
    label: ClassVar[str]
    """How tables name the method."""
    plain: ClassVar[bool] = False
    """True only for plain local training (the paper's FedProx / FedAvg baseline)."""
    model_norm: ClassVar[Literal["batch", "layer"]] = "batch"
    """The classifier's normalisation (DP-SGD needs per-sample gradients: LayerNorm)."""
    needs_raw_inputs: ClassVar[bool] = False
    """Whether the defence augments raw images (refused on backbone features)."""
    extreme_metrics: ClassVar[tuple[str, ...]] = ()
    """Per-party figures the server keeps as max and min (a privacy guarantee is per party)
    instead of the size-weighted mean: ``<key>`` becomes ``<key>-max`` and ``<key>-min``."""

    def check_config(self, cfg: RunConfig) -> None:
        """Refuse settings this defence cannot run with: raise ``ValueError("key: why")``."""
        if self.needs_raw_inputs and cfg.uses_backbone:
            raise ValueError(
                f"defence: {self.name} augments raw images; with a frozen backbone the parties train on "
                "features, so use backbone = 'none'"
            )

    @abstractmethod
    def local_update(
        self,
        cfg: RunConfig,
        party: PartyData,
        model: nn.Module,
        *,
        lr: float,
        proximal_mu: float,
        generator: torch.Generator,
        server_round: int,
        x: torch.Tensor,
        y: torch.Tensor,
        epochs: int,
        batch_size: int,
        optimizer: Literal["adamw", "sgd"],
        own_rows: bool,
    ) -> LocalUpdate:
        """Train ``model`` in place on ``(x, y)``; ``own_rows`` says they are the party's whole
        training part (the run's own update, as opposed to the audit's small batch)."""

    def summary(self, cfg: RunConfig, history: Sequence[Mapping[str, Any]]) -> dict:
        """The run summary's ``defence`` block, from the per-round history."""
        return {"defence": self.name, "model_norm": self.model_norm}

    def log_rows(self, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(label, text)`` lines for the run's log table."""
        return []


DEFENCES: Registry[Defence] = Registry("defence")


def get_defence(name: str) -> Defence:
    """An instance of the defence a run config names (registered name or ``module:Class``)."""
    return DEFENCES.create(name)
