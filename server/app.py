"""The ServerApp: reads the run config, picks the strategy, writes the run summary.

* ``one-shot-mixup``: :class:`server.strategies.OneShot` with the run's encoding.
* ``fedprox`` / ``fedavg``: Flower's strategies with round selection on the parties'
  validation loss (:mod:`server.strategies.federated`), central test evaluation every round.
* ``local-only``: a reference point, each party trains alone (:mod:`server.strategies.local_only`).

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
from common.training import evaluate
from features.pipeline import describe_inputs, input_bounds, load_run_data, split_inputs
from server.iterative import run_iterative
from server.metered_grid import MeteredGrid
from server.nodes import wait_for_nodes
from server.run_files import check_output_dir, run_name, write_failed
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
    data = load_run_data(cfg)
    # The server evaluates on the test split in the parties' input space (features when a
    # backbone is used: the test split's extraction is cached like the training split's).
    test_x = split_inputs(cfg, data, "test", device=device).to(device)
    test_y = data.test_y.to(device)
    metered = MeteredGrid(grid)
    node_ids = wait_for_nodes(metered, expected=cfg.expected_parties, quorum=cfg.quorum,
                              timeout=cfg.connect_timeout if cfg.expected_parties else cfg.round_timeout)
    nodes_ready = time.time()
    progress.update(node_ids=node_ids, stage="collection" if cfg.strategy == "one-shot-mixup" else "rounds")
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
        progress["one_shot"] = result
        parts = one_shot_parts(cfg, result, expected=cfg.expected_parties or len(node_ids), connected=node_ids)
    elif cfg.strategy == "local-only":
        torch.manual_seed(cfg.seed)
        initial = MixupClassifier(in_dim=int(test_x[0].numel()), num_classes=data.num_classes, norm=cfg.model_norm)
        result = LocalOnly(epochs=cfg.central_epochs).start(
            grid=metered, node_ids=node_ids, initial_arrays=ArrayRecord(initial.state_dict()),
            timeout=cfg.round_timeout, evaluate_fn=evaluate_fn)
        parts = local_only_parts(cfg, result)
    else:
        # num-examples bound: no party holds more rows than the training split (public).
        outcome = run_iterative(metered, cfg, node_ids, in_dim=int(test_x[0].numel()),
                                num_classes=data.num_classes, max_examples=int(data.train_x.shape[0]),
                                num_partitions=max(cfg.expected_parties, len(node_ids)), evaluate_fn=evaluate_fn)
        parts = iterative_parts(cfg, outcome.history, outcome.selected, outcome.seconds,
                                aggregation=outcome.aggregation)
        parts.update(round_accounting(cfg, outcome.rounds, expected=cfg.expected_parties or len(node_ids),
                                      connected=node_ids))
    progress["stage"] = "summary"
    summary = RunSummary(
        strategy=cfg.strategy, num_parties=len(node_ids), communication=communication(metered, len(node_ids)),
        wall_seconds=time.perf_counter() - started, started_utc=started_utc,
        versions={"flwr": flwr.__version__, "torch": torch.__version__, "python": platform.python_version()},
        server_device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        inputs=describe_inputs(cfg, data, input_dim=int(test_x[0].numel()), device=device),
        config=cfg.model_dump(by_alias=True), **parts,
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
