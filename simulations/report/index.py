"""The report's index: which tables and plots a sweep calls for, and ``report.md``.

This module owns :func:`write_report` (the entry point the sweep runner calls) and
:class:`ReportFiles` (the paths it wrote). It decides which runs each part is made of:
defended runs are left out entirely (they have their own comparison,
:mod:`simulations.studies.defence_compare`); comparator-encoding runs go only to Table 4 and the
one-shot vs iterative table; everything else fills the paper's tables, the release-mode
comparison and the plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from simulations.report.one_shot_vs_iterative import (
    one_shot_vs_iterative_markdown,
    one_shot_vs_iterative_rows,
    write_one_shot_vs_iterative_csv,
)
from simulations.report.plots import plot_accuracy_vs_knob, plot_fl_rounds
from simulations.report.release_modes import release_modes_markdown
from simulations.report.runs import FL_STRATEGIES, LAYOUTS, MIXUP, is_comparator, is_defended
from simulations.report.runs_table import coerce_run
from simulations.report.table4 import table4, write_table4_csv
from simulations.report.tables_5_6 import paper_table_markdown
from simulations.report.text import demote_headings, settings_text

__all__ = ["ReportFiles", "write_report"]


@dataclass(frozen=True, kw_only=True)
class ReportFiles:
    """Paths :func:`write_report` wrote; None for a part the runs did not call for.

    Attributes
    ----------
    table4_md, table4_csv : Path or None
        Each comparator encoding (InstaHide) vs singularized mixup (the paper's Table 4
        comparison), written only when some run used a comparator encoding.
    table5, table6 : Path or None
        The paper-layout tables, written only for layouts present in the runs.
    release_modes : Path or None
        Written only if some one-shot run released per epoch.
    one_shot_vs_iterative_md, one_shot_vs_iterative_csv : Path
        Per-arm accuracy, rounds, bytes and wall time.
    accuracy_vs_beta, accuracy_vs_rho, fedprox_rounds : Path or None
        PNG plots, written only when their layout (or any FL run) is present.
    report : Path
        The index page that includes every table and links every plot.
    """

    table4_md: Path | None
    table4_csv: Path | None
    table5: Path | None
    table6: Path | None
    release_modes: Path | None
    one_shot_vs_iterative_md: Path
    one_shot_vs_iterative_csv: Path
    accuracy_vs_beta: Path | None
    accuracy_vs_rho: Path | None
    fedprox_rounds: Path | None
    report: Path

    def written(self) -> tuple[Path, ...]:
        """Every path written, in report order."""
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)


def write_report(runs: Sequence[Mapping[str, object]], *, out_dir: Path, title: str,
                 settings: Mapping[str, object]) -> ReportFiles:
    """Write the sweep's tables and plots into ``out_dir``.

    Parameters
    ----------
    runs : sequence of mapping
        One mapping per run with the :data:`~simulations.report.RUNS_CSV_COLUMNS`, typed or as
        strings from CSV.
    out_dir : Path
        Destination folder (created if needed); existing report files are overwritten.
    title : str
        Leads every Markdown heading and plot title.
    settings : mapping
        Run-config values common to the sweep; printed in every Markdown header so that each
        number names how it was made.

    Returns
    -------
    ReportFiles
        The paths written.

    Raises
    ------
    ValueError
        If ``runs`` is empty, a run lacks a column, or every run used a client-side defence.
    common.registry.UnknownVariant
        If a run names an encoding or defence that is not registered.

    Notes
    -----
    Runs of a comparator encoding (one whose registry entry has ``paper_tables`` false, e.g.
    InstaHide) appear only in ``table4`` and as their own arm in ``one_shot_vs_iterative``; the
    paper tables, the release-mode comparison and the plots are made of singularized mixup and
    the plain FL strategies alone.
    """
    if not runs:
        raise ValueError("no runs to report on")
    typed = [coerce_run(run) for run in runs]
    # The paper tables, release modes and plots compare singularized mixup with plain FL only;
    # the defences have their own comparison (simulations.studies.defence_compare).
    typed = [run for run in typed if not is_defended(run)]
    if not typed:
        raise ValueError("every run used a client-side defence: see simulations.studies.defence_compare for their report")
    paper_runs = [run for run in typed if not is_comparator(run)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layouts = {run["layout"] for run in paper_runs}
    sections: list[tuple[str, str]] = []  # (file name, markdown) in report order
    extra_links: dict[str, str] = {}  # Markdown file -> its CSV, for the index

    paths: dict[str, Path | None] = {
        "table4_md": None, "table4_csv": None, "table5": None, "table6": None, "release_modes": None,
        "accuracy_vs_beta": None, "accuracy_vs_rho": None, "fedprox_rounds": None,
    }
    if len(paper_runs) < len(typed):
        markdown, table4_rows = table4(typed, title=title, settings=settings)
        paths["table4_md"], paths["table4_csv"] = out_dir / "table4.md", out_dir / "table4.csv"
        paths["table4_md"].write_text(markdown)
        write_table4_csv(table4_rows, path=paths["table4_csv"])
        sections.append((paths["table4_md"].name, markdown))
        extra_links[paths["table4_md"].name] = paths["table4_csv"].name
    for layout in LAYOUTS:
        if layout in layouts:
            markdown = paper_table_markdown(paper_runs, layout=layout, title=title, settings=settings)
            paths[layout] = out_dir / f"{layout}.md"
            paths[layout].write_text(markdown)
            sections.append((paths[layout].name, markdown))
    if any(run["strategy"] == MIXUP and run["release"] == "per-epoch" for run in paper_runs):
        markdown = release_modes_markdown(paper_runs, title=title, settings=settings)
        paths["release_modes"] = out_dir / "release_modes.md"
        paths["release_modes"].write_text(markdown)
        sections.append((paths["release_modes"].name, markdown))

    comparison_rows = one_shot_vs_iterative_rows(typed)
    comparison_md = out_dir / "one_shot_vs_iterative.md"
    comparison_csv = out_dir / "one_shot_vs_iterative.csv"
    markdown = one_shot_vs_iterative_markdown(comparison_rows, typed, title=title, settings=settings)
    comparison_md.write_text(markdown)
    write_one_shot_vs_iterative_csv(comparison_rows, path=comparison_csv)
    sections.append((comparison_md.name, markdown))

    plots: list[tuple[str, Path]] = []
    if "table5" in layouts:
        paths["accuracy_vs_beta"] = out_dir / "accuracy_vs_beta.png"
        plot_accuracy_vs_knob(paper_runs, layout="table5", path=paths["accuracy_vs_beta"], title=title,
                              settings=settings)
        plots.append(("Test accuracy vs Dirichlet β (Table 5 layout)", paths["accuracy_vs_beta"]))
    if "table6" in layouts:
        paths["accuracy_vs_rho"] = out_dir / "accuracy_vs_rho.png"
        plot_accuracy_vs_knob(paper_runs, layout="table6", path=paths["accuracy_vs_rho"], title=title,
                              settings=settings)
        plots.append(("Test accuracy vs size ratio ρ (Table 6 layout)", paths["accuracy_vs_rho"]))
    if any(run["strategy"] in FL_STRATEGIES for run in paper_runs):
        paths["fedprox_rounds"] = out_dir / "fedprox_rounds.png"
        plot_fl_rounds(paper_runs, path=paths["fedprox_rounds"], title=title)
        plots.append(("Federated test accuracy per round", paths["fedprox_rounds"]))

    # Each CSV is linked right after the Markdown table it belongs to.
    csv_beside = {**extra_links, comparison_md.name: comparison_csv.name}
    links = [link for name, _ in sections for link in (name, csv_beside.get(name)) if link]
    index = [f"# {title}", "", f"Run settings common to the sweep: {settings_text(settings)}", "",
             "Files: " + ", ".join(f"[{name}]({name})" for name in links), ""]
    for _, markdown in sections:
        index.append(demote_headings(markdown))
    if plots:
        index += ["## Plots", ""]
        for caption, plot in plots:
            index += [f"![{caption}]({plot.name})", ""]
    report = out_dir / "report.md"
    figures = sorted((out_dir / "partitions").glob("*.png")) if (out_dir / "partitions").is_dir() else []
    if figures:
        index += ["## Partitions", "",
                  "Class counts per party of every cell and seed (the data-poor party hatched), with each party's "
                  "total-variation distance from the global label mix: "
                  + ", ".join(f"[{path.stem}](partitions/{path.name})" for path in figures), ""]
    report.write_text("\n".join(index))
    return ReportFiles(
        table4_md=paths["table4_md"], table4_csv=paths["table4_csv"],
        table5=paths["table5"], table6=paths["table6"], release_modes=paths["release_modes"],
        one_shot_vs_iterative_md=comparison_md, one_shot_vs_iterative_csv=comparison_csv,
        accuracy_vs_beta=paths["accuracy_vs_beta"], accuracy_vs_rho=paths["accuracy_vs_rho"],
        fedprox_rounds=paths["fedprox_rounds"], report=report,
    )
