"""Iterative baselines: FedProx / FedAvg through Flower's strategies, every connected party
every round, each reply screened, the aggregation rule the run config's."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from common.config import RunConfig
from common.model import MixupClassifier
from common.run_summary import AggregationSummary, RoundParticipation
from server.strategies import SelectedModel, aggregate_with_extremes
from server.strategies.federated import aggregation_words, federated_strategy
from server.strategies.screening import QuorumLost
from server.update_check import UpdateCheck

__all__ = ["IterativeOutcome", "QuorumLost", "progress_rounds", "quiet_flower_rounds", "run_iterative"]

log = logging.getLogger("flwr.mixupfl.server")  # child of flwr: shown in run logs


def progress_rounds(num_rounds: int) -> set[int]:
    """The rounds that get a progress line: about one per 10 % of the rounds, and the last."""
    step = max(1, math.ceil(num_rounds / 10))
    return {r for r in range(step, num_rounds + 1, step)} | {num_rounds}


@contextmanager
def quiet_flower_rounds() -> Iterator[None]:
    """Hide Flower's per-round INFO lines (about seven a round, and the whole history at the
    end) while a strategy runs; warnings and errors still show, and so do this app's own INFO
    lines (its logger's level is set explicitly). The history is in the run summary."""
    flower, ours = logging.getLogger("flwr"), log
    before = (flower.level, ours.level)
    flower.setLevel(logging.WARNING)
    ours.setLevel(logging.INFO)
    try:
        yield
    finally:
        flower.setLevel(before[0])
        ours.setLevel(before[1])


@dataclass
class IterativeOutcome:
    """Per-round history, the selected round's model, the round-1 model, the time taken, who
    contributed to each round, and how the models were combined."""

    history: list[dict]
    selected: SelectedModel | None
    initial_state: dict[str, torch.Tensor]
    seconds: float
    rounds: list[RoundParticipation]
    aggregation: AggregationSummary


def run_iterative(
    grid: Grid,
    cfg: RunConfig,
    node_ids: list[int],
    *,
    in_dim: int,
    num_classes: int,
    max_examples: int,
    num_partitions: int,
    evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
) -> IterativeOutcome:
    """Run ``cfg.num_rounds`` rounds of FedProx/FedAvg over ``node_ids``.

    Every round: the parties still connected train ``local-epochs`` from the global model
    under the run's defence; each reply is checked (:mod:`server.update_check`: the global
    model's arrays, finite, ``1 <= num-examples <= max_examples``, a partition id below
    ``num_partitions``) and a bad one is left out of that round and listed; the server combines
    the accepted models in party order by the run's ``aggregation`` (the size-weighted mean,
    or Flower's FedMedian, FedTrimmedAvg or Krum), and ``evaluate_fn`` (the server's test set)
    reports on it. A round with fewer than ``quorum`` accepted replies (within
    ``round-timeout``) stops the run with :class:`QuorumLost`, which carries the participation
    so far; its ``completed_rounds`` and ``history`` say what was done. With
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
    validating = cfg.selection == "validation"
    if cfg.aggregation == "krum" and len(node_ids) <= 2 * cfg.krum_malicious + 2:
        raise ValueError(f"krum-malicious: Krum needs more than 2 f + 2 = {2 * cfg.krum_malicious + 2} parties; "
                         f"{len(node_ids)} are connected")
    # Flower's sampling waits (forever) until min_available_nodes are connected: at the quorum,
    # and the strategy refuses a round below it before Flower would wait.
    strategy = federated_strategy(
        proximal=cfg.strategy == "fedprox", aggregation=cfg.aggregation, validating=validating,
        proximal_mu=cfg.proximal_mu, trim_fraction=cfg.trim_fraction, krum_malicious=cfg.krum_malicious,
        update_check=UpdateCheck(max_examples=max_examples, num_partitions=num_partitions), node_ids=node_ids,
        quorum=cfg.quorum, round_timeout=cfg.round_timeout,
        fraction_train=1.0, fraction_evaluate=1.0 if validating else 0.0,
        min_train_nodes=cfg.quorum, min_evaluate_nodes=cfg.quorum, min_available_nodes=cfg.quorum,
        weighted_by_key="num-examples",
        train_metrics_aggr_fn=partial(aggregate_with_extremes, extremes=cfg.defence_spec.extreme_metrics),
    )
    aggregation = AggregationSummary(
        rule=cfg.aggregation, flower_strategy=type(strategy).__name__, max_examples=max_examples,
        description=aggregation_words(cfg.aggregation, trim_fraction=cfg.trim_fraction,
                                      krum_malicious=cfg.krum_malicious),
        trim_fraction=cfg.trim_fraction if cfg.aggregation == "trimmed-mean" else None,
        krum_malicious=cfg.krum_malicious if cfg.aggregation == "krum" else None,
    )
    ends: dict[int, float] = {}
    tested: dict[int, MetricRecord] = {}
    shown = progress_rounds(cfg.num_rounds)

    def timed_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        ends[server_round] = time.perf_counter() - started  # Flower calls it once a round's model is ready
        metrics = evaluate_fn(server_round, arrays)
        if metrics is not None:
            tested[server_round] = metrics
            if server_round in shown and "test-accuracy" in metrics:
                log.info("round %d/%d: test accuracy %.2f %%, test loss %.4f (%.1f s)", server_round,
                         cfg.num_rounds, 100 * float(metrics["test-accuracy"]), float(metrics["test-loss"]),
                         ends[server_round])
        return metrics

    log.info("%s, %d rounds, %s aggregation: a line per %d round(s); the full history goes to the summary",
             type(strategy).__name__, cfg.num_rounds, cfg.aggregation, min(shown))
    started = time.perf_counter()
    try:
        with quiet_flower_rounds():
            result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                                    num_rounds=cfg.num_rounds, timeout=cfg.round_timeout,
                                    evaluate_fn=timed_evaluate)
    except QuorumLost as err:
        err.completed_rounds = max((r for r in ends if r > 0), default=0)
        err.history = [{"round": r, **{k.replace("-", "_"): float(v) for k, v in m.items()}}
                       for r, m in sorted(tested.items()) if r > 0]
        raise
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
    return IterativeOutcome(history=history, selected=selected, initial_state=initial_state, seconds=seconds,
                            rounds=strategy.rounds, aggregation=aggregation)
