"""What every study shares: its output folder and index page, its sweep step, and the helpers
its tables and figures are made with.

* :class:`Study`: the output folder; :meth:`Study.sweep` runs the study's accuracy sweep through
  the sweep's Python API (:func:`simulations.sweep.run_and_report`: resumable, and its report
  written beside the study's files with its index named ``sweep_report.md``, so the study's
  own ``report.md`` is never written over); :meth:`Study.write_index` writes ``report.md``;
  :meth:`Study.add_sweep_arguments` / :meth:`Study.load_sweep_arguments`: the command-line
  options of a study that runs a sweep file.
* Figures: :func:`spread` (mean, std, min, max, n of the values there are, via
  :func:`common.stats.describe`) and :func:`fmt_spread` ("mean ± std").
* Files: :func:`write_csv`, :func:`embed` (a Markdown page as a section of the index) and
  :func:`write_image_grid` (the one panel figure: rows of images with their labels).
* LPIPS: :func:`add_lpips_arguments` and :func:`load_lpips` (calibrated, uncalibrated or missing,
  and the sentence every table prints about it).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from common.io import write_text_atomic
from common.stats import describe
from simulations.runtime.executor import Executor, FlowerExecutor
from simulations.runtime.local_flower import PROJECT_ROOT, flower_env
from simulations.sweep import (
    SweepSpec,
    load_sweep,
    parse_overrides,
    report_settings,
    run_and_report,
    with_seeds,
)

__all__ = [
    "SWEEP_REPORT", "Lpips", "Study", "StudyError", "add_lpips_arguments", "embed", "fmt_spread", "load_lpips",
    "set_threads", "spread", "write_csv", "write_image_grid",
]

SWEEP_REPORT = "sweep_report.md"
"""The name of the sweep's own index page in a study's folder (``report.md`` is the study's)."""


class StudyError(ValueError):
    """A study that cannot run as asked; the message says why."""


class Study:
    """A study's output folder, its sweep step and its index page.

    Parameters
    ----------
    out : Path
        The output folder (created when something is written).
    module : str
        The study's module under :mod:`simulations.studies`, for the command its index names.
    progress : bool
        Draw progress bars.
    """

    def __init__(self, out: Path, *, module: str, progress: bool = True) -> None:
        self.out = Path(out).resolve()
        self.command = f"python -m simulations.studies.{module}"
        self.progress = progress

    @staticmethod
    def add_sweep_arguments(parser: argparse.ArgumentParser, *, default_file: Path, skip_help: str) -> None:
        """The options of a study that runs a sweep file: the file, ``--out``, ``--seeds``,
        ``--set``, ``--skip-sweep`` and ``--no-progress``."""
        parser.add_argument("sweep_file", nargs="?", type=Path, default=default_file,
                            help=f"sweep TOML (default {default_file.relative_to(PROJECT_ROOT)})")
        parser.add_argument("--out", type=Path, help="output folder (default runs/<sweep name>)")
        parser.add_argument("--seeds", type=int, nargs="+", help="replace the file's seeds")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="run-config value for every run (passed to the sweep), repeatable")
        parser.add_argument("--skip-sweep", action="store_true", help=skip_help)
        parser.add_argument("--no-progress", action="store_true")

    @classmethod
    def load_sweep_arguments(cls, args: argparse.Namespace, *, module: str) -> tuple[Study, SweepSpec, dict]:
        """The study (output folder ``--out``, default ``runs/<sweep name>``), the sweep file with
        ``--seeds`` applied and the ``--set`` values. Raises ``SweepError`` or ``ValueError``."""
        spec = with_seeds(load_sweep(args.sweep_file), args.seeds)
        overrides = parse_overrides(args.overrides)
        out = args.out or PROJECT_ROOT / "runs" / spec.name
        return cls(out, module=module, progress=not args.no_progress), spec, overrides

    def sweep(self, spec: SweepSpec, *, overrides: Mapping[str, Any] | None = None,
              executor: Executor | None = None, timeout: float = 3 * 3600) -> int:
        """Run (or resume) the study's sweep in :attr:`out` and write its report there, the
        sweep's index as :data:`SWEEP_REPORT`; the exit status of
        :func:`simulations.sweep.run_and_report` (0 when every run finished)."""
        if executor is None:
            executor = FlowerExecutor(env=flower_env(), timeout=timeout)
        overrides = dict(overrides or {})
        return run_and_report(spec, out_dir=self.out, executor=executor, overrides=overrides,
                              settings=report_settings(spec, overrides), progress=self.progress,
                              index_name=SWEEP_REPORT)

    def write_index(self, lines: Iterable[str]) -> Path:
        """The study's ``report.md``."""
        return write_text_atomic(self.out / "report.md", "\n".join(lines) + "\n")


def set_threads() -> None:
    """Torch threads for the attacks: the cores there are, at most 4."""
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


# --------------------------------------------------------------------------- figures, files


def spread(values: Iterable[float | None], *, ddof: int, finite_only: bool = True) -> dict[str, float] | None:
    """Mean, std (divisor ``n - ddof``), min, max and n of the values that were computed
    (``None`` and NaN are left out, and with ``finite_only`` infinite values too); ``None``
    when there are none. See :func:`common.stats.describe`."""
    vals = [float(v) for v in values if v is not None and not np.isnan(float(v))]
    described = describe(vals, ddof=ddof, finite_only=finite_only)
    return None if described is None else described.as_dict()


def fmt_spread(value: Mapping[str, float] | None, digits: int = 2, *, missing: str = "n/a", scale: float = 1,
               unit: str = "", std_of_one: bool = True) -> str:
    """``mean ± std`` of a :func:`spread` (times ``scale``, then ``unit``); ``missing`` for none.
    ``std_of_one=False`` leaves the std out when there was a single value."""
    if value is None or value.get("mean") is None:
        return missing
    text = f"{scale * value['mean']:.{digits}f}"
    if std_of_one or value.get("n", 2) > 1:
        text += f" ± {scale * value['std']:.{digits}f}"
    return text + unit


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str] | None = None) -> Path:
    """``rows`` as CSV, atomically; the columns are ``columns`` (other keys left out) or the
    first row's keys."""
    buffer = io.StringIO(newline="")
    if columns is None:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    else:
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


def embed(markdown: str) -> str:
    """A page as a section of an index: its top-level headings one level down."""
    return ("\n" + markdown).replace("\n# ", "\n## ").lstrip("\n")


def write_image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
    *,
    path: Path,
    cell: tuple[float, float],
    margin: tuple[float, float] = (0.0, 0.0),
    column_titles: Sequence[str] | None = None,
    title: str | None = None,
    title_size: float = 9,
    labels: Literal["left", "left-horizontal", "above"] = "left",
    frame: bool = True,
    fixed_range: bool = True,
) -> Path:
    """One PNG of image panels: a row per ``(label, images)``, a column per image.

    Images are ``(H, W)`` (grey) or ``(H, W, C)`` arrays already scaled for display (``None``
    leaves a cell empty). ``fixed_range`` shows grey values on [0, 1], else on each image's own
    range. ``labels``: the row label left of the row, left and horizontal, or above its first
    image. ``frame=False`` hides the axes entirely. The figure is ``cell`` inches per image plus
    ``margin``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell[0] * ncols + margin[0], cell[1] * len(rows) + margin[1]),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            if not frame:
                ax.axis("off")
            image = images[c] if c < len(images) else None
            if image is not None:
                shown = {"vmin": 0, "vmax": 1} if fixed_range else {}
                ax.imshow(image, cmap="gray" if image.ndim == 2 or fixed_range else None, **shown)
            if frame:
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0 and column_titles is not None:
                ax.set_title(column_titles[c], fontsize=9)
            if c == 0 and labels == "left":
                ax.set_ylabel(label, fontsize=7)
            elif c == 0 and labels == "left-horizontal":
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        if labels == "above":
            axes[r][0].set_title(label, fontsize=7, loc="left")
    if title is not None:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ LPIPS


@dataclass(frozen=True)
class Lpips:
    """The LPIPS metric of a study (``None`` when not computed), its state and how tables name it."""

    metric: Any
    state: Literal["calibrated", "uncalibrated", "missing"]
    text: str


def add_lpips_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lpips-weights", help="absolute path of a torchvision AlexNet state_dict for LPIPS")
    parser.add_argument("--lpips-uncalibrated", action="store_true",
                        help="compute LPIPS with a randomly initialised AlexNet (mechanics only; labelled)")


def load_lpips(args: argparse.Namespace, *, value_range: Any, uncalibrated_note: str, device: str = "cpu") -> Lpips:
    """The metric ``--lpips-weights`` / ``--lpips-uncalibrated`` ask for; ``StudyError`` when
    the weights cannot be read. ``uncalibrated_note`` ends the uncalibrated sentence."""
    from attacks.lpips_metric import LpipsMetric, LpipsWeightsMissing

    try:
        if args.lpips_weights:
            metric = LpipsMetric(backbone_weights=args.lpips_weights, device=device, value_range=value_range)
            return Lpips(metric, "calibrated", f"AlexNet LPIPS, backbone weights {args.lpips_weights}")
        if args.lpips_uncalibrated:
            metric = LpipsMetric(backbone_weights=None, allow_random_backbone=True, device=device,
                                 value_range=value_range)
            return Lpips(metric, "uncalibrated", "UNCALIBRATED: AlexNet backbone randomly initialised (no ImageNet "
                         f"weights here); {uncalibrated_note}")
    except (LpipsWeightsMissing, OSError, ValueError) as err:
        raise StudyError(str(err)) from None
    return Lpips(None, "missing", "not computed (no backbone weights; --lpips-weights PATH)")
