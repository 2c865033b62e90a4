"""Run summaries: one JSON file per run, and a short table in the log.

Every accuracy is written next to how it was made: strategy, release mode, noise mode,
seed, and the rule that selected the model (lowest validation loss, never test accuracy).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from collections.abc import Iterable
from pathlib import Path


def mean_max(values: Iterable[float]) -> dict[str, float]:
    vals = [float(v) for v in values]
    if not vals:
        return {}
    return {
        "mean": statistics.fmean(vals),
        "max": max(vals),
        "min": min(vals),
        "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
    }


def write_json_atomic(path: Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` through a temporary file, so no half-written summary
    is ever seen by a reader (a sweep resuming, say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=_jsonable, allow_nan=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def _jsonable(value):  # noqa: ANN001, ANN202
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _fmt_bytes(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return f"{num:.1f} {unit}" if unit != "B" else f"{int(num)} B"
        num /= 1024
    return f"{num:.1f} GiB"


def _fmt_float(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3g}"


def table_lines(summary: dict) -> list[str]:
    """A few aligned lines that say what ran, how, and what came out."""
    comm = summary["communication"]
    acc = summary["result"]
    rows = [
        ("strategy", summary["strategy"]),
        ("data / parties", f"{summary['config']['dataset']}, P = {summary['num_parties']}, "
         f"{summary['config']['partitioner']} beta = {summary['config']['beta']}"),
        ("seed", str(summary["config"]["seed"])),
        ("test accuracy", f"{100 * acc['test_accuracy']:.2f} %  ({acc['selected_by']})"),
        ("rounds", str(summary["rounds"])),
        ("uploaded / downloaded", f"{_fmt_bytes(comm['bytes_uploaded'])} / {_fmt_bytes(comm['bytes_downloaded'])}"),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
    ]
    privacy = summary.get("privacy")
    if privacy and privacy.get("encoding") == "instahide":
        exposures = privacy["exposures_per_private_sample"]["as_private_component"]
        rows.insert(3, ("encoding / release", f"InstaHide k = {privacy['k']} (k_private = {privacy['k_private']}, "
                        f"public pool {privacy['public_pool_size']['max']:g} rows) / {privacy['release_mode']}, "
                        f"each private sample in {exposures['max']:g} encoded rows; no calibrated noise"))
        rows.append((
            "re-identification",
            f"{100 * privacy['reidentification_rate']['mean']:.1f} % of released rows (|x~|) nearest to |x| of one "
            f"of their private sources (max party {100 * privacy['reidentification_rate']['max']:.1f} %)",
        ))
    elif privacy:
        exposures = privacy.get("exposures_per_private_sample", {}).get("as_clean_component", {})
        exposed = f", each private sample exposed {exposures['max']:g}x" if exposures else ""
        rows.insert(3, ("release / noise mode", f"{privacy['release_mode']}{exposed} / {privacy['noise_mode']}"))
        rows.append((
            "tau vs measured SNR",
            f"tau = {_fmt_float(privacy['tau'])}; SNR along PC1 mean {_fmt_float(privacy['snr_pc1']['mean'])}, "
            f"max {_fmt_float(privacy['snr_pc1']['max'])} (Thm 2 bound {_fmt_float(privacy['snr_bound_pc1']['max'])})",
        ))
    if privacy and privacy.get("encoding") != "instahide" and privacy.get("reidentification_rate"):
        rows.append((
            "re-identification",
            f"{100 * privacy['reidentification_rate']['mean']:.1f} % of released rows nearest to one of their "
            f"sources (max party {100 * privacy['reidentification_rate']['max']:.1f} %); Theorem 1 bound on the "
            f"weakest sample's MSE / mean energy: {_fmt_float(privacy['theorem1_relative_min']['min'])}",
        ))
    defence = summary.get("defence") or {}
    if defence.get("defence") == "fed-augmix":
        rows.insert(3, ("defence", f"Fed-AugMix, severity {defence['augmix']['severity']:g}, lambda "
                        f"{defence['js_weight']:g}" + (", loss scaling" if defence.get("loss_scaling") else "")
                        + "; no formal guarantee"))
    elif defence.get("defence", "none") != "none":
        eps = defence.get("epsilon_max")
        rows.insert(3, ("defence", f"{defence['defence']}: DP-SGD sigma = {defence['dp_sgd']['noise_multiplier']:g}, "
                        f"C = {defence['dp_sgd']['max_grad_norm']:g}; epsilon <= "
                        f"{'n/a' if eps is None else f'{eps:.2f}'} at delta = {defence['delta']:g} (worst party)"))
    width = max(len(k) for k, _ in rows)
    return [f"{k.ljust(width)} | {v}" for k, v in rows]
