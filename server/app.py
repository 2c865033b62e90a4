"""The ServerApp: reads the run config, picks the strategy, writes the run summary.

* ``one-shot-mixup``: :class:`server.strategies.OneShot` with the run's encoding.
* ``fedprox`` / ``fedavg``: Flower's strategies with round selection on the parties'
  validation loss (:mod:`server.strategies.federated`), central test evaluation every round.
* ``local-only``: a reference point, each party trains alone (:mod:`server.strategies.local_only`).

The parties' data is a partition of the run's data set (simulation) or each SuperNode's own
(``data-source = "node-local"``); the test figures come from the server's test data or, in
a node-local run without one, from every party's own test part (:mod:`server.evaluation`).

Each run writes ``<output-dir>/<run-name>.json`` (:class:`common.run_summary.RunSummary`)
and logs a short table. It fails early and loudly: an invalid run config or an
``output-dir`` it cannot write raises before any message is sent (Flower logs the error and
marks the run failed with it); a run that stops later writes ``<run-name>.failed.json``
(:func:`server.run_files.write_failed`) with what it had collected and why, then re-raises.
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
from common.run_summary import RunSummary
from features.pipeline import describe_inputs, input_bounds
from server.evaluation import ServerTest, deferred_models, server_test, test_evaluation
from server.federated_evaluation import FederatedTest, federated_test
from server.iterative import run_iterative
from server.metered_grid import MeteredGrid
from server.nodes import wait_for_nodes
from server.run_files import check_output_dir, run_name, write_failed
from server.strategies import OneShot
from server.strategies.local_only import LocalOnly
from server.summary import (
    communication,
    data_source,
    iterative_parts,
    local_only_parts,
    one_shot_parts,
    round_accounting,
    table_lines,
)

log = logging.getLogger("flwr.mixupfl.server")  # child of flwr: shown in run logs

app = ServerApp()

WEIGHTS_SUFFIX = ".weights.pt"


def _test_on_parties(grid: MeteredGrid, node_ids: list[int], models: dict[int, ArrayRecord],
                     timeout: float) -> tuple[FederatedTest, dict[int, MetricRecord]]:
    """The federated test of ``models`` and its figures per step, as the server's own
    evaluation would have reported them."""
    tested = federated_test(grid, node_ids, models, timeout=timeout)
    return tested, {step: MetricRecord({"test-loss": loss, "test-accuracy": acc})
                    for step, (loss, acc) in tested.per_step.items()}


MAX_NODE_LOCAL_EXAMPLES = 2**31 - 1
"""num-examples bound of a node-local run: the server knows no party's size in advance."""


def _max_examples(cfg: RunConfig, data) -> int:  # noqa: ANN001
    """The largest ``num-examples`` a FedProx reply may claim: the training split's rows when
    the parties partition a data set (public: no party holds more); in a node-local run no
    public bound exists (:data:`MAX_NODE_LOCAL_EXAMPLES`), so only robust aggregation
    (``aggregation = "median" | "trimmed-mean" | "krum"``) limits an inflated claim."""
    if cfg.node_local or getattr(data, "train_x", None) is None:
        return MAX_NODE_LOCAL_EXAMPLES
    return int(data.train_x.shape[0])


def _largest_input(cfg: RunConfig, data) -> float | None:  # noqa: ANN001
    """The largest ``|x|`` of the run's valid input range (public: the data set's range and
    preprocessing), or ``None`` for backbone features, which have no public range."""
    bounds = input_bounds(cfg, data)
    if bounds is None:
        return None
    lo, hi = bounds
    return float(max(torch.as_tensor(lo).abs().max(), torch.as_tensor(hi).abs().max()))


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Check the config and ``output-dir`` (before any message), run, write the summary.

    Raises
    ------
    ConfigError
        An invalid run config (an exception, never ``SystemExit``: Flower logs it, and the
        run's status in ``flwr ls`` says ``failed`` with its text).
    OutputDirError
        ``output-dir`` is a file or not writable, or the run's file names are invalid there.
    """
    started, started_utc, main_started = time.perf_counter(), datetime.now(timezone.utc).isoformat(), time.time()
    try:
        cfg = parse_run_config(context.run_config)
    except ConfigError as err:
        for line in str(err).splitlines():
            log.error(line)
        raise ConfigError(f"invalid run config: {'; '.join(str(err).splitlines())}") from None
    check_output_dir(cfg)
    progress: dict = {"stage": "start", "node_ids": [], "written": None, "one_shot": None}
    try:
        _run(grid, cfg, progress, started=started, started_utc=started_utc, main_started=main_started)
    except Exception as err:
        if progress["written"] is None:  # a finished summary stays the run's only summary
            try:
                write_failed(cfg, err, progress["node_ids"], started=started, started_utc=started_utc,
                             stage=progress["stage"], one_shot=progress["one_shot"])
            except Exception as write_err:  # noqa: BLE001 - the run's own error is the one to raise
                log.error("could not write the failed summary: %s", write_err)
        raise


def _run(grid: Grid, cfg: RunConfig, progress: dict, *, started: float, started_utc: str,  # noqa: PLR0915
         main_started: float) -> None:
    """The run proper; ``progress`` says where it is (``stage``, ``node_ids``, the one-shot
    result once trained, the summary's path once written)."""
    device = resolve_device(cfg.device)
    test: ServerTest = server_test(cfg, device)
    data, in_dim = test.data, test.in_dim
    metered = MeteredGrid(grid)
    node_ids = wait_for_nodes(metered, expected=cfg.expected_parties, quorum=cfg.quorum,
                              timeout=cfg.connect_timeout if cfg.expected_parties else cfg.round_timeout)
    nodes_ready = time.time()
    progress.update(node_ids=node_ids, stage="collection" if cfg.strategy == "one-shot-mixup" else "rounds")
    log.info("%s on %s with %d parties, server device %s; tested on %s", cfg.strategy,
             "node-local data" if cfg.node_local else cfg.dataset, len(node_ids), device, test.description)
    tested: FederatedTest | None = None
    if cfg.strategy == "one-shot-mixup":
        evaluate_fn, kept = (deferred_models(lambda step: True) if test.federated
                             else (test_evaluation(cfg, test, device), {}))
        strategy = OneShot(
            encoding=cfg.encoding_spec, model_fn=partial(MixupClassifier, norm=cfg.model_norm), release=cfg.release,
            central_epochs=cfg.central_epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
            seed=cfg.seed, quorum=cfg.quorum, max_upload_bytes=int(cfg.max_upload_mb * 2**20),
            upload_dtype=cfg.upload_dtype, selection=cfg.selection, selection_every=cfg.selection_every,
            value_bound=cfg.encoding_spec.input_bound(cfg, value_bound=_largest_input(cfg, data), dim=in_dim),
            party_figures=cfg.party_figures, device=device,
        )
        result = strategy.start(
            grid=metered, node_ids=node_ids, row_shape=(in_dim,), num_classes=data.num_classes,
            num_partitions=max(cfg.expected_parties, len(node_ids)), timeout=cfg.round_timeout,
            evaluate_fn=evaluate_fn,
        )
        progress["one_shot"] = result
        if test.federated:  # after central training: the parties test the reported and the last model
            tested, figures = _test_on_parties(metered, node_ids, kept, cfg.round_timeout)
            result.evaluate_metrics_serverapp.update(figures)
        parts = one_shot_parts(cfg, result, expected=cfg.expected_parties or len(node_ids), connected=node_ids)
        source = data_source(cfg, test=test.description, federated=tested, selected_step=result.selected_epoch,
                             release_parties=result.parties)
    elif cfg.strategy == "local-only":
        torch.manual_seed(cfg.seed)
        initial = MixupClassifier(in_dim=in_dim, num_classes=data.num_classes, norm=cfg.model_norm)
        result = LocalOnly(epochs=cfg.central_epochs).start(
            grid=metered, node_ids=node_ids, initial_arrays=ArrayRecord(initial.state_dict()),
            timeout=cfg.round_timeout, evaluate_fn=test_evaluation(cfg, test, device))
        parts = local_only_parts(cfg, result)
        source = data_source(cfg, test=test.description)
    else:
        evaluate_fn, kept = (deferred_models(lambda step: step == cfg.num_rounds) if test.federated
                             else (test_evaluation(cfg, test, device), {}))
        outcome = run_iterative(metered, cfg, node_ids, in_dim=in_dim, num_classes=data.num_classes,
                                max_examples=_max_examples(cfg, data),
                                num_partitions=max(cfg.expected_parties, len(node_ids)), evaluate_fn=evaluate_fn)
        if test.federated:  # after the last round: the parties test the reported and the last model
            if outcome.selected is not None:
                kept[outcome.selected.server_round] = outcome.selected.arrays
            tested, figures = _test_on_parties(metered, node_ids, kept, cfg.round_timeout)
            for row in outcome.history:
                if row["round"] in figures:
                    row.update({k.replace("-", "_"): float(v) for k, v in figures[row["round"]].items()})
        parts = iterative_parts(cfg, outcome.history, outcome.selected, outcome.seconds,
                                aggregation=outcome.aggregation)
        parts.update(round_accounting(cfg, outcome.rounds, expected=cfg.expected_parties or len(node_ids),
                                      connected=node_ids))
        source = data_source(cfg, test=test.description, federated=tested,
                             selected_step=outcome.selected.server_round if outcome.selected else 0)
    progress["stage"] = "summary"
    inputs = describe_inputs(cfg, data, input_dim=in_dim, device=device, load_weights=not test.federated)
    if cfg.node_local:  # the server holds no party's rows: it knows their sizes only from the parties
        inputs.update(train_rows=None, test_rows=tested.rows if tested is not None else inputs["test_rows"])
    summary = RunSummary(
        strategy=cfg.strategy, num_parties=len(node_ids), communication=communication(metered, len(node_ids)),
        wall_seconds=time.perf_counter() - started, started_utc=started_utc,
        versions={"flwr": flwr.__version__, "torch": torch.__version__, "python": platform.python_version()},
        server_device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        inputs=inputs, data_source=source, config=cfg.model_dump(by_alias=True), **parts,
    )
    path = summary.write(Path(cfg.output_dir) / f"{run_name(cfg, len(node_ids))}.json")
    progress["written"] = path
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
