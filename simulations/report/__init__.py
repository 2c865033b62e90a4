"""Report for a sweep that reproduces the paper's Tables 5 and 6 (section 5.3).

Input is the sweep runner's ``runs.csv`` (one row per run, columns :data:`RUNS_CSV_COLUMNS`);
output is a folder of Markdown tables, CSVs and PNG plots:

* ``table4.md`` / ``.csv`` (only when some run used a comparator encoding, i.e. InstaHide): the
  paper's Table 4 comparison, the comparator against singularized mixup on the same partitions,
  one column per cell, Δ = singularized - comparator, the paper's numbers when the data set and
  backbone are the paper's, and a plain count of the cells in which singularized mixup is ahead.
* ``table5.md`` / ``table6.md``: the paper's layout, mean ± std over seeds, Δ = mixup - FedProx,
  the paper's own numbers beside ours when the sweep ran the paper's setting (CIFAR-10 on a
  frozen ResNet-18), and a plain count of the cells in which mixup is ahead. Only singularized
  mixup fills the mixup column, never a comparator run.
* ``release_modes.md``: release "once" against "per-epoch" for the cells that ran both
  (singularized mixup).
* ``one_shot_vs_iterative.md`` / ``.csv``: accuracy, rounds, bytes and wall time per arm
  (a comparator encoding, where it ran, is an arm of its own).
* ``accuracy_vs_beta.png``, ``accuracy_vs_rho.png``, ``fedprox_rounds.png``.
* ``report.md``: all of the above in one page.

Runs of a client-side defence are left out (see :mod:`simulations.studies.defence_compare`).

Regenerate from a finished (or partly finished) sweep::

    python -m simulations.report runs/sweep/runs.csv --out runs/sweep/report --title "digits sweep"

Run settings common to the sweep are read from ``settings.json`` beside the CSV when present.

Modules: :mod:`~simulations.report.runs_table` (the ``runs.csv`` format),
:mod:`~simulations.report.runs` (cells, arms, methods, grouping),
:mod:`~simulations.report.spreads` (spreads over seeds, Δ), :mod:`~simulations.report.text`
(formatting, table headers), :mod:`~simulations.report.paper_numbers` (the paper's numbers),
:mod:`~simulations.report.tables_5_6`, :mod:`~simulations.report.table4`,
:mod:`~simulations.report.release_modes`, :mod:`~simulations.report.one_shot_vs_iterative`,
:mod:`~simulations.report.plots`, :mod:`~simulations.report.index` (:func:`write_report`) and
``__main__`` (the command line).
"""

from simulations.report.index import ReportFiles, write_report
from simulations.report.one_shot_vs_iterative import ONE_SHOT_VS_ITERATIVE_COLUMNS
from simulations.report.runs_table import RUNS_CSV_COLUMNS, coerce_run, read_runs_csv, write_runs_csv
from simulations.report.table4 import TABLE4_CSV_COLUMNS

__all__ = [
    "ONE_SHOT_VS_ITERATIVE_COLUMNS", "RUNS_CSV_COLUMNS", "ReportFiles", "TABLE4_CSV_COLUMNS", "coerce_run",
    "read_runs_csv", "write_report", "write_runs_csv",
]
