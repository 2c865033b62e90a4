"""The sweep's command line (``python -m simulations.sweep``); see :mod:`simulations.sweep`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simulations.runtime.executor import Executor, FlowerExecutor
from simulations.runtime.local_flower import PROJECT_ROOT, flower_env
from simulations.sweep.plan import expand_runs, unique_runs, validate_runs
from simulations.sweep.runner import (
    SweepOutcome,
    collect_rows,
    report_outcome,
    report_settings,
    run_and_report,
    sweep_partitions,
)
from simulations.sweep.spec import DEFAULT_SWEEP, SweepError, load_sweep, parse_overrides, select_tables, with_seeds
from simulations.report import write_runs_csv

__all__ = ["generate_cifar10", "main"]


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


def _parser() -> argparse.ArgumentParser:
    import simulations.sweep

    parser = argparse.ArgumentParser(prog="python -m simulations.sweep", description=simulations.sweep.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return parser


def main(argv: list[str] | None = None, *, executor: Executor | None = None) -> int:
    """Run (or list, or report on) a sweep file; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        spec = with_seeds(load_sweep(args.sweep_file), args.seeds)
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
    settings = report_settings(spec, overrides)
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
        partitions = sweep_partitions(todo, out_dir=out_dir)
        outcome = SweepOutcome(planned=len(todo), rows=collect_rows(runs, summaries_dir=out_dir / "summaries",
                                                                    partitions=partitions))
        outcome.csv_path = write_runs_csv(outcome.rows, path=out_dir / "runs.csv") if outcome.rows else None
        return report_outcome(outcome, spec=spec, out_dir=out_dir, settings=settings)
    if executor is None:
        executor = FlowerExecutor(env=flower_env(), timeout=args.timeout, gpu=args.gpu)
    return run_and_report(spec, out_dir=out_dir, executor=executor, overrides=overrides, settings=settings,
                          progress=not args.no_progress)
