"""Running a sweep: compute what is not finished, resume after interruption, collect the rows.

A run's JSON summary is what "finished" means (the ServerApp writes it atomically), so

* a finished run is never computed again;
* an interrupted sweep continues where it stopped: a run that was cut off (sweep killed,
  machine rebooted) left an in-flight marker; the next start asks the executor to stop it
  (for Flower: ``flwr stop`` of that run), keeps its partial log as ``*.interrupted-*.log``,
  and runs it again from the start;
* a run that fails is logged (``failures.json``, its log kept) and the sweep goes on; the
  next start retries it.

:func:`run_sweep` is the Python API (the command line and the studies call it);
:func:`run_and_report` adds what a command prints, the stop on SIGTERM and the report.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.io import write_json_atomic
from common.run_summary import FAILED_SUFFIX, read_summary
from simulations.report import write_report, write_runs_csv
from simulations.runtime.executor import Executor
from simulations.sweep.partitions import PartitionFacts, partition_facts, skew_of, write_partition_figures
from simulations.sweep.plan import SweepRun, expand_runs, row_from_summary, unique_runs, validate_runs
from simulations.sweep.spec import SweepError, SweepSpec

__all__ = [
    "SweepOutcome", "collect_rows", "sweep_partitions", "report_outcome", "report_settings", "run_and_report", "run_sweep",
    "write_sweep_report",
]


@dataclass
class SweepOutcome:
    """What a call of :func:`run_sweep` did."""

    planned: int
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    csv_path: Path | None = None


class _SweepLock:
    """One sweep per output folder at a time (a second one would run the same cells)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None

    def __enter__(self) -> _SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise SweepError(f"another sweep is running in {self.path.parent} (pid {holder}); "
                             "wait for it or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


def collect_rows(runs: Iterable[SweepRun], *, summaries_dir: Path,
                 partitions: dict[tuple, PartitionFacts] | None = None) -> list[dict[str, Any]]:
    """CSV rows of every finished run, one per (run, table), in plan order; with
    ``partitions`` (:func:`partition_facts`) each row carries its partition's label skew."""
    rows = []
    for run in runs:
        path = summaries_dir / f"{run.name}.json"
        if path.exists():
            rows.append(row_from_summary(run, read_summary(path), summary_path=path,
                                         label_skew=skew_of(partitions or {}, run)))
    return rows


def sweep_partitions(runs: list[SweepRun], *, out_dir: Path) -> dict[tuple, PartitionFacts]:
    """Class counts, label skew and a figure of every (cell, seed) partition of the sweep.
    A data set that cannot be read here (the sweep machine lacks it) is said, not fatal."""
    try:
        facts = partition_facts(runs)
    except Exception as err:  # noqa: BLE001 - the runs themselves will report a missing data set
        print(f"partition figures skipped: {err}", file=sys.stderr)
        return {}
    write_partition_figures(facts, out_dir=out_dir)
    return facts


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _set_aside_failure(summaries_dir: Path, logs_dir: Path, name: str, *, tag: str) -> None:
    """Move an earlier attempt's ``<name>.failed.json`` to the logs (``<name>.<tag>.failed.json``)
    before the run is attempted again, whatever ended that attempt.

    A run cut off by the sweep's own stop can still write one (its ServerApp sees its parties'
    actors cancelled and records the lost quorum); it describes that attempt, not the run, so
    it must not sit among the summaries beside the result of the attempt that follows."""
    failed = summaries_dir / f"{name}{FAILED_SUFFIX}"
    if failed.exists():
        failed.rename(logs_dir / f"{name}.{tag}{FAILED_SUFFIX}")


def _recover(inflight_dir: Path, logs_dir: Path, summaries_dir: Path, *, executor: Executor,
             planned: set[str]) -> list[str]:
    """Stop and set aside what an interrupted sweep left in flight; the names to compute again."""
    recovered = []
    for marker_path in sorted(inflight_dir.glob("*.json")):
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        name = marker.get("name", marker_path.stem)
        log_path = logs_dir / f"{name}.log"
        executor.recover(marker, log_path=log_path)
        if log_path.exists():  # nothing lost: the cut-off run's log is kept
            log_path.rename(logs_dir / f"{name}.interrupted-{_utc_stamp()}.log")
        marker_path.unlink()
        if name in planned and not (summaries_dir / f"{name}.json").exists():
            recovered.append(name)
    return recovered


def run_sweep(
    spec: SweepSpec,
    *,
    out_dir: Path,
    executor: Executor,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> SweepOutcome:
    """Compute every run of ``spec`` that has no summary yet, then write ``runs.csv``.

    Finished runs (their summary exists) are reused, never recomputed; runs an earlier,
    interrupted call left in flight are stopped and computed again; failed runs are
    recorded and retried by the next call.
    """
    out_dir = out_dir.resolve()
    summaries_dir, logs_dir, inflight_dir = out_dir / "summaries", out_dir / "logs", out_dir / "inflight"
    runs = expand_runs(spec, overrides=overrides)
    validate_runs(runs, summaries_dir=summaries_dir)
    todo = unique_runs(runs)
    outcome = SweepOutcome(planned=len(todo))
    with _SweepLock(out_dir / "sweep.lock"):
        for folder in (summaries_dir, logs_dir, inflight_dir):
            folder.mkdir(parents=True, exist_ok=True)
        settings = {**spec.settings, **dict(overrides or {})}
        write_json_atomic(out_dir / "settings.json", {"sweep": spec.name, "description": spec.description,
                                                      "seeds": spec.seeds, **settings})
        write_json_atomic(out_dir / "plan.json", [{**asdict(r)} for r in runs])
        partitions = sweep_partitions(unique_runs(runs), out_dir=out_dir)
        outcome.recovered = _recover(inflight_dir, logs_dir, summaries_dir, executor=executor,
                                     planned={r.name for r in todo})
        pending = [r for r in todo if not (summaries_dir / f"{r.name}.json").exists()]
        outcome.reused = [r.name for r in todo if r not in pending]
        bar = tqdm(total=len(todo), initial=len(todo) - len(pending), unit="run", desc=f"sweep {spec.name}",
                   disable=not progress, dynamic_ncols=True, smoothing=0.0)
        try:
            for run in pending:
                bar.set_postfix_str(f"{run.table} {run.name.rsplit('-', 1)[0]}")
                _set_aside_failure(summaries_dir, logs_dir, run.name, tag=f"earlier-{_utc_stamp()}")
                executor.prepare(run.parties)
                marker_path = inflight_dir / f"{run.name}.json"
                marker: dict[str, Any] = {"name": run.name, "key": run.key, "sweep_pid": os.getpid(),
                                          "started_utc": datetime.now(timezone.utc).isoformat()}
                write_json_atomic(marker_path, marker)

                def note(fields: dict[str, Any], marker=marker, marker_path=marker_path) -> None:
                    marker.update(fields)
                    write_json_atomic(marker_path, marker)

                started = time.perf_counter()
                log_path = logs_dir / f"{run.name}.log"
                code = executor.execute(
                    run,
                    run_config={**run.run_config, "output-dir": str(summaries_dir), "run-name": run.name},
                    log_path=log_path,
                    note=note,
                )
                marker_path.unlink(missing_ok=True)
                summary_path = summaries_dir / f"{run.name}.json"
                seconds = time.perf_counter() - started
                if code == 0 and summary_path.exists():
                    outcome.computed.append(run.name)
                    acc = read_summary(summary_path).result.test_accuracy
                    bar.write(f"  {run.name}: {acc:.2f} % in {seconds:.0f} s")
                else:
                    failure = {"name": run.name, "table": run.table, "exit_code": code, "log": str(log_path),
                               "seconds": seconds}
                    outcome.failed.append(failure)
                    bar.write(f"  {run.name}: FAILED (exit {code}); log: {log_path}")
                bar.update(1)
                outcome.rows = collect_rows(runs, summaries_dir=summaries_dir, partitions=partitions)
                write_runs_csv(outcome.rows, path=out_dir / "runs.csv")  # partial results readable at any time
        finally:
            bar.close()
            write_json_atomic(out_dir / "failures.json", outcome.failed)
            close = getattr(executor, "close", None)
            if callable(close):  # the executor's SuperLink and Ray cluster end with the sweep
                close()
        outcome.rows = collect_rows(runs, summaries_dir=summaries_dir, partitions=partitions)
        outcome.csv_path = write_runs_csv(outcome.rows, path=out_dir / "runs.csv")
    return outcome


def report_settings(spec: SweepSpec, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run settings common to the sweep, as its report prints them."""
    return {**spec.settings, **dict(overrides or {}), "seeds": spec.seeds}


def write_sweep_report(rows: list[dict[str, Any]], *, spec: SweepSpec, out_dir: Path, settings: Mapping[str, Any],
                       index_name: str = "report.md") -> list[Path]:
    """The sweep's report (:func:`simulations.report.write_report`) in ``out_dir``, its index page
    named ``index_name``. A study that owns ``report.md`` passes another name: the report is then
    made in a private folder and moved in, so no file of that name is ever written or replaced."""
    if not rows:
        return []
    title = f"Sweep {spec.name}"
    if index_name == "report.md":
        return list(write_report(rows, out_dir=out_dir, title=title, settings=settings).written())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".sweep-report-") as staging:
        files = write_report(rows, out_dir=Path(staging), title=title, settings=settings)
        for path in files.written():
            target = out_dir / (index_name if path == files.report else path.name)
            os.replace(path, target)
            written.append(target)
    return written


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_and_report(spec: SweepSpec, *, out_dir: Path, executor: Executor, overrides: Mapping[str, Any] | None = None,
                   settings: Mapping[str, Any], progress: bool = True, index_name: str = "report.md") -> int:
    """:func:`run_sweep` as a command runs it, then :func:`write_sweep_report`; returns the exit
    status: 0, 1 (some runs failed: the report shows the others), 2 (the sweep cannot run) or
    130 (interrupted; finished runs are kept)."""
    # SIGTERM (a scheduler, `kill`) stops the current run cleanly like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        planned = len(unique_runs(expand_runs(spec, overrides=overrides)))
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"sweep {spec.name}: {planned} runs, output in {out_dir}", flush=True)
    try:
        outcome = run_sweep(spec, out_dir=out_dir, executor=executor, overrides=overrides, progress=progress)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; run the same command again to continue", file=sys.stderr)
        return 130
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"computed {len(outcome.computed)}, reused {len(outcome.reused)}, "
          f"restarted after interruption {len(outcome.recovered)}, failed {len(outcome.failed)}")
    return report_outcome(outcome, spec=spec, out_dir=out_dir, settings=settings, index_name=index_name)


def report_outcome(outcome: SweepOutcome, *, spec: SweepSpec, out_dir: Path, settings: Mapping[str, Any],
                   index_name: str = "report.md") -> int:
    """Write the report of ``outcome``, print what was written; 1 when some runs failed."""
    written = write_sweep_report(outcome.rows, spec=spec, out_dir=out_dir, settings=settings, index_name=index_name)
    print(f"runs.csv: {outcome.csv_path}")
    for path in written:
        print(f"report: {path}")
    if outcome.failed:
        print(f"{len(outcome.failed)} run(s) failed (see {out_dir / 'failures.json'}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0
