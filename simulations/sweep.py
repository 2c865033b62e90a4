"""Sweeps over the paper's collaborative grids (Tables 5 and 6), every run a real ``flwr run``.

A sweep file (TOML, see ``simulations/sweeps/``) names the grid: blocks ("tables") of
parties x Dirichlet beta (x size ratio rho for the size-skew layout of Table 6), the
strategies, the one-shot release modes and encodings (singularized mixup, or the InstaHide
comparator of the paper's Table 4) and the seeds, plus the run-config settings common to
every run. Every (cell, strategy, release mode, encoding, seed) is one ``flwr run`` of this app,
whose ServerApp writes the run's JSON summary atomically; the summary's existence is what
"finished" means, so

* a finished run is never computed again (its name carries a hash of its full run config
  and federation size: change a setting and it becomes a new run);
* an interrupted sweep continues where it stopped: run the same command again. A run that
  was cut off (sweep killed, machine rebooted) left an in-flight marker; the next start asks
  the SuperLink to stop that Flower run, keeps its partial log as ``*.interrupted-*.log``,
  and runs it again from the start;
* a run that fails is logged (``failures.json``, its log kept) and the sweep goes on; the
  next start retries it.

Outputs under ``--out`` (default ``runs/sweeps/<name>``): ``summaries/`` (one JSON per run),
``logs/``, ``runs.csv`` (one row per run and table; a run shared by two tables is computed
once and listed under each), ``settings.json``, and the report of :mod:`simulations.report`
(paper-layout tables, one-shot vs iterative table, plots).

    python -m simulations.sweep                                   # offline default: digits
    python -m simulations.sweep simulations/sweeps/cifar10-resnet18-gpu.toml --gpu \\
        --generate-cifar10 50000 --set "backbone-weights='/abs/resnet18.pth'"
    python -m simulations.sweep simulations/sweeps/instahide-digits.toml   # Table 4: InstaHide vs ours
    python -m simulations.sweep --dry-run                          # list the runs, run nothing
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import tomllib
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from common.config import ConfigError, parse_run_config
from common.defences import DEFAULT_DEFENCE, DEFENCES
from common.encodings import DEFAULT_ENCODING, ENCODINGS
from common.partition import PARTITIONERS
from common.io import write_json_atomic
from common.registry import Registry
from common.run_summary import RunRow, RunSummary, read_summary
from simulations.compare import parse_overrides
from simulations.report import write_report, write_runs_csv
from simulations.local_flower import (
    PROJECT_ROOT,
    configure_simulation,
    flower_env,
    flower_run_id,
    flwr_run_command,
    stop_flower_run,
)

__all__ = [
    "FlowerExecutor",
    "SweepError",
    "SweepOutcome",
    "SweepRun",
    "SweepSpec",
    "expand_runs",
    "load_sweep",
    "main",
    "row_from_summary",
    "run_sweep",
]

SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"
DEFAULT_SWEEP = SWEEPS_DIR / "digits-default.toml"

Strategy = Literal["fedprox", "fedavg", "one-shot-mixup"]
Release = Literal["once", "per-epoch"]


def _registered(registry: Registry, values: list[str] | None) -> list[str] | None:
    for value in values or []:
        registry.get(value)  # UnknownVariant (a ValueError) names the known ones
    return values


Encoding = Annotated[str, AfterValidator(lambda v: _registered(ENCODINGS, [v])[0])]
Defence = Annotated[str, AfterValidator(lambda v: _registered(DEFENCES, [v])[0])]
LAYOUT_PARTITIONERS = {"table5": "dirichlet", "table6": "size-skew"}
"""The partitioner of each paper layout: Table 5 has equal sizes, Table 6 one data-poor party."""

# Only a non-default encoding or defence is written into a run config, so the run keys of
# runs computed before encodings and defences existed, and with them their names, stay.

# Keys the sweep sets itself per run; a sweep file or --set may not fix them.
SWEEP_KEYS = ("strategy", "seed", "beta", "rho", "partitioner", "poor-party", "release", "encoding", "defence",
              "output-dir", "run-name")

class SweepError(ValueError):
    """A sweep that cannot run as specified; the message says what to change."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class TableSpec(BaseModel):
    """One block of the grid, laid out like the paper's Table 5 or Table 6."""

    model_config = ConfigDict(extra="forbid", alias_generator=_kebab, populate_by_name=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    layout: Literal["table5", "table6"]
    parties: list[int] = Field(min_length=1)
    beta: list[float] = Field(min_length=1)
    rho: list[float] | None = None
    poor_party: int = Field(0, ge=0)
    partitioner: str | None = Field(None, description="registered partitioner; default by layout: Table 5 "
                                    "'dirichlet' (equal sizes), Table 6 'size-skew' (one data-poor party)")
    strategies: list[Strategy] | None = None
    releases: list[Release] | None = None
    encodings: list[Encoding] | None = None
    defences: list[Defence] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("partitioner")
    @classmethod
    def _known_partitioner(cls, value: str | None) -> str | None:
        return None if value is None else _registered(PARTITIONERS, [value])[0]

    @property
    def partitioner_name(self) -> str:
        """The partitioner this block's runs use."""
        return self.partitioner or LAYOUT_PARTITIONERS[self.layout]

    @field_validator("parties")
    @classmethod
    def _two_or_more(cls, value: list[int]) -> list[int]:
        if any(p < 2 for p in value):
            raise ValueError("a collaboration needs at least 2 parties")
        return value

    @model_validator(mode="after")
    def _layout_fits(self) -> TableSpec:
        if self.layout == "table6" and not self.rho:
            raise ValueError(f"table {self.name!r}: layout 'table6' (size skew) needs rho = [...]")
        if self.layout == "table5" and self.rho is not None:
            raise ValueError(f"table {self.name!r}: layout 'table5' has equal party sizes; remove rho")
        if self.layout == "table6" and any(self.poor_party >= p for p in self.parties):
            raise ValueError(f"table {self.name!r}: poor-party {self.poor_party} outside some party count")
        return self


class SweepSpec(BaseModel):
    """A sweep file: the grid, the strategies, the release modes, the one-shot encodings, the seeds
    and the settings. ``encodings`` (sweep-wide, or per block like ``releases``) applies to the
    one-shot strategy only; the iterative strategies have no encoding. ``defences`` (likewise)
    applies to the iterative strategies only: each FedProx/FedAvg cell runs once per defence."""

    model_config = ConfigDict(extra="forbid", alias_generator=_kebab, populate_by_name=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seeds: list[int] = Field(min_length=1)
    strategies: list[Strategy] = Field(default_factory=lambda: ["fedprox", "one-shot-mixup"])
    releases: list[Release] = Field(default_factory=lambda: ["once"])
    encodings: list[Encoding] = Field(default_factory=lambda: [DEFAULT_ENCODING])
    defences: list[Defence] = Field(default_factory=lambda: [DEFAULT_DEFENCE])
    settings: dict[str, Any] = Field(default_factory=dict)
    table: list[TableSpec] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError("seeds must be distinct and >= 0")
        return value

    @model_validator(mode="after")
    def _distinct_tables(self) -> SweepSpec:
        names = [t.name for t in self.table]
        if len(set(names)) != len(names):
            raise ValueError(f"table names must be distinct, got {names}")
        for where, values in [("settings", self.settings)] + [(f"table {t.name!r} settings", t.settings)
                                                              for t in self.table]:
            fixed = sorted(set(values) & set(SWEEP_KEYS))
            if fixed:
                raise ValueError(f"{where}: {', '.join(fixed)} are set by the sweep per run, not in settings")
        return self


def load_sweep(path: Path) -> SweepSpec:
    """Read and validate a sweep file; errors name the file and the offending keys."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"sweep file {path} does not exist (the shipped ones are in {SWEEPS_DIR})") from None
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: not valid TOML ({err})") from None
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        lines = [f"{path}:"]
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {loc or '(file)'}: {e['msg'].removeprefix('Value error, ')}")
        raise SweepError("\n".join(lines)) from None


def select_tables(spec: SweepSpec, names: Iterable[str]) -> SweepSpec:
    """The sweep restricted to the named blocks (file order kept)."""
    wanted = list(dict.fromkeys(names))
    known = [t.name for t in spec.table]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SweepError(f"--tables {' '.join(unknown)}: no such block (the file has {', '.join(known)})")
    return spec.model_copy(update={"table": [t for t in spec.table if t.name in wanted]})


@dataclass(frozen=True)
class SweepRun:
    """One ``flwr run`` of the sweep and the table cell it belongs to."""

    table: str
    layout: str
    strategy: str
    release: str  # "" for the iterative strategies
    encoding: str  # "singularized" or "instahide" for the one-shot strategy, "" for the iterative ones
    parties: int
    beta: float
    rho: float
    seed: int
    run_config: dict[str, Any] = field(hash=False, compare=False)
    key: str = ""
    name: str = ""
    defence: str = ""  # the iterative strategies' client-side defence ("none", ...), "" for one-shot


def run_key(run_config: Mapping[str, Any], parties: int) -> str:
    """Hash of everything that determines a run's result: its run config and federation size."""
    payload = json.dumps({"config": dict(run_config), "parties": parties}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


def expand_runs(spec: SweepSpec, *, overrides: Mapping[str, Any] | None = None) -> list[SweepRun]:
    """Every (table cell, strategy, release, encoding, seed) of the sweep.

    Parameters
    ----------
    spec : SweepSpec
        The validated sweep file.
    overrides : mapping, optional
        Run-config values for every run (``--set``); the per-run keys :data:`SWEEP_KEYS` are refused.

    Returns
    -------
    list of SweepRun
        Seeds outermost, so that a complete grid for the first seed exists before the second
        seed starts. One-shot runs are expanded over release modes and encodings, the iterative
        strategies over neither. Only a non-default encoding is written into the run config
        (see :data:`DEFAULT_ENCODING`); an InstaHide run's name says ``instahide``.
    """
    overrides = dict(overrides or {})
    fixed = sorted(set(overrides) & set(SWEEP_KEYS))
    if fixed:
        raise SweepError(f"--set {', '.join(fixed)}: set by the sweep per run")
    runs: list[SweepRun] = []
    for seed in spec.seeds:
        for table in spec.table:
            strategies = table.strategies or spec.strategies
            releases = table.releases or spec.releases
            encodings = table.encodings or spec.encodings
            defences = table.defences or spec.defences
            rhos = table.rho if table.layout == "table6" else [1.0]
            for parties in table.parties:
                for beta in table.beta:
                    for rho in rhos:
                        for strategy in strategies:
                            # (release, encoding, defence): the one-shot strategy has releases and
                            # encodings, the iterative strategies have defences.
                            variants = ([(r, e, "") for r in releases for e in encodings]
                                        if strategy == "one-shot-mixup" else [("", "", d) for d in defences])
                            for release, encoding, defence in variants:
                                config: dict[str, Any] = {**spec.settings, **table.settings, **overrides}
                                config.update(strategy=strategy, seed=seed, beta=float(beta))
                                config["partitioner"] = table.partitioner_name
                                if table.layout == "table6":
                                    config.update({"rho": float(rho), "poor-party": table.poor_party})
                                if release:
                                    config["release"] = release
                                if encoding and encoding != DEFAULT_ENCODING:
                                    config["encoding"] = encoding
                                if defence and defence != DEFAULT_DEFENCE:
                                    config["defence"] = defence
                                config = dict(sorted(config.items()))
                                key = run_key(config, parties)
                                label = strategy + (f"-{encoding}" if encoding and encoding != DEFAULT_ENCODING
                                                    else "") + (f"-{defence}" if defence and defence != DEFAULT_DEFENCE
                                                                else "") + (f"-{release}" if release else "")
                                rho_part = f"-rho{rho:g}" if table.layout == "table6" else ""
                                name = f"{label}-P{parties}-b{beta:g}{rho_part}-seed{seed}-{key}"
                                runs.append(SweepRun(
                                    table=table.name, layout=table.layout, strategy=strategy, release=release,
                                    encoding=encoding, parties=parties, beta=float(beta), rho=float(rho), seed=seed,
                                    run_config=config, key=key, name=name, defence=defence,
                                ))
    return runs


def unique_runs(runs: Iterable[SweepRun]) -> list[SweepRun]:
    """The runs to compute: one per key, in first-seen order."""
    seen: dict[str, SweepRun] = {}
    for run in runs:
        seen.setdefault(run.key, run)
    return list(seen.values())


def validate_runs(runs: Iterable[SweepRun], *, summaries_dir: Path) -> None:
    """Parse every run config with the app's own parser before anything starts; the error
    lists each distinct problem once, with how many runs it hits and one of them."""
    problems: dict[str, list[str]] = {}
    for run in unique_runs(runs):
        try:
            parse_run_config({**run.run_config, "output-dir": str(summaries_dir), "run-name": run.name})
        except ConfigError as err:
            problems.setdefault(str(err), []).append(f"{run.table}/{run.name}")
    if problems:
        lines = ["run configs the app would refuse:"]
        for message, names in problems.items():
            lines.append(f"- {len(names)} run(s), e.g. {names[0]}:")
            lines.extend(f"    {line}" for line in message.splitlines())
        raise SweepError("\n".join(lines))


def row_from_summary(run: SweepRun, summary: RunSummary, *, summary_path: Path) -> dict[str, Any]:
    """The ``runs.csv`` row of one run (:class:`common.run_summary.RunRow`): the planned run's
    block, layout and cell, and the summary's figures (accuracies in percent)."""
    return RunRow.from_summary(
        summary, run_key=run.key, table=run.table, layout=run.layout, release=run.release, beta=run.beta,
        rho=run.rho, seed=run.seed, summary_path=summary_path,
    ).model_dump()


# ------------------------------------------------------------------------------ execution


class Executor(Protocol):
    """How one run is computed. It must leave ``<summaries_dir>/<run.name>.json`` on success."""

    def prepare(self, parties: int) -> None: ...

    def execute(self, run: SweepRun, *, run_config: dict[str, Any], log_path: Path,
                note: Callable[[dict[str, Any]], None]) -> int: ...

    def recover(self, marker: Mapping[str, Any], *, log_path: Path) -> None: ...


class FlowerExecutor:
    """Runs each sweep run as ``flwr run . --stream`` against the local simulation SuperLink.

    Parameters
    ----------
    env : mapping
        Environment of the ``flwr`` commands (:func:`simulations.local_flower.flower_env`).
    timeout : float
        Seconds allowed per run; a run over time is stopped and counted as failed.
    gpu : bool
        Give every simulated party 1 CPU and ``1 / min(P, cores)`` of the GPU.
    """

    def __init__(self, *, env: Mapping[str, str], timeout: float, gpu: bool = False) -> None:
        self.env = dict(env)
        self.timeout = timeout
        self.gpu = gpu
        self._configured_for: int | None = None

    def prepare(self, parties: int) -> None:
        """Set the simulated parties' resources (Flower stores them in the SuperLink)."""
        from simulations.federation import gpu_share

        key = parties if self.gpu else 0
        if self._configured_for == key:
            return
        share = gpu_share(parties, os.cpu_count() or 1) if self.gpu else 0.0
        configure_simulation(num_supernodes=parties, num_cpus=1, num_gpus=share, env=self.env, quiet=True)
        self._configured_for = key

    def execute(self, run: SweepRun, *, run_config: dict[str, Any], log_path: Path,
                note: Callable[[dict[str, Any]], None]) -> int:
        cmd = flwr_run_command(run_config, num_supernodes=run.parties, env=self.env)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w", encoding="utf-8") as log:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            # Own session: the whole `flwr run` process group can be stopped on interrupt.
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=PROJECT_ROOT, start_new_session=True)
            note({"pid": proc.pid})
            try:
                return proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                log.write(f"\n[sweep] run exceeded {self.timeout:.0f} s: stopped\n")
                self._stop(proc.pid, log_path)
                return 124
            except BaseException:  # KeyboardInterrupt / SIGTERM: leave nothing running
                self._stop(proc.pid, log_path)
                raise

    def recover(self, marker: Mapping[str, Any], *, log_path: Path) -> None:
        """Stop what an interrupted sweep left running for this run."""
        pid = marker.get("pid")
        if isinstance(pid, int) and _is_flwr_process(pid):
            self._stop(pid, log_path)
        elif log_path.exists():
            run_id = flower_run_id(log_path.read_text(encoding="utf-8", errors="replace"))
            if run_id is not None:
                stop_flower_run(run_id, env=self.env)

    def _stop(self, pid: int, log_path: Path) -> None:
        run_id = flower_run_id(log_path.read_text(encoding="utf-8", errors="replace")) if log_path.exists() else None
        if run_id is not None:  # the SuperLink would otherwise finish the run in the background
            stop_flower_run(run_id, env=self.env)
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        return ""
    return ""


def _is_flwr_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"flwr" in cmdline and b"run" in cmdline


# ------------------------------------------------------------------------------- the loop


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


def _write_json(path: Path, payload: Any) -> None:
    write_json_atomic(path, payload)


def collect_rows(runs: Iterable[SweepRun], *, summaries_dir: Path) -> list[dict[str, Any]]:
    """CSV rows of every finished run, one per (run, table), in plan order."""
    rows = []
    for run in runs:
        path = summaries_dir / f"{run.name}.json"
        if path.exists():
            rows.append(row_from_summary(run, read_summary(path), summary_path=path))
    return rows


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
        _write_json(out_dir / "settings.json", {"sweep": spec.name, "description": spec.description,
                                                "seeds": spec.seeds, **settings})
        _write_json(out_dir / "plan.json", [{**asdict(r)} for r in runs])
        by_name = {r.name: r for r in todo}
        for marker_path in sorted(inflight_dir.glob("*.json")):
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
            name = marker.get("name", marker_path.stem)
            log_path = logs_dir / f"{name}.log"
            executor.recover(marker, log_path=log_path)
            if log_path.exists():  # nothing lost: the cut-off run's log is kept
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                log_path.rename(logs_dir / f"{name}.interrupted-{stamp}.log")
            marker_path.unlink()
            if name in by_name and not (summaries_dir / f"{name}.json").exists():
                outcome.recovered.append(name)
        pending = [r for r in todo if not (summaries_dir / f"{r.name}.json").exists()]
        outcome.reused = [r.name for r in todo if r not in pending]
        bar = tqdm(total=len(todo), initial=len(todo) - len(pending), unit="run", desc=f"sweep {spec.name}",
                   disable=not progress, dynamic_ncols=True, smoothing=0.0)
        try:
            for run in pending:
                bar.set_postfix_str(f"{run.table} {run.name.rsplit('-', 1)[0]}")
                executor.prepare(run.parties)
                marker_path = inflight_dir / f"{run.name}.json"
                marker: dict[str, Any] = {"name": run.name, "key": run.key, "sweep_pid": os.getpid(),
                                          "started_utc": datetime.now(timezone.utc).isoformat()}
                _write_json(marker_path, marker)

                def note(fields: dict[str, Any], marker=marker, marker_path=marker_path) -> None:
                    marker.update(fields)
                    _write_json(marker_path, marker)

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
                    acc = 100 * read_summary(summary_path).result.test_accuracy
                    bar.write(f"  {run.name}: {acc:.2f} % in {seconds:.0f} s")
                else:
                    failure = {"name": run.name, "table": run.table, "exit_code": code, "log": str(log_path),
                               "seconds": seconds}
                    outcome.failed.append(failure)
                    bar.write(f"  {run.name}: FAILED (exit {code}); log: {log_path}")
                bar.update(1)
                outcome.rows = collect_rows(runs, summaries_dir=summaries_dir)
                write_runs_csv(outcome.rows, path=out_dir / "runs.csv")  # partial results readable at any time
        finally:
            bar.close()
            _write_json(out_dir / "failures.json", outcome.failed)
        outcome.rows = collect_rows(runs, summaries_dir=summaries_dir)
        outcome.csv_path = write_runs_csv(outcome.rows, path=out_dir / "runs.csv")
    return outcome


def _report(outcome: SweepOutcome, *, spec: SweepSpec, out_dir: Path, settings: dict[str, Any]) -> list[Path]:
    if not outcome.rows:
        return []
    files = write_report(outcome.rows, out_dir=out_dir, title=f"Sweep {spec.name}", settings=settings)
    return list(files.written())


def generate_cifar10(root: Path, *, n_train: int, n_test: int) -> Path:
    """Write a CIFAR-10-format data set of class patterns (generated, never real) under
    ``root`` unless one is there; returns the ``data-dir`` to use."""
    from loaders.format_writers import write_cifar10

    marker = root / "cifar-10-batches-py" / "GENERATED.json"
    wanted = {"n_train": n_train, "n_test": n_test, "pixels": "class-patterns", "seed": 0}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return root
    print(f"writing a generated CIFAR-10-format data set ({n_train} + {n_test} images, class patterns) to {root}")
    write_cifar10(root, n_train=n_train, n_test=n_test, seed=0, pixels="class-patterns")
    marker.write_text(json.dumps(wanted) + "\n")
    return root


def main(argv: list[str] | None = None, *, executor: Executor | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", nargs="?", type=Path, default=DEFAULT_SWEEP,
                        help=f"sweep TOML (default {DEFAULT_SWEEP.relative_to(PROJECT_ROOT)})")
    parser.add_argument("--out", type=Path, help="output folder (default runs/sweeps/<name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config value for every run, TOML literal, repeatable")
    parser.add_argument("--seeds", type=int, nargs="+", help="replace the file's seeds")
    parser.add_argument("--tables", nargs="+", metavar="NAME", help="run only these blocks of the file")
    parser.add_argument("--gpu", action="store_true", help="parties share the GPU: 1 CPU and 1/min(P, cores) GPU each")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds allowed per run (default 3 h)")
    parser.add_argument("--generate-cifar10", type=int, metavar="N_TRAIN",
                        help="write a generated CIFAR-10-format set (class patterns, N_TRAIN + N_TRAIN/5 images) "
                        "under <out>/data if absent and use it as data-dir")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether each is finished")
    parser.add_argument("--report-only", action="store_true", help="rebuild runs.csv and the report, run nothing")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    try:
        spec = load_sweep(args.sweep_file)
        if args.seeds:
            spec = spec.model_copy(update={"seeds": SweepSpec._distinct_seeds(args.seeds)})
        if args.tables:
            spec = select_tables(spec, args.tables)
        overrides = parse_overrides(args.overrides)
        out_dir = (args.out or PROJECT_ROOT / "runs" / "sweeps" / spec.name).resolve()
        if args.generate_cifar10:
            data_dir = generate_cifar10(out_dir / "data", n_train=args.generate_cifar10,
                                        n_test=max(100, args.generate_cifar10 // 5))
            overrides.setdefault("data-dir", str(data_dir))
            overrides.setdefault("dataset", "cifar10")
        runs = expand_runs(spec, overrides=overrides)
        validate_runs(runs, summaries_dir=out_dir / "summaries")
    except (SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = {**spec.settings, **overrides, "seeds": spec.seeds}
    if args.generate_cifar10:
        settings["data"] = "generated CIFAR-10-format class patterns (not CIFAR-10)"
    todo = unique_runs(runs)
    if args.dry_run:
        for run in todo:
            done = (out_dir / "summaries" / f"{run.name}.json").exists()
            print(f"{'done   ' if done else 'pending'}  {run.table:10s} {run.name}")
        print(f"{len(todo)} runs ({len(runs)} table entries), "
              f"{sum((out_dir / 'summaries' / f'{r.name}.json').exists() for r in todo)} finished; out: {out_dir}")
        return 0
    if args.report_only:
        outcome = SweepOutcome(planned=len(todo), rows=collect_rows(runs, summaries_dir=out_dir / "summaries"))
        outcome.csv_path = write_runs_csv(outcome.rows, path=out_dir / "runs.csv") if outcome.rows else None
    else:
        if executor is None:
            executor = FlowerExecutor(env=flower_env(), timeout=args.timeout, gpu=args.gpu)
        # SIGTERM (a scheduler, `kill`) stops the current run cleanly like Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        print(f"sweep {spec.name}: {len(todo)} runs, output in {out_dir}", flush=True)
        try:
            outcome = run_sweep(spec, out_dir=out_dir, executor=executor, overrides=overrides,
                                progress=not args.no_progress)
        except KeyboardInterrupt:
            print("\ninterrupted: finished runs are kept; run the same command again to continue", file=sys.stderr)
            return 130
        except SweepError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"computed {len(outcome.computed)}, reused {len(outcome.reused)}, "
              f"restarted after interruption {len(outcome.recovered)}, failed {len(outcome.failed)}")
    written = _report(outcome, spec=spec, out_dir=out_dir, settings=settings)
    print(f"runs.csv: {outcome.csv_path}")
    for path in written:
        print(f"report: {path}")
    if outcome.failed:
        print(f"{len(outcome.failed)} run(s) failed (see {out_dir / 'failures.json'}); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
