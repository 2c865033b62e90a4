"""Checks on every FedProx / FedAvg reply before it reaches the aggregation.

A deployed server receives whatever a SuperNode sends. A training reply enters a round's
aggregation only if

* it holds exactly one ArrayRecord (``arrays``) and one MetricRecord (``metrics``);
* its arrays have exactly the global model's names, and each the global model's shape and
  dtype, with every value finite;
* its ``num-examples`` is an integer ``n`` with ``1 <= n <= N_max`` (:attr:`UpdateCheck.max_examples`);
* its ``partition-id`` is an integer in ``[0, P)``; its other figures are numbers in their
  ranges (a loss finite and ``>= 0``, an accuracy in ``[0, 1]``), never NaN, and never a
  field the server fills itself.

An evaluation reply (the parties' validation loss of the global model, used to select a
round) passes the same metric checks; its ``val-loss`` must be finite and ``>= 0`` (a
cross-entropy never is negative, so ``-1e6`` can only be a lie that would steer the
selection).

No Flower strategy logic lives here: :class:`UpdateCheck` judges one reply's content and
raises :class:`UpdateRejected` with a one-line reason; the strategies
(:mod:`server.strategies.screening`) drop the reply from that round and list it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, RecordDict

from server.validation import SERVER_FIELDS

__all__ = ["ArrayLayout", "UpdateCheck", "UpdateRejected", "agreeing_key_set", "layout_of"]

ArrayLayout = dict[str, tuple[tuple[int, ...], str]]
"""Array name -> (shape, dtype name) of a model's ArrayRecord."""

METRIC_RANGES: dict[str, tuple[float, float]] = {
    "train-loss": (0.0, math.inf), "val-loss": (0.0, math.inf), "val-accuracy": (0.0, 1.0),
    "dp-epsilon": (0.0, math.inf), "dp-steps": (0.0, math.inf), "dp-sample-rate": (0.0, 1.0),
}
"""Ranges of the figures a party's training or evaluation reply may carry (inclusive)."""

INFINITE_ALLOWED = frozenset({"dp-epsilon"})
"""Figures that may be ``+inf`` (DP-SGD without noise has no finite epsilon)."""


class UpdateRejected(ValueError):
    """A reply that must not enter the aggregation; the message says why (one line)."""


def layout_of(arrays: ArrayRecord) -> ArrayLayout:
    """Names, shapes and dtypes of ``arrays`` (the global model the server sent)."""
    return {key: (tuple(int(d) for d in array.shape), str(array.dtype)) for key, array in arrays.items()}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: object) -> int | None:
    """``value`` as an int when it is one (an integral float too), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@dataclass(frozen=True)
class UpdateCheck:
    """What a valid reply of this run looks like.

    Parameters
    ----------
    max_examples : int
        ``N_max``, the largest ``num-examples`` a party can truthfully report: the number of
        rows of the run's training split. It is public (the data set's size and the run's
        ``test-fraction``), and no party holds more than the whole training split, so
        ``1 <= n_k <= N_max`` for every party ``k``; a validation count is smaller still.
        A party can still overstate its size inside the bound (up to ``N_max / n_k`` times
        its weight in the size-weighted mean): that is what a robust ``aggregation`` is for.
    num_partitions : int
        ``P``: valid partition ids are ``0 .. P - 1``.
    """

    max_examples: int
    num_partitions: int

    def check_train(self, content: RecordDict, layout: ArrayLayout) -> int:
        """Validate one training reply against the global model's ``layout``; return the
        party's partition id, or raise :class:`UpdateRejected`. ``content`` is only read."""
        if len(content.array_records) != 1 or "arrays" not in content.array_records:
            raise UpdateRejected(f"expected one ArrayRecord 'arrays', got {sorted(content.array_records)}")
        pid = self.check_metrics(content, count_key="num-examples")
        self.check_arrays(content.array_records["arrays"], layout)
        return pid

    def check_evaluate(self, content: RecordDict) -> int:
        """Validate one evaluation reply; its ``val-loss`` must be finite and ``>= 0``."""
        if content.array_records:
            raise UpdateRejected("an evaluation reply carries no arrays")
        pid = self.check_metrics(content, count_key="num-examples")
        metrics = content.metric_records["metrics"]
        if "val-loss" not in metrics:
            raise UpdateRejected("metrics carry no val-loss")
        return pid

    def check_metrics(self, content: RecordDict, *, count_key: str) -> int:
        """The MetricRecord of a reply: its count, partition id and figures. Returns the
        partition id."""
        if len(content.metric_records) != 1 or "metrics" not in content.metric_records:
            raise UpdateRejected(f"expected one MetricRecord 'metrics', got {sorted(content.metric_records)}")
        metrics = content.metric_records["metrics"]
        reserved = sorted(set(metrics) & SERVER_FIELDS)
        if reserved:
            raise UpdateRejected(f"metrics may not set the server's own fields: {', '.join(reserved)}")
        count = _integer(metrics.get(count_key))
        if count is None:
            raise UpdateRejected(f"{count_key} = {metrics.get(count_key)!r} is not an integer")
        if not 1 <= count <= self.max_examples:
            raise UpdateRejected(f"{count_key} = {count} is not in [1, {self.max_examples}] (the training split's "
                                 "rows: no party holds more)")
        pid = _integer(metrics.get("partition-id"))
        if pid is None or not 0 <= pid < self.num_partitions:
            raise UpdateRejected(f"partition-id {metrics.get('partition-id')!r} is not in [0, {self.num_partitions})")
        for key, value in metrics.items():
            if key in (count_key, "partition-id"):
                continue
            if not _is_number(value) or math.isnan(float(value)):
                raise UpdateRejected(f"metric {key} = {value!r} is not a number")
            value = float(value)
            if math.isinf(value) and not (value > 0 and key in INFINITE_ALLOWED):
                raise UpdateRejected(f"metric {key} = {value} is not finite")
            low, high = METRIC_RANGES.get(key, (-math.inf, math.inf))
            if not low <= value <= high:
                raise UpdateRejected(f"metric {key} = {value:g} is outside [{low:g}, {high:g}]")
        return pid

    @staticmethod
    def check_arrays(arrays: ArrayRecord, layout: ArrayLayout) -> None:
        """Exactly the names of ``layout``, each with its shape and dtype, every value finite."""
        names = set(arrays.keys())
        missing, unexpected = sorted(set(layout) - names), sorted(names - set(layout))
        if missing or unexpected:
            raise UpdateRejected(f"arrays do not match the global model: missing {missing}, unexpected {unexpected}")
        for key, (shape, dtype) in layout.items():
            array = arrays[key]
            if str(array.dtype) != dtype:
                raise UpdateRejected(f"{key} has dtype {array.dtype}, the global model's is {dtype}")
            if tuple(array.shape) != shape:
                raise UpdateRejected(f"{key} has shape {tuple(array.shape)}, the global model's is {shape}")
            try:
                values = array.numpy()
            except Exception as err:  # noqa: BLE001 - bytes that do not decode are a rejection, not a crash
                raise UpdateRejected(f"{key} cannot be read: {err}") from None
            if values.shape != shape or str(values.dtype) != dtype:
                raise UpdateRejected(f"{key} decodes to {values.dtype}{values.shape}, not {dtype}{shape}")
            if np.issubdtype(values.dtype, np.inexact) and not np.isfinite(values).all():
                raise UpdateRejected(f"{key} holds NaN or inf")


def agreeing_key_set(key_sets: Iterable[frozenset[str]]) -> frozenset[str] | None:
    """The metric key set most replies share (ties: the first seen; ``None`` for no replies).

    Honest parties run one ClientApp under one run config, so they report the same figures;
    Flower's aggregation needs every reply to carry the same keys, and a reply with others
    is rejected rather than allowed to stop the round.
    """
    counts = Counter(key_sets)
    if not counts:
        return None
    best = max(counts.values())
    return next(keys for keys in counts if counts[keys] == best)

