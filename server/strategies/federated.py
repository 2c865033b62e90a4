"""FedProx / FedAvg through Flower's own strategies, with round selection on the parties'
validation loss as a small subclass, every reply screened (:mod:`server.strategies.screening`)
and the aggregation rule a run-config choice (:func:`federated_strategy`).

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
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from server.strategies.screening import ScreenedReplies
from server.update_check import UpdateCheck

__all__ = [
    "AGGREGATORS", "CanonicalReplyOrder", "OrderedFedAvg", "OrderedFedProx", "SelectedModel",
    "ValidationSelectingFedAvg", "ValidationSelectingFedProx", "aggregate_with_extremes", "aggregation_words",
    "federated_strategy",
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


AGGREGATORS: dict[str, type[FedAvg]] = {"mean": FedAvg, "median": FedMedian, "trimmed-mean": FedTrimmedAvg,
                                         "krum": Krum}
"""The run config's ``aggregation`` -> the Flower strategy whose ``aggregate_train`` combines
the accepted models."""


def aggregation_words(rule: str, *, trim_fraction: float, krum_malicious: int) -> str:
    r"""The aggregation rule in words and maths, for the summary.

    With accepted models :math:`w_1, \dots, w_n` (party order) and reported sizes :math:`n_k`:
    mean :math:`\sum_k n_k w_k / \sum_k n_k`; median the coordinate-wise median; trimmed-mean
    the coordinate-wise mean after dropping the :math:`\lfloor \beta n \rfloor` smallest and
    largest values; krum the single :math:`w_i` minimising
    :math:`\sum_{j \in N_i} \lVert w_i - w_j \rVert^2` over its :math:`\max(1, n - f - 2)`
    nearest others :math:`N_i`.
    """
    return {
        "mean": "size-weighted mean of the accepted models (FedAvg)",
        "median": "coordinate-wise median of the accepted models (sizes ignored)",
        "trimmed-mean": f"coordinate-wise mean after cutting floor({trim_fraction:g} n) models at each end "
                        "(sizes ignored)",
        "krum": f"the one accepted model closest to its n - {krum_malicious} - 2 nearest others (Krum, f = "
                f"{krum_malicious})",
    }[rule]


def federated_strategy(*, proximal: bool, aggregation: str, validating: bool, proximal_mu: float,
                       trim_fraction: float, krum_malicious: int, update_check: UpdateCheck, node_ids: list[int],
                       quorum: int, round_timeout: float, **flower_kwargs) -> FedAvg:  # noqa: ANN003
    """A Flower strategy for one FedProx / FedAvg run, composed from Flower's own classes.

    Bases, in order: :class:`ScreenedReplies` (every reply checked, party order, quorum), then
    :class:`ValidationSelection` with ``validating``, then Flower's ``FedProx`` when
    ``proximal`` (its server side only sends ``proximal-mu``; the term is the parties'), then
    the aggregator :data:`AGGREGATORS` names (``FedMedian``, ``FedTrimmedAvg``, ``Krum``;
    ``FedAvg``'s weighted mean otherwise). The aggregators' own parameters are their public
    attributes ``beta`` and ``num_malicious_nodes``, set after ``FedProx.__init__`` (which does
    not forward them).
    """
    aggregator = AGGREGATORS[aggregation]
    bases: list[type] = [ScreenedReplies]
    if validating:
        bases.append(ValidationSelection)
    if proximal:
        bases.append(FedProx)
    if aggregator is not FedAvg or not proximal:
        bases.append(aggregator)
    name = "+".join(b.__name__ for b in bases[1 + validating:])
    cls = type(name, tuple(bases), {"__doc__": f"{name} with every reply screened, in party order."})
    if proximal:
        flower_kwargs["proximal_mu"] = proximal_mu
    strategy = cls(update_check=update_check, node_ids=node_ids, quorum=quorum, round_timeout=round_timeout,
                   **flower_kwargs)
    if aggregator is FedTrimmedAvg:
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim-fraction {trim_fraction} is not in [0, 0.5)")
        strategy.beta = trim_fraction
    if aggregator is Krum:
        strategy.num_malicious_nodes = krum_malicious
    return strategy


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
