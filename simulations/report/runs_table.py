"""The sweep's ``runs.csv``: its columns, and reading, writing and typing its rows.

This module owns the file format shared by the sweep runner (which writes it), the report
(which reads it back) and the comparison drivers: :data:`RUNS_CSV_COLUMNS`, the columns added
after the first files were written (and what their absence means), and the conversion of a
row to typed values (:func:`coerce_run`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from common.defences import DEFAULT_DEFENCE
from common.encodings import DEFAULT_ENCODING
from common.run_summary import RunRow
from simulations.report.runs import MIXUP

__all__ = ["RUNS_CSV_COLUMNS", "coerce_run", "read_runs_csv", "write_runs_csv"]

RUNS_CSV_COLUMNS: tuple[str, ...] = RunRow.columns()
"""Columns of the sweep runner's ``runs.csv``, in file order. ``encoding`` is the one-shot
strategy's encoding (a name of :data:`common.encodings.ENCODINGS`) and empty for the iterative
ones; ``defence`` is the iterative strategies' client-side defence (a name of
:data:`common.defences.DEFENCES`), empty for the one-shot strategy; ``instahide_k`` and
``instahide_k_private`` are empty except for InstaHide runs."""

# Columns added after runs.csv files were first written, with the value such a file means:
# before encodings existed every one-shot run was singularized mixup (coerce_run fills the
# encoding per row) and no public pool was held out.
_COLUMNS_ADDED_LATER: dict[str, object] = {
    "encoding": "", "instahide_k": None, "instahide_k_private": None, "public_fraction": 0.0, "defence": "",
    "selection": "", "test_rows": None, "label_skew": None,
}
# Before the selection key existed, one-shot runs were chosen on the mixed validation releases
# and the iterative ones on the parties' clean validation loss.
_SELECTION_BEFORE_THE_KEY = {MIXUP: "mixed-validation"}



def _columns_of(kind: object) -> frozenset[str]:
    """The columns whose type in :class:`common.run_summary.RunRow` is ``kind``."""
    return frozenset(name for name, info in RunRow.model_fields.items() if info.annotation == kind)


# Types come from the typed row: a column's type is declared once, in common.run_summary.
_INT_COLUMNS = _columns_of(int)
_FLOAT_COLUMNS = _columns_of(float)
# Empty where a run has no such figure (the FL strategies have no privacy mechanism to describe).
_OPTIONAL_FLOAT_COLUMNS = _columns_of(float | None)
_OPTIONAL_INT_COLUMNS = _columns_of(int | None)


def _parse_int(value: object, column: str, run_key: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"run {run_key}: column {column!r} holds a bool, expected an integer")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    # Some writers print integral numbers as "50.0"; accept those, nothing fractional.
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise ValueError(f"run {run_key}: column {column!r} = {value!r} is not an integer")
    return int(number)


def _parse_float(value: object, column: str, run_key: object, *, optional: bool) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise ValueError(f"run {run_key}: column {column!r} is empty")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"run {run_key}: column {column!r} = {value!r} is not a number") from None


def coerce_run(run: Mapping[str, object]) -> dict[str, object]:
    """One run with every column converted to its type.

    Parameters
    ----------
    run : mapping
        A run as the sweep runner holds it (typed) or as CSV gives it back (all strings).
        Converting an already typed run is a no-op, so both can be handed to
        :func:`~simulations.report.write_report`.

    Returns
    -------
    dict
        A new dict: integers for counts, floats for knobs and measurements, None for an empty
        optional number (``tau``, ``snr_pc1_mean``, ``instahide_k``, ...), strings otherwise
        (empty, never None). A run from before encodings existed (no ``encoding``, ``instahide_k``,
        ``instahide_k_private`` or ``public_fraction``) reads as singularized mixup (one-shot) with
        no public pool; ``encoding`` is always "" for the iterative strategies, and ``defence``
        always "" for the one-shot strategy.

    Raises
    ------
    ValueError
        If a column is missing or a required number is empty or unparsable.
    """
    run = {**_COLUMNS_ADDED_LATER, **run}
    missing = [column for column in RUNS_CSV_COLUMNS if column not in run]
    if missing:
        raise ValueError(f"run {run.get('run_key', '?')} lacks columns {missing}")
    run_key = run["run_key"]
    typed: dict[str, object] = dict(run)
    for column in RUNS_CSV_COLUMNS:
        value = run[column]
        if column in _INT_COLUMNS:
            typed[column] = _parse_int(value, column, run_key)
        elif column in _FLOAT_COLUMNS:
            typed[column] = _parse_float(value, column, run_key, optional=False)
        elif column in _OPTIONAL_FLOAT_COLUMNS:
            typed[column] = _parse_float(value, column, run_key, optional=True)
        elif column in _OPTIONAL_INT_COLUMNS:
            typed[column] = (None if value is None or (isinstance(value, str) and not value.strip())
                             else _parse_int(value, column, run_key))
        else:
            typed[column] = "" if value is None else str(value)
    # An empty cell means what a run config without the key means: the default variant
    # (runs from before defences existed were plain, those from before encodings singularized).
    typed["selection"] = typed["selection"] or _SELECTION_BEFORE_THE_KEY.get(typed["strategy"], "validation")
    if typed["strategy"] != MIXUP:
        typed["encoding"] = ""
        typed["defence"] = typed["defence"] or DEFAULT_DEFENCE
    else:
        typed["defence"] = ""
        typed["encoding"] = typed["encoding"] or DEFAULT_ENCODING
    return typed


def read_runs_csv(path: Path | str) -> list[dict[str, object]]:
    """Read a sweep's ``runs.csv`` back with typed values.

    Parameters
    ----------
    path : Path or str
        The CSV the sweep runner wrote (header row = :data:`RUNS_CSV_COLUMNS`).

    Returns
    -------
    list of dict
        One dict per run, converted by :func:`coerce_run`, in file order. Files written before
        the encoding columns existed still read (see :func:`coerce_run`).

    Raises
    ------
    ValueError
        If the header lacks a column that every ``runs.csv`` has had.
    """
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in RUNS_CSV_COLUMNS
                   if column not in (reader.fieldnames or []) and column not in _COLUMNS_ADDED_LATER]
        if missing:
            raise ValueError(f"{path}: header lacks columns {missing}")
        return [coerce_run(row) for row in reader]


def write_runs_csv(runs: Iterable[Mapping[str, object]], *, path: Path | str) -> Path:
    """Write runs in the ``runs.csv`` format that :func:`read_runs_csv` reads.

    Parameters
    ----------
    runs : iterable of mapping
        Runs with at least the :data:`RUNS_CSV_COLUMNS`; extra keys are dropped.
    path : Path or str
        Destination file (parents are created).

    Returns
    -------
    Path
        The file written. None values are written as empty cells; floats use ``repr`` so
        that they read back bit for bit.
    """
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Through a temporary file: a reader (or an interrupted sweep) never sees half a CSV.
    tmp = destination.with_name(destination.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RUNS_CSV_COLUMNS)
        for run in runs:
            writer.writerow(["" if run[column] is None else run[column] for column in RUNS_CSV_COLUMNS])
    os.replace(tmp, destination)
    return destination
