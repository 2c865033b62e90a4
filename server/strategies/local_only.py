"""No collaboration: every party trains the classifier alone, the server only measures.

The lower reference point of a collaboration study. One ``train`` message per party asks it
to train the run's classifier on its own training rows with the central recipe (the same
epochs, schedule and batch size the one-shot server uses on the union); the server evaluates
every returned model on its test set. Nothing about the data leaves a party except its model,
which (as in FedProx) every party would receive anyway.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from server.metered_grid import MeteredGrid

__all__ = ["LocalOnly", "LocalOnlyResult"]

log = logging.getLogger("flwr.mixupfl.local-only")  # child of flwr: shown in run logs


@dataclass
class LocalOnlyResult:
    """Each party's own model's test figures, by partition id."""

    per_party: dict[int, dict[str, float]] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean_accuracy(self) -> float:
        return statistics.fmean(m["test-accuracy"] for m in self.per_party.values())

    @property
    def worst_accuracy(self) -> float:
        return min(m["test-accuracy"] for m in self.per_party.values())


class LocalOnly:
    """Each party alone: ``start(grid=...)`` sends one ``train`` message per party with the
    initial model and evaluates every model that comes back with ``evaluate_fn``."""

    def __init__(self, *, epochs: int) -> None:
        self.epochs = epochs

    def start(self, *, grid: MeteredGrid, node_ids: list[int], initial_arrays: ArrayRecord, timeout: float,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord]) -> LocalOnlyResult:
        started = time.perf_counter()
        config = ConfigRecord({"server-round": 1, "local-only": True, "epochs": self.epochs})
        messages = [Message(RecordDict({"arrays": initial_arrays, "config": config}), dst_node_id=nid,
                            message_type=MessageType.TRAIN) for nid in node_ids]
        result = LocalOnlyResult()
        for reply in grid.iter_replies(messages, timeout=timeout):
            if reply.has_error():
                result.failures.append({"node-id": reply.metadata.src_node_id, "error": reply.error.reason})
                continue
            pid = int(reply.content["metrics"]["partition-id"])
            metrics = evaluate_fn(pid, reply.content["arrays"])
            result.per_party[pid] = {k: float(v) for k, v in metrics.items()}
            log.info("party %d alone: test accuracy %.2f %%", pid, 100 * result.per_party[pid]["test-accuracy"])
        if not result.per_party:
            raise RuntimeError(f"no party returned a model: {result.failures}")
        result.seconds = time.perf_counter() - started
        return result
