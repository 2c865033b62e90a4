"""Iterative baselines: FedProx / FedAvg through Flower's strategies, every party every round."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from common.config import RunConfig
from common.model import MixupClassifier
from server.strategies import (
    OrderedFedAvg,
    OrderedFedProx,
    SelectedModel,
    ValidationSelectingFedAvg,
    ValidationSelectingFedProx,
    aggregate_with_extremes,
)

__all__ = ["IterativeOutcome", "run_iterative"]


@dataclass
class IterativeOutcome:
    """Per-round history, the selected round's model, the round-1 model, and the time taken."""

    history: list[dict]
    selected: SelectedModel | None
    initial_state: dict[str, torch.Tensor]
    seconds: float


def run_iterative(
    grid: Grid,
    cfg: RunConfig,
    node_ids: list[int],
    *,
    in_dim: int,
    num_classes: int,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
) -> IterativeOutcome:
    """Run ``cfg.num_rounds`` rounds of FedProx/FedAvg over all ``node_ids``.

    Every round: all parties train ``local-epochs`` from the global model under the run's
    defence, the server averages the models weighted by local training-set size (replies in
    party order), and ``evaluate_fn`` (the server's test set) reports on it. With
    ``selection = "validation"`` all parties also evaluate the new global model on their clean
    validation part and the reported model is the round with the lowest size-weighted
    validation loss; with ``"last"`` no evaluate message is sent and the last round's model is
    reported. Per-party figures the defence marks as extremes (a DP-Mix party's
    ``dp-epsilon``) are kept as max and min. Each history row carries ``end_seconds``: when
    that round's global model was ready (seconds since the strategy started), so that a
    round's marginal cost can be read without the start-up.
    """
    torch.manual_seed(cfg.seed)
    model = MixupClassifier(in_dim=in_dim, num_classes=num_classes, norm=cfg.model_norm)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    num = len(node_ids)
    validating = cfg.selection == "validation"
    common = dict(
        fraction_train=1.0, fraction_evaluate=1.0 if validating else 0.0,
        min_train_nodes=num, min_evaluate_nodes=num, min_available_nodes=num,
        weighted_by_key="num-examples",
        train_metrics_aggr_fn=partial(aggregate_with_extremes, extremes=cfg.defence_spec.extreme_metrics),
    )
    if cfg.strategy == "fedprox":
        cls = ValidationSelectingFedProx if validating else OrderedFedProx
        strategy = cls(proximal_mu=cfg.proximal_mu, **common)
    else:
        strategy = (ValidationSelectingFedAvg if validating else OrderedFedAvg)(**common)
    ends: dict[int, float] = {}

    def timed_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        ends[server_round] = time.perf_counter() - started  # Flower calls it once a round's model is ready
        return evaluate_fn(server_round, arrays)

    started = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=cfg.num_rounds,
                            timeout=cfg.round_timeout, evaluate_fn=timed_evaluate)
    seconds = time.perf_counter() - started
    history = []
    for rnd in range(1, cfg.num_rounds + 1):
        row: dict = {"round": rnd}
        for source in (result.train_metrics_clientapp, result.evaluate_metrics_clientapp,
                       result.evaluate_metrics_serverapp):
            if rnd in source:
                row.update({k.replace("-", "_"): float(v) for k, v in source[rnd].items()})
        if rnd in ends:
            row["end_seconds"] = ends[rnd]
        history.append(row)
    selected = (strategy.selected if validating
                else SelectedModel(server_round=cfg.num_rounds, val_loss=float("nan"), arrays=result.arrays))
    return IterativeOutcome(history=history, selected=selected, initial_state=initial_state, seconds=seconds)
