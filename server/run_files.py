"""The files a run writes, checked before it starts and written when it fails.

* :func:`check_output_dir`: at ServerApp start, before any message, ``output-dir`` must be a
  folder the ServerApp can write (created if missing; a file path is refused) and the run's
  file names must be valid there (a probe file named like the longest one is written and
  removed), so that a bad ``output-dir`` or ``run-name`` fails within seconds, not after
  collection and training.
* :func:`write_failed`: a run that stopped without a model writes ``<run-name>.failed.json``
  (:class:`common.run_summary.FailedRunSummary`) with what it had collected and why.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common.config import RunConfig
from common.run_summary import FAILED_SUFFIX, FailedRunSummary, accuracies_in_percent
from server.strategies import OneShotFailed, OneShotResult
from server.strategies.screening import QuorumLost
from server.summary import one_shot_participation, partition_conflicts

__all__ = ["FAILED_SUFFIX", "OutputDirError", "check_output_dir", "run_name", "write_failed"]

log = logging.getLogger("flwr.mixupfl.server")  # child of flwr: shown in run logs



class OutputDirError(RuntimeError):
    """``output-dir`` is not a folder the ServerApp can write the run's files to."""


def run_name(cfg: RunConfig, num_parties: int) -> str:
    """The run's file stem: ``run-name``, else strategy, data, parties, beta, seed and time."""
    if cfg.run_name:
        return cfg.run_name.removesuffix(".json")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if cfg.node_local:
        return f"{cfg.strategy}-node-local-P{num_parties}-seed{cfg.seed}-{stamp}"
    return f"{cfg.strategy}-{cfg.dataset}-P{num_parties}-{cfg.partitioner}-b{cfg.beta:g}-seed{cfg.seed}-{stamp}"


def check_output_dir(cfg: RunConfig) -> Path:
    """Make sure the run can write its summary; return the folder.

    Creates ``output-dir`` if missing, then writes and removes a probe file named as the
    longest file the run writes (``<run-name>.failed.json`` plus the atomic writer's
    temporary suffix), with the widest party count the automatic name can carry.

    Raises
    ------
    OutputDirError
        ``output-dir`` is a file, cannot be created, is not writable, or the run's file
        names are not valid there (too long for the file system, say).
    """
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output-dir {out} is a file, not a folder; set output-dir to a folder "
                             "(it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputDirError(f"output-dir {out} cannot be created: {err.strerror or err}") from None
    stem = run_name(cfg, 10**6)
    try:  # the atomic writer's own temporary name (common.io.write_text_atomic), the longest one
        fd, probe = tempfile.mkstemp(dir=out, prefix=stem + FAILED_SUFFIX, suffix=".tmp")
    except (OSError, ValueError) as err:  # ValueError: a NUL in the name
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise OutputDirError(f"cannot write the run's files ({stem!r}{FAILED_SUFFIX}) in output-dir {out}: "
                             f"{reason}") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return out


def write_failed(cfg: RunConfig, err: BaseException, node_ids: list[int], *, started: float, started_utc: str,
                 stage: str | None = None, one_shot: OneShotResult | None = None) -> Path:
    """``<run-name>.failed.json``: why the run stopped and what it had gathered.

    A FedProx / FedAvg run below quorum (:class:`QuorumLost`) lists the rounds done, who
    answered each and why the others did not; a one-shot run (:class:`OneShotFailed`) the
    accepted parties, failures, rejections, partition conflicts and rows collected; any
    other error its type, text and ``stage`` (with ``one_shot``, a finished one-shot result
    whose summary failed, that result's figures too). Never the finished runs' file name.
    """
    if one_shot is not None and not isinstance(err, OneShotFailed):
        wrapped = OneShotFailed(f"{stage}: {type(err).__name__}: {err}", stage=stage or "summary", result=one_shot)
        wrapped.__cause__ = err
        err = wrapped
    fields: dict = {"completed_rounds": 0, "stage": stage, "error_type": type(err).__name__}
    if isinstance(err, QuorumLost):
        fields.update(completed_rounds=err.completed_rounds, round_participation=err.rounds,
                      history=accuracies_in_percent(err.history),
                      stage=stage or "rounds")
    elif isinstance(err, OneShotFailed):
        result = err.result
        cause = err.__cause__
        fields.update(
            stage=err.stage, error_type=type(cause).__name__ if cause is not None else fields["error_type"],
            completed_rounds=1 if result.parties else 0, parties=result.parties, union=result.union or None,
            failures=result.failures, rejections=result.rejections, partition_conflicts=partition_conflicts(result),
            history=accuracies_in_percent(result.history),
            participation=one_shot_participation(cfg, result, expected=cfg.expected_parties or len(node_ids),
                                                 connected=node_ids) if node_ids else None,
        )
    failed = FailedRunSummary(strategy=cfg.strategy, reason=str(err) or type(err).__name__,
                              wall_seconds=time.perf_counter() - started, started_utc=started_utc,
                              config=cfg.model_dump(by_alias=True), **fields)
    path = failed.write(Path(cfg.output_dir) / f"{run_name(cfg, len(node_ids))}{FAILED_SUFFIX}")
    log.error("run failed: %s; failed summary written to %s", err, path)
    return path
