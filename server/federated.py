"""Iterative baselines through Flower's own strategies: FedProx and FedAvg."""

from __future__ import annotations

import logging
import time

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from common.config import RunConfig
from common.model import MixupClassifier
from common.training import evaluate
from server.metered_grid import MeteredGrid

log = logging.getLogger("flwr.mixupfl.federated")  # child of flwr: shown in run logs


def run_federated(
    grid: MeteredGrid,
    cfg: RunConfig,
    node_ids: list[int],
    *,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    device: torch.device,
) -> dict:
    """Run ``cfg.num_rounds`` rounds of FedProx/FedAvg over all ``node_ids``.

    Every round: all parties train ``local-epochs`` from the global model, the server
    averages the models weighted by local training-set size, all parties evaluate the new
    global model on their validation part (clean), and the server evaluates it on the test
    set. The reported model is the round with the lowest size-weighted validation loss.

    The returned dict also holds ``initial_state`` and ``selected_state`` (the global model
    sent in round 1 and the selected round's), which the caller saves beside the summary for
    the gradient-leakage audit. Per-party figures that must not be averaged are kept as
    extremes: a DP-Mix party's ``dp-epsilon`` becomes ``dp_epsilon_max`` / ``dp_epsilon_min``.
    """
    torch.manual_seed(cfg.seed)
    in_dim = int(test_x[0].numel())
    model = MixupClassifier(in_dim=in_dim, num_classes=num_classes, norm=cfg.model_norm)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    num = len(node_ids)
    selection: dict = {}
    common = dict(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=num,
        min_evaluate_nodes=num,
        min_available_nodes=num,
        weighted_by_key="num-examples",
        train_metrics_aggr_fn=_train_metrics,
        evaluate_metrics_aggr_fn=lambda replies, key: _remember_val_loss(replies, key, selection),
    )
    if cfg.strategy == "fedprox":
        strategy = FedProx(proximal_mu=cfg.proximal_mu, **common)
    else:
        strategy = FedAvg(**common)
    eval_model = MixupClassifier(in_dim=in_dim, num_classes=num_classes, norm=cfg.model_norm).to(device)

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        state = arrays.to_torch_state_dict()
        # Flower aggregates the parties' validation metrics just before this call.
        val_loss = selection.pop("latest", None)
        if val_loss is not None and val_loss < selection.get("best", float("inf")):
            selection.update(best=val_loss, round=server_round, state={k: v.clone() for k, v in state.items()})
        eval_model.load_state_dict(state)
        loss, acc = evaluate(eval_model, test_x, test_y)
        return MetricRecord({"test-loss": loss, "test-accuracy": acc})

    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_rounds,
        timeout=cfg.round_timeout,
        evaluate_fn=central_evaluate,
    )
    seconds = time.perf_counter() - started
    rounds = []
    for rnd in range(1, cfg.num_rounds + 1):
        row: dict = {"round": rnd}
        for source in (result.train_metrics_clientapp, result.evaluate_metrics_clientapp, result.evaluate_metrics_serverapp):
            if rnd in source:
                row.update({k.replace("-", "_"): float(v) for k, v in source[rnd].items()})
        rounds.append(row)
    with_val = [r for r in rounds if "val_loss" in r and "test_accuracy" in r]
    if not with_val:
        raise RuntimeError("no round produced both a validation loss and a test accuracy")
    best = min(with_val, key=lambda r: r["val_loss"])
    last = rounds[-1]
    return {
        "test_accuracy": best["test_accuracy"],
        "test_loss": best["test_loss"],
        "selected_round": best["round"],
        "selected_val_loss": best["val_loss"],
        "last_round_test_accuracy": last.get("test_accuracy"),
        "train_seconds": seconds,
        "seconds_per_round": seconds / cfg.num_rounds,
        "history": rounds,
        "initial_state": initial_state,
        "selected_state": selection.get("state") if selection.get("round") == best["round"] else None,
    }


def _train_metrics(replies: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Flower's size-weighted mean, except DP epsilons: a privacy guarantee is per party, so
    the worst (largest) and best are kept instead of an average."""
    epsilons = [
        float(record["dp-epsilon"])
        for reply in replies
        for record in reply.metric_records.values()
        if "dp-epsilon" in record
    ]
    aggregated = aggregate_metricrecords(replies, weighted_by_key)
    if epsilons:
        del aggregated["dp-epsilon"]
        aggregated["dp-epsilon-max"] = max(epsilons)
        aggregated["dp-epsilon-min"] = min(epsilons)
    return aggregated


def _remember_val_loss(replies: list[RecordDict], weighted_by_key: str, selection: dict) -> MetricRecord:
    aggregated = aggregate_metricrecords(replies, weighted_by_key)
    if "val-loss" in aggregated:
        selection["latest"] = float(aggregated["val-loss"])
    return aggregated
