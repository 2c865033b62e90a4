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

From Python: ``run_sweep(load_sweep(path), out_dir=..., executor=FlowerExecutor(...),
overrides=...)``, then :func:`write_sweep_report`. Modules: :mod:`~simulations.sweep.spec` (sweep
files, ``--set``), :mod:`~simulations.sweep.plan` (runs, keys, rows), :mod:`~simulations.sweep.runner`
(the loop, lock, recovery, report) and :mod:`~simulations.sweep.cli` (the command line).
"""

from simulations.runtime.executor import Executor, FlowerExecutor
from simulations.sweep.cli import generate_cifar10, main
from simulations.sweep.plan import SweepRun, expand_runs, row_from_summary, run_key, unique_runs, validate_runs
from simulations.sweep.runner import (
    SweepOutcome,
    collect_rows,
    report_settings,
    run_and_report,
    run_sweep,
    write_sweep_report,
)
from simulations.sweep.spec import (
    DEFAULT_SWEEP,
    SWEEP_KEYS,
    SWEEPS_DIR,
    SweepError,
    SweepSpec,
    TableSpec,
    load_sweep,
    parse_overrides,
    select_tables,
    with_seeds,
)

__all__ = [
    "DEFAULT_SWEEP", "Executor", "FlowerExecutor", "SWEEPS_DIR", "SWEEP_KEYS", "SweepError", "SweepOutcome",
    "SweepRun", "SweepSpec", "TableSpec", "collect_rows", "expand_runs", "generate_cifar10", "load_sweep", "main",
    "parse_overrides", "report_settings", "row_from_summary", "run_and_report", "run_key", "run_sweep",
    "select_tables", "unique_runs", "validate_runs", "with_seeds", "write_sweep_report",
]
