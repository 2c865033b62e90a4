"""FedProx / FedAvg through Flower's own strategies, with round selection on the parties'
validation loss as a small subclass.

:class:`ValidationSelection` is a mixin over any Flower strategy: ``configure_evaluate``
remembers the global model it sends for evaluation in that round, ``aggregate_evaluate``
receives the parties' validation losses of exactly that model and keeps it when its
size-weighted loss is the lowest so far. No state is shared through closures and nothing
depends on the order in which Flower calls the strategy and ``evaluate_fn``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

__all__ = [
    "CanonicalReplyOrder", "OrderedFedAvg", "OrderedFedProx", "SelectedModel", "ValidationSelectingFedAvg",
    "ValidationSelectingFedProx", "aggregate_with_extremes",
]

SELECTED_BY_VALIDATION = "round with the lowest size-weighted validation loss of the parties"
SELECTED_BY_LAST = "the last round (fixed budget; no selection)"


@dataclass(frozen=True)
class SelectedModel:
    """The global model of the round with the lowest size-weighted validation loss."""

    server_round: int
    val_loss: float
    arrays: ArrayRecord


IDENTITY_KEYS = ("partition-id",)
"""Metrics that say who answered; used to order replies, never averaged."""


def _party_order(reply: Message) -> tuple[int, int]:
    metrics = reply.content["metrics"] if reply.has_content() and "metrics" in reply.content else {}
    return int(metrics.get("partition-id", -1)), int(reply.metadata.src_node_id)


class CanonicalReplyOrder:
    """Mixin for a Flower strategy: aggregate replies in the order of the parties' partition
    ids, not of their arrival, so that the floating-point sums, and with them a rerun's
    numbers, do not depend on how the simulation scheduled the parties."""

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):  # noqa: ANN201
        return super().aggregate_train(server_round, sorted(replies, key=_party_order))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return super().aggregate_evaluate(server_round, sorted(replies, key=_party_order))


class ValidationSelection:
    """Mixin for a Flower strategy: keep the round whose global model the parties' clean
    validation parts rate best (``val-loss``, weighted by ``num-examples``)."""

    selected: SelectedModel | None
    _evaluated: dict[int, ArrayRecord]

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.selected = None
        self._evaluated = {}

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        self._evaluated[server_round] = arrays
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        metrics = super().aggregate_evaluate(server_round, replies)
        arrays = self._evaluated.pop(server_round, None)
        if metrics is not None and "val-loss" in metrics and arrays is not None:
            loss = float(metrics["val-loss"])
            best = math.inf if self.selected is None else self.selected.val_loss
            if loss < best:
                self.selected = SelectedModel(server_round=server_round, val_loss=loss, arrays=arrays)
        return metrics


class OrderedFedAvg(CanonicalReplyOrder, FedAvg):
    """Flower's FedAvg, replies aggregated in party order."""


class OrderedFedProx(CanonicalReplyOrder, FedProx):
    """Flower's FedProx (the proximal term is the client's), replies aggregated in party order."""


class ValidationSelectingFedAvg(ValidationSelection, OrderedFedAvg):
    """:class:`OrderedFedAvg` with :class:`ValidationSelection`."""


class ValidationSelectingFedProx(ValidationSelection, OrderedFedProx):
    """:class:`OrderedFedProx` with :class:`ValidationSelection`."""


def aggregate_with_extremes(replies: list[RecordDict], weighted_by_key: str, *,
                            extremes: Sequence[str] = ()) -> MetricRecord:
    """Flower's size-weighted mean, except the ``extremes`` keys: a per-party guarantee (a
    DP-Mix party's ``dp-epsilon``) is kept as ``<key>-max`` and ``<key>-min``, never averaged."""
    aggregated = aggregate_metricrecords(replies, weighted_by_key)
    for key in IDENTITY_KEYS:
        aggregated.pop(key, None)
    for key in extremes:
        values = [float(record[key]) for reply in replies for record in reply.metric_records.values()
                  if key in record]
        if values:
            aggregated.pop(key, None)
            aggregated[f"{key}-max"] = max(values)
            aggregated[f"{key}-min"] = min(values)
    return aggregated
