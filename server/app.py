"""The ServerApp: reads the run config, picks the strategy, writes the run summary.

* ``one-shot-mixup``: :class:`server.strategies.OneShot` with the run's encoding.
* ``fedprox`` / ``fedavg``: Flower's strategies with round selection on the parties'
  validation loss (:mod:`server.strategies.federated`), central test evaluation every round.
* ``local-only``: a reference point, each party trains alone (:mod:`server.strategies.local_only`).

Each run writes ``<output-dir>/<run-name>.json`` (:class:`common.run_summary.RunSummary`)
and logs a short table.
"""

from __future__ import annotations

import time

IMPORTED = time.time()  # the start-up timeline of a run (logged at the end) begins here

import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import flwr  # noqa: E402
import torch  # noqa: E402
from flwr.app import ArrayRecord, Context, MetricRecord  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from common.config import ConfigError, RunConfig, parse_run_config
from common.device import resolve_device
from common.model import MixupClassifier
from common.run_summary import FailedRunSummary, RunSummary
from common.training import evaluate
from features.pipeline import describe_inputs, input_bounds, load_run_data, split_inputs
from server.iterative import QuorumLost, run_iterative
from server.metered_grid import MeteredGrid
from server.nodes import wait_for_nodes
from server.strategies import OneShot
from server.strategies.local_only import LocalOnly
from server.summary import (
    communication,
    iterative_parts,
    local_only_parts,
    one_shot_parts,
    round_accounting,
    table_lines,
)

log = logging.getLogger("flwr.mixupfl.server")  # child of flwr: shown in run logs

app = ServerApp()

WEIGHTS_SUFFIX = ".weights.pt"


def _run_name(cfg: RunConfig, num_parties: int) -> str:
    if cfg.run_name:
        return cfg.run_name.removesuffix(".json")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{cfg.strategy}-{cfg.dataset}-P{num_parties}-{cfg.partitioner}-b{cfg.beta:g}-seed{cfg.seed}-{stamp}"


def _test_evaluation(cfg: RunConfig, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int, device):  # noqa: ANN001, ANN202
    """``evaluate_fn(step, arrays)`` on the server's test set (reports, never chooses). Its
    model is built on the first call, after the strategy has seeded and initialised its own."""
    holder: list[MixupClassifier] = []

    def evaluate_fn(step: int, arrays: ArrayRecord) -> MetricRecord:
        if not holder:
            holder.append(MixupClassifier(in_dim=int(test_x[0].numel()), num_classes=num_classes,
                                          norm=cfg.model_norm).to(device))
        model = holder[0]
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, test_x, test_y)
        return MetricRecord({"test-loss": loss, "test-accuracy": acc})

    return evaluate_fn


def _largest_input(cfg: RunConfig, data) -> float | None:  # noqa: ANN001
    """The largest ``|x|`` of the run's valid input range (public: the data set's range and
    preprocessing), or ``None`` for backbone features, which have no public range."""
    bounds = input_bounds(cfg, data)
    if bounds is None:
        return None
    lo, hi = bounds
    return float(max(torch.as_tensor(lo).abs().max(), torch.as_tensor(hi).abs().max()))


def _write_failed(cfg: RunConfig, err: QuorumLost, node_ids: list[int], *, started: float, started_utc: str) -> None:
    """A FedProx / FedAvg run below quorum: ``<run-name>.failed.json`` with the rounds done, who
    answered each and why the others did not (never the finished runs' file name)."""
    failed = FailedRunSummary(
        strategy=cfg.strategy, reason=str(err), completed_rounds=err.completed_rounds, round_participation=err.rounds,
        history=err.history, wall_seconds=time.perf_counter() - started, started_utc=started_utc,
        config=cfg.model_dump(by_alias=True),
    )
    path = failed.write(Path(cfg.output_dir) / f"{_run_name(cfg, len(node_ids))}.failed.json")
    log.error("run failed: %s; failed summary written to %s", err, path)


@app.main()
def main(grid: Grid, context: Context) -> None:
    started, started_utc, main_started = time.perf_counter(), datetime.now(timezone.utc).isoformat(), time.time()
    try:
        cfg = parse_run_config(context.run_config)
    except ConfigError as err:
        for line in str(err).splitlines():
            log.error(line)
        raise SystemExit(f"invalid run config: {err}") from None
    device = resolve_device(cfg.device)
    data = load_run_data(cfg)
    # The server evaluates on the test split in the parties' input space (features when a
    # backbone is used: the test split's extraction is cached like the training split's).
    test_x = split_inputs(cfg, data, "test", device=device).to(device)
    test_y = data.test_y.to(device)
    metered = MeteredGrid(grid)
    node_ids = wait_for_nodes(metered, expected=cfg.expected_parties, quorum=cfg.quorum,
                              timeout=cfg.connect_timeout if cfg.expected_parties else cfg.round_timeout)
    nodes_ready = time.time()
    log.info("%s on %s with %d parties, server device %s", cfg.strategy, cfg.dataset, len(node_ids), device)
    evaluate_fn = _test_evaluation(cfg, test_x, test_y, data.num_classes, device)
    if cfg.strategy == "one-shot-mixup":
        strategy = OneShot(
            encoding=cfg.encoding_spec, model_fn=partial(MixupClassifier, norm=cfg.model_norm), release=cfg.release,
            central_epochs=cfg.central_epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
            seed=cfg.seed, quorum=cfg.quorum, max_upload_bytes=int(cfg.max_upload_mb * 2**20),
            upload_dtype=cfg.upload_dtype, selection=cfg.selection, selection_every=cfg.selection_every,
            value_bound=cfg.encoding_spec.input_bound(cfg, value_bound=_largest_input(cfg, data),
                                                      dim=int(test_x[0].numel())),
            party_figures=cfg.party_figures, device=device,
        )
        result = strategy.start(
            grid=metered, node_ids=node_ids, row_shape=tuple(test_x.shape[1:]), num_classes=data.num_classes,
            num_partitions=max(cfg.expected_parties, len(node_ids)), timeout=cfg.round_timeout,
            evaluate_fn=evaluate_fn,
        )
        parts = one_shot_parts(cfg, result, expected=cfg.expected_parties or len(node_ids), connected=node_ids)
    elif cfg.strategy == "local-only":
        torch.manual_seed(cfg.seed)
        initial = MixupClassifier(in_dim=int(test_x[0].numel()), num_classes=data.num_classes, norm=cfg.model_norm)
        result = LocalOnly(epochs=cfg.central_epochs).start(
            grid=metered, node_ids=node_ids, initial_arrays=ArrayRecord(initial.state_dict()),
            timeout=cfg.round_timeout, evaluate_fn=evaluate_fn)
        parts = local_only_parts(cfg, result)
    else:
        try:
            # num-examples bound: no party holds more rows than the training split (public).
            outcome = run_iterative(metered, cfg, node_ids, in_dim=int(test_x[0].numel()),
                                    num_classes=data.num_classes, max_examples=int(data.train_x.shape[0]),
                                    num_partitions=max(cfg.expected_parties, len(node_ids)), evaluate_fn=evaluate_fn)
        except QuorumLost as err:
            _write_failed(cfg, err, node_ids, started=started, started_utc=started_utc)
            raise
        parts = iterative_parts(cfg, outcome.history, outcome.selected, outcome.seconds,
                                aggregation=outcome.aggregation)
        parts.update(round_accounting(cfg, outcome.rounds, expected=cfg.expected_parties or len(node_ids),
                                      connected=node_ids))
    summary = RunSummary(
        strategy=cfg.strategy, num_parties=len(node_ids), communication=communication(metered, len(node_ids)),
        wall_seconds=time.perf_counter() - started, started_utc=started_utc,
        versions={"flwr": flwr.__version__, "torch": torch.__version__, "python": platform.python_version()},
        server_device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        inputs=describe_inputs(cfg, data, input_dim=int(test_x[0].numel()), device=device),
        config=cfg.model_dump(by_alias=True), **parts,
    )
    path = summary.write(Path(cfg.output_dir) / f"{_run_name(cfg, len(node_ids))}.json")
    # The reported model (what every party receives, and what membership inference attacks) and,
    # for FedProx/FedAvg, the round-1 model (what the gradient-leakage audit re-makes updates
    # from); model weights, so never committed (.gitignore).
    if cfg.strategy != "local-only":  # each party's own model stays with it
        weights = path.with_name(path.stem + WEIGHTS_SUFFIX)
        iterative = cfg.strategy in ("fedprox", "fedavg")
        reported = (outcome.selected.arrays if iterative else result.arrays).to_torch_state_dict()
        torch.save({"initial": outcome.initial_state if iterative else None, "selected": reported,
                    "selected_round": summary.result.selected_at, "norm": cfg.model_norm}, weights)
        log.info("models written to %s", weights)
    for line in table_lines(summary):
        log.info(line)
    log.info("summary written to %s", path)
    # Where a run's start-up went (unix seconds; benchmarks/flower_overhead.py reads this line).
    log.info("timeline %s", json.dumps({
        "serverapp_imported": IMPORTED, "main_started": main_started, "nodes_ready": nodes_ready,
        "first_push": metered.first_push_time, "first_reply": metered.first_reply_time, "finished": time.time()}))
