"""The ServerApp's strategies: one-shot collaboration, and FedProx / FedAvg with round
selection on the parties' validation loss."""

from server.strategies.federated import (
    SELECTED_BY_LAST,
    SELECTED_BY_VALIDATION,
    OrderedFedAvg,
    OrderedFedProx,
    SelectedModel,
    ValidationSelectingFedAvg,
    ValidationSelectingFedProx,
    aggregate_with_extremes,
)
from server.strategies.one_shot import SELECTED_BY, SELECTED_BY_MIXED_VALIDATION, OneShot, OneShotFailed, OneShotResult

__all__ = [
    "SELECTED_BY",
    "SELECTED_BY_LAST",
    "SELECTED_BY_MIXED_VALIDATION",
    "OrderedFedAvg",
    "OrderedFedProx",
    "SELECTED_BY_VALIDATION",
    "OneShot",
    "OneShotFailed",
    "OneShotResult",
    "SelectedModel",
    "ValidationSelectingFedAvg",
    "ValidationSelectingFedProx",
    "aggregate_with_extremes",
]
