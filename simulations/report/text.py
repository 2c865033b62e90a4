"""Text shared by every table of the report: number and list formatting, and the header.

This module owns how knobs, byte counts and lists of values are spelled, and the header block
(:func:`header_block`) that opens every Markdown table, naming the data, seeds, model
selection, rounds and common run settings behind each number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from simulations.report.runs import MIXUP, encoding, is_comparator, method, method_label, seeds

__all__ = ["demote_headings", "header_block", "human_bytes", "integers_text", "knob", "mib_number", "raw_number",
           "settings_text", "taus_text", "texts"]


def knob(value: float) -> str:
    """β or ρ as the paper prints them: 1.0, 0.5, 0.1, 0.01."""
    return f"{value:.1f}" if float(value).is_integer() else f"{value:g}"


def human_bytes(num_bytes: float | None) -> str:
    """A byte count in B, KiB, MiB or GiB ("–" when missing)."""
    if num_bytes is None:
        return "–"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(num_bytes) >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes:.0f} B"


def mib_number(num_bytes: float) -> str:
    """A byte count in MiB without the unit (two decimals, or two significant digits when tiny)."""
    mebibytes = num_bytes / 2**20
    return f"{mebibytes:,.2f}" if abs(mebibytes) >= 0.01 or mebibytes == 0 else f"{mebibytes:.2g}"


def integers_text(values: Iterable[int]) -> str:
    """Distinct integers: listed when up to four, else as a range."""
    distinct = sorted(set(values))
    if not distinct:
        return "–"
    if len(distinct) <= 4:
        return ", ".join(str(v) for v in distinct)
    return f"{distinct[0]}–{distinct[-1]}"


def texts(values: Iterable[object], *, empty: str = "–") -> str:
    """Distinct non-empty values in order of first appearance, comma-separated."""
    distinct = []
    for value in values:
        if value not in (None, "") and value not in distinct:
            distinct.append(value)
    return ", ".join(str(v) for v in distinct) if distinct else empty


def taus_text(runs: Iterable[dict]) -> str:
    """The distinct tau values of ``runs`` (runs without calibrated noise have none)."""
    return texts(f"{run['tau']:g}" for run in runs if run["tau"] is not None)


def raw_number(value: float | None) -> object:
    """A number for a CSV cell: integral values as integers, None as an empty cell."""
    if value is None:
        return ""
    return int(value) if float(value).is_integer() else value


def settings_text(settings: Mapping[str, object]) -> str:
    """The sweep's common run settings as inline code, ``key = JSON value``."""
    if not settings:
        return "none recorded (no settings.json beside runs.csv)"

    def literal(value: object) -> str:
        try:
            return json.dumps(value)
        except TypeError:
            return str(value)

    return ", ".join(f"`{key} = {literal(value)}`" for key, value in settings.items())


def demote_headings(markdown: str) -> str:
    """Every Markdown heading one level down (a table page becomes a section of the index)."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines()) + "\n"


def _comparator_line(name: str, runs: Sequence[dict]) -> str:
    """What a comparator encoding's rows are, from its registry entry and its runs' columns."""
    encoding_ = encoding(name)
    parts = []
    if any(run["instahide_k"] is not None for run in runs):
        parts.append(f"k = {texts(r['instahide_k'] for r in runs)} samples per encoded row, "
                     f"k_private = {texts(r['instahide_k_private'] for r in runs)} of them private (the rest "
                     "from the public pool)")
    if encoding_.compares_absolute_values:
        parts.append("random sign mask")
    if not encoding_.has_calibrated_noise:
        parts.append("no noise")
    return f"- {encoding_.label}: " + (", ".join(parts) or "a comparator encoding, not the paper's method")


def tau_text(mixup_runs: Sequence[dict]) -> str:
    """tau as the tables print it: nominal in the clamped mode, with the measured SNR beside it."""
    if not mixup_runs:
        return "tau = n/a"
    snrs = [r["snr_pc1_mean"] for r in mixup_runs if r.get("snr_pc1_mean") is not None]
    measured = (f"measured directional SNR along PC1 {min(snrs):.3g}-{max(snrs):.3g}" if snrs
                else "measured SNR not recorded")
    if any(r["noise_mode"] == "clamped" for r in mixup_runs):
        return (f"tau = {taus_text(mixup_runs)} NOMINAL (clamped noise: Theorem 2 does not hold), {measured}")
    return f"tau = {taus_text(mixup_runs)}, {measured}"


def test_set_text(runs: Sequence[dict]) -> str:
    """The test set's size and one sample's weight in accuracy points."""
    sizes = sorted({int(r["test_rows"]) for r in runs if r.get("test_rows")})
    if not sizes:
        return "size not recorded (runs of an older version)"
    per = ", ".join(f"{100 / n:.2f}" for n in sizes)
    where = " drawn from each run's seed" if {r["dataset"] for r in runs} == {"digits"} else ""
    return (f"{', '.join(str(n) for n in sizes)} samples{where}; one sample = {per} accuracy points")


def header_block(*, title: str, heading: str, runs: Sequence[dict], settings: Mapping[str, object],
                 lines_before_settings: Sequence[str] = ()) -> list[str]:
    """Markdown lines naming how every number below was made.

    Parameters
    ----------
    title, heading : str
        The page's heading is ``# {title}: {heading}``.
    runs : sequence of dict
        The typed runs the page's numbers come from.
    settings : mapping
        Run-config values common to the sweep.
    lines_before_settings : sequence of str, optional
        Page-specific bullet lines, placed before the common settings.

    Returns
    -------
    list of str
        The heading, a bullet list and a blank line.
    """
    seed_list = seeds(runs)
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        by_method.setdefault(method(run), []).append(run)
    rules = {r["selection"] for r in runs}
    if len(rules) == 1:
        selection = f"`selection = {next(iter(rules))}` for every method ({texts(r['selected_by'] for r in runs)})"
    else:
        selection = "DIFFERENT RULES, no Δ between them: " + "; ".join(
            f"{method_label(name)}: {texts(r['selection'] for r in members)}" for name, members in by_method.items())
    rounds = "; ".join(
        f"{method_label(name)} {integers_text(r['rounds'] for r in members)}" for name, members in by_method.items()
    )
    # One-shot methods (singularized mixup and its comparators) select a server epoch.
    selected_at = "; ".join(
        f"{method_label(name)} "
        f"{'epoch' if members[0]['strategy'] == MIXUP else 'round'} {integers_text(r['selected_at'] for r in members)}"
        for name, members in by_method.items()
    )
    mixup_runs = by_method.get(MIXUP, [])
    comparator_runs = [run for run in runs if is_comparator(run)]
    public_fractions = sorted({r["public_fraction"] for r in runs if r["public_fraction"] is not None})
    extra_lines = [_comparator_line(name, members) for name, members in by_method.items()
                   if is_comparator(members[0])]
    if comparator_runs or any(fraction > 0 for fraction in public_fractions):
        extra_lines.append(
            f"- Public pool: public-fraction = {texts(f'{f:g}' for f in public_fractions)} of the training split "
            "held out before partitioning (no party holds it)")
    return [
        f"# {title}: {heading}",
        "",
        f"- Data set: `{texts(r['dataset'] for r in runs)}`; backbone: `{texts(r['backbone'] for r in runs)}`",
        f"- Singularized mixup: noise mode `{texts((r['noise_mode'] for r in mixup_runs), empty='n/a')}`, "
        f"{tau_text(mixup_runs)}",
        *extra_lines,
        f"- Seeds: {', '.join(str(s) for s in seed_list) or '–'} ({len(seed_list)} "
        f"seed{'s' if len(seed_list) != 1 else ''}); accuracy cells are the mean and its 95 % interval over seeds "
        "(Student's t); Δ is paired per seed (both arms saw the same partition, split and test set)",
        f"- Test set: {test_set_text(runs)}",
        "- Accuracy: test accuracy (%) of the model the selection rule reports (the test set never chooses); "
        "the last round/epoch accuracy is beside it in one_shot_vs_iterative.md",
        f"- Model selection: {selection or '–'}",
        f"- Communication rounds: {rounds or '–'}; selected at: {selected_at or '–'}",
        *lines_before_settings,
        f"- Run settings common to the sweep: {settings_text(settings)}",
        "",
    ]
