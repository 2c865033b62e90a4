"""Command line: ``python -m simulations.report RUNS_CSV [--out DIR] [--title T]``.

This module owns the command line that regenerates a sweep's report from its ``runs.csv``
alone (plus ``settings.json`` beside it, when present) and prints the paths written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import simulations.report
from simulations.report.index import write_report
from simulations.report.runs_table import read_runs_csv

__all__ = ["main"]


def _read_settings_beside(runs_csv: Path) -> dict[str, object]:
    settings_path = runs_csv.parent / "settings.json"
    if not settings_path.is_file():
        return {}
    settings = json.loads(settings_path.read_text())
    if not isinstance(settings, dict):
        raise ValueError(f"{settings_path} must hold a JSON object, got {type(settings).__name__}")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the report from a ``runs.csv`` and print the paths written.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0; argument errors exit through :mod:`argparse`).
    """
    parser = argparse.ArgumentParser(prog="python -m simulations.report", description=simulations.report.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_csv", type=Path, metavar="RUNS_CSV", help="the sweep's runs.csv")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: report/ beside RUNS_CSV)")
    parser.add_argument("--title", default=None, help="report title (default: named after RUNS_CSV's folder)")
    args = parser.parse_args(argv)
    runs_csv: Path = args.runs_csv.resolve()
    if not runs_csv.is_file():
        parser.error(f"{runs_csv} does not exist")
    runs = read_runs_csv(runs_csv)
    if not runs:
        parser.error(f"{runs_csv} holds no runs")
    files = write_report(
        runs,
        out_dir=args.out if args.out is not None else runs_csv.parent / "report",
        title=args.title if args.title is not None else f"Sweep {runs_csv.parent.name}",
        settings=_read_settings_beside(runs_csv),
    )
    for path in files.written():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
