"""The frontier's rows, fronts and statements: one record per run, one row per method setting
and cell (mean and 95 % Student-t interval over seeds), the Pareto front per leakage measure,
and whether a one-shot setting dominates FedProx or the reverse.

Pure functions of the runs' summaries and leakage records (no attacks, no Flower), so the
tests build them from fixtures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.run_summary import RunSummary
from common.stats import t_interval

__all__ = [
    "MEASURES", "Measure", "aggregate", "classify", "dominance_statements", "dominates", "front_statements",
    "interval", "pareto_front", "run_record",
]


@dataclass(frozen=True)
class Measure:
    """A leakage measure: its record key, its label, and how a table prints it."""

    key: str
    label: str
    short: str
    digits: int = 3
    log_scale: bool = False
    bounds: tuple[float, float] = (-math.inf, math.inf)


MEASURES: tuple[Measure, ...] = (
    Measure("mia_loss_auc", "membership AUC, loss threshold", "loss AUC", bounds=(0.0, 1.0)),
    Measure("mia_loss_tpr", "membership TPR at the low FPR, loss threshold", "loss TPR@FPR", bounds=(0.0, 1.0)),
    Measure("mia_lira_auc", "membership AUC, offline LiRA", "LiRA AUC", bounds=(0.0, 1.0)),
    Measure("mia_lira_tpr", "membership TPR at the low FPR, offline LiRA", "LiRA TPR@FPR", bounds=(0.0, 1.0)),
    Measure("recon_snr_gain", "reconstruction: centred SNR gain over the prior-only guess (dB)", "SNR gain (dB)", 2),
    Measure("recon_recovered", "reconstruction: share of attacked samples recovered (SSIM above the threshold)",
            "recovered", bounds=(0.0, 1.0)),
    Measure("reid", "re-identification: share of released rows nearest to one of their sources", "re-id",
            bounds=(0.0, 1.0)),
    Measure("epsilon", "DP epsilon (worst party; DP-Mix only)", "epsilon", 2, log_scale=True),
)
"""Every measure: higher = more leakage."""

# Method families in table order: (key, label, one-shot protocol?).
FAMILIES = {
    "singularized-strict-once": ("singularized mixup, strict noise, released once", True),
    "singularized-strict-per-epoch": ("singularized mixup, strict noise, released every epoch", True),
    "singularized-clamped-once": ("singularized mixup, clamped noise, released once", True),
    "singularized-clamped-per-epoch": ("singularized mixup, clamped noise, released every epoch", True),
    "instahide": ("InstaHide", True),
    "fedprox": ("FedProx", False),
    "fedprox+fed-augmix": ("FedProx + Fed-AugMix", False),
    "fedprox+dp-mix-self": ("FedProx + DP-Mix_self", False),
    "fedavg": ("FedAvg", False),
    "fedavg+fed-augmix": ("FedAvg + Fed-AugMix", False),
    "fedavg+dp-mix-self": ("FedAvg + DP-Mix_self", False),
    "pooled": ("reference: pooled clean data (no protection)", True),
    "local-only": ("reference: each party alone", False),
}
REFERENCES = ("pooled", "local-only")


def classify(summary: RunSummary) -> tuple[str, str, float]:
    """``(family, setting, order)`` of a run: the method, its setting in words, and a number
    that orders the settings of one family (tau, sigma)."""
    cfg = summary.config
    if summary.strategy == "local-only":
        return "local-only", "", 0.0
    privacy = summary.privacy
    if privacy is not None:
        if privacy.encoding == "pooled":
            return "pooled", "", 0.0
        if privacy.encoding == "instahide":
            return "instahide", f"k = {cfg.get('instahide-k')}, k_private = {cfg.get('instahide-k-private')}", 0.0
        if privacy.encoding == "singularized":
            tau = float(privacy.tau)
            nominal = ", nominal" if privacy.noise_mode == "clamped" else ""
            return f"singularized-{privacy.noise_mode}-{privacy.release_mode}", f"tau = {tau:g}{nominal}", tau
        return privacy.encoding, "", 0.0
    defence = summary.defence.defence if summary.defence is not None else "none"
    family = summary.strategy + ("" if defence == "none" else f"+{defence}")
    if defence.startswith("dp-mix"):
        sigma = float(cfg.get("dp-noise-multiplier", 1.0))
        return family, f"sigma = {sigma:g}", -sigma  # less noise = more leakage: order by -sigma
    return family, "", 0.0


def _cell(summary: RunSummary) -> tuple[int, float, float]:
    cfg = summary.config
    rho = float(cfg.get("rho", 1.0)) if cfg.get("partitioner") == "size-skew" else 1.0
    return summary.num_parties, float(cfg.get("beta", 1.0)), rho


def cell_label(cell: Sequence[float]) -> str:
    parties, beta, rho = cell
    return f"P = {parties}, beta = {beta:g}" + (f", rho = {rho:g}" if rho != 1.0 else "")


def run_record(summary: RunSummary, *, name: str, leakage: Mapping[str, Any]) -> dict[str, Any]:
    """One run's figures: accuracy, cost, and every leakage measure (``None`` where not defined)."""
    family, setting, order = classify(summary)
    membership = leakage.get("membership") or {}
    recon = leakage.get("reconstruction") or {}
    loss, lira = membership.get("loss") or {}, membership.get("lira") or {}
    local = getattr(summary, "local_only", None)
    local = local if isinstance(local, Mapping) else (local.model_dump() if local is not None else None)
    privacy = summary.privacy
    extra = (privacy.model_extra or {}) if privacy is not None else {}
    return {
        "name": name, "cell": _cell(summary), "seed": int(summary.config.get("seed", 0)), "family": family,
        "setting": setting, "order": order, "one_shot": summary.strategy == "one-shot-mixup",
        "accuracy": summary.result.test_accuracy,
        "worst_party_accuracy": None if not local else float(local["worst"]),
        "bytes_up": summary.communication.bytes_uploaded / summary.num_parties,
        "bytes_down": summary.communication.bytes_downloaded / summary.num_parties,
        "rounds": summary.rounds, "wall": summary.wall_seconds,
        "test_rows": summary.inputs.get("test_rows"), "selection": summary.result.selection,
        "noise_mode": privacy.noise_mode if privacy is not None else "",
        "snr_pc1": (extra.get("snr_pc1") or {}).get("mean"),
        "mia_loss_auc": loss.get("auc"), "mia_loss_tpr": loss.get("tpr_at_low_fpr"),
        "mia_lira_auc": lira.get("auc"), "mia_lira_tpr": lira.get("tpr_at_low_fpr"),
        "low_fpr": loss.get("low_fpr"), "members": loss.get("members"), "nonmembers": loss.get("nonmembers"),
        "reference_models": lira.get("reference_models"),
        "recon_snr_gain": recon.get("snr_gain_db"), "recon_recovered": recon.get("recovered_share"),
        "recon_raw_snr_gain": recon.get("raw_snr_gain_db"), "attack": recon.get("attack", ""),
        "recon_n": recon.get("n"), "reid": leakage.get("reidentification_rate"), "epsilon": leakage.get("epsilon"),
        "delta": leakage.get("delta"),
    }


# ------------------------------------------------------------------------------ aggregation


def interval(values: Iterable[float | None], *, bounds: tuple[float, float] = (-math.inf, math.inf)
             ) -> dict[str, float] | None:
    """Mean and 95 % Student-t interval over seeds of the values there are (``None`` when
    none), clipped to the quantity's range ``bounds`` (an accuracy cannot pass 100 %); one
    value has an infinite interval; infinite values (total exposure) give
    ``mean = low = high = inf``."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    if any(math.isinf(v) for v in vals):
        mean = sum(vals) / len(vals)
        return {"mean": mean, "low": mean, "high": mean, "n": len(vals)}
    got = t_interval(vals)
    low, high = (got.low, got.high) if got.n < 2 else (max(got.low, bounds[0]), min(got.high, bounds[1]))
    return {"mean": got.mean, "low": low, "high": high, "n": got.n}


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (cell, family, setting): the mean and interval over seeds of the
    accuracy and of every measure, the mean cost, sorted by cell, family, setting."""
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(tuple(r["cell"]), r["family"], r["setting"])].append(r)
    order = {f: i for i, f in enumerate(FAMILIES)}
    rows = []
    for (cell, family, setting), rs in groups.items():
        label, one_shot = FAMILIES.get(family, (family, rs[0]["one_shot"]))
        row = {
            "cell": cell, "cell_label": cell_label(cell), "family": family, "label": label, "setting": setting,
            "order": rs[0]["order"], "reference": family if family in REFERENCES else None,
            "one_shot": one_shot, "seeds": sorted({r["seed"] for r in rs}), "n": len(rs),
            "accuracy": interval((r["accuracy"] for r in rs), bounds=(0.0, 100.0)),
            "worst_party_accuracy": interval((r.get("worst_party_accuracy") for r in rs), bounds=(0.0, 100.0)),
            "bytes_up": _mean(r["bytes_up"] for r in rs), "bytes_down": _mean(r["bytes_down"] for r in rs),
            "rounds": sorted({int(r["rounds"]) for r in rs}), "wall": _mean(r["wall"] for r in rs),
            "snr_pc1": _mean(r.get("snr_pc1") for r in rs), "recon_raw_snr_gain": _mean(
                r.get("recon_raw_snr_gain") for r in rs),
            "test_rows": sorted({r["test_rows"] for r in rs if r.get("test_rows") is not None}),
            "selection": sorted({r["selection"] for r in rs}), "noise_mode": rs[0].get("noise_mode", ""),
            "attack": rs[0].get("attack", ""), "low_fpr": rs[0].get("low_fpr"),
            "nonmembers": sorted({r["nonmembers"] for r in rs if r.get("nonmembers") is not None}),
            "delta": rs[0].get("delta"),
        }
        for m in MEASURES:
            row[m.key] = interval((r.get(m.key) for r in rs), bounds=m.bounds)
        rows.append(row)
    rows.sort(key=lambda r: (r["cell"][0], -r["cell"][1], r["cell"][2], order.get(r["family"], 99), r["order"]))
    return rows


# ----------------------------------------------------------------------------------- fronts


def pareto_front(points: Sequence[tuple[float, float | None]]) -> list[bool]:
    """Which ``(accuracy, leakage)`` points no other point dominates: another point with
    accuracy >= and leakage <=, one of them strictly. Points without a leakage value
    (``None``) are never on the front."""
    flags = []
    for i, (acc, leak) in enumerate(points):
        if leak is None:
            flags.append(False)
            continue
        beaten = any(
            j != i and other is not None and a >= acc and other <= leak and (a > acc or other < leak)
            for j, (a, other) in enumerate(points)
        )
        flags.append(not beaten)
    return flags


def _value(row: Mapping[str, Any], key: str) -> float | None:
    got = row.get(key)
    return None if got is None else got["mean"]


def fronts(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, dict[str, list[int]]]:
    """Per cell and measure, the indices (into ``rows``) of the method settings on the front
    (reference rows excluded: they are lines, not settings)."""
    out: dict[tuple, dict[str, list[int]]] = defaultdict(dict)
    by_cell: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row["reference"] is None:
            by_cell[row["cell"]].append(i)
    for cell, idx in by_cell.items():
        for m in MEASURES:
            points = [(_value(rows[i], "accuracy"), _value(rows[i], m.key)) for i in idx]
            out[cell][m.key] = [i for i, on in zip(idx, pareto_front(points)) if on]
    return out


def name_of(row: Mapping[str, Any]) -> str:
    return row["label"] + (f" ({row['setting']})" if row["setting"] else "")


def front_statements(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per cell and measure: the settings on the front, best accuracy first."""
    lines = []
    for cell, per_measure in fronts(rows).items():
        lines.append(f"- **{cell_label(cell)}**:")
        for m in MEASURES:
            idx = sorted(per_measure.get(m.key, []), key=lambda i: -_value(rows[i], "accuracy"))
            if not idx:
                continue
            lines.append(f"  - {m.short}: " + "; ".join(name_of(rows[i]) for i in idx))
    return lines


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], *, separated: bool = False) -> list[str] | None:
    """The measures on which ``a`` dominates ``b`` when ``a`` has the higher accuracy AND the
    lower leakage on every measure both have (``None`` if it does not, or if they share no
    measure). ``separated``: the 95 % intervals over seeds must not overlap either."""
    acc_a, acc_b = a["accuracy"], b["accuracy"]
    if acc_a is None or acc_b is None:
        return None
    better = (acc_a["low"] > acc_b["high"]) if separated else (acc_a["mean"] > acc_b["mean"])
    if not better:
        return None
    common = [m.key for m in MEASURES if a.get(m.key) is not None and b.get(m.key) is not None]
    if not common:
        return None
    for key in common:
        lower = (a[key]["high"] < b[key]["low"]) if separated else (a[key]["mean"] < b[key]["mean"])
        if not lower:
            return None
    return common


def dominance_statements(rows: Sequence[Mapping[str, Any]], *, baseline: str = "fedprox") -> list[str]:
    """Per cell: which one-shot settings dominate plain FedProx, and which FedProx dominates."""
    labels = {m.key: m.short for m in MEASURES}
    lines = []
    for cell in dict.fromkeys(r["cell"] for r in rows):
        in_cell = [r for r in rows if r["cell"] == cell]
        base = next((r for r in in_cell if r["family"] == baseline), None)
        if base is None:
            continue
        one_shot = [r for r in in_cell if r["one_shot"] and r["reference"] is None]
        ahead = [(r, dominates(r, base), dominates(r, base, separated=True)) for r in one_shot]
        behind = [(r, dominates(base, r), dominates(base, r, separated=True)) for r in one_shot]
        ahead = [x for x in ahead if x[1]]
        behind = [x for x in behind if x[1]]

        def listed(items) -> str:  # noqa: ANN001
            return "; ".join(f"{name_of(r)} [on {', '.join(labels[k] for k in keys)}"
                             f"{'; separated by the 95 % intervals' if sep else '; not separated by the intervals'}]"
                             for r, keys, sep in items)

        lines.append(f"- **{cell_label(cell)}**: one-shot settings that dominate {base['label']} (higher accuracy "
                     f"and lower leakage on every measure both have): {listed(ahead) if ahead else 'none'}. "
                     f"One-shot settings {base['label']} dominates: {listed(behind) if behind else 'none'}.")
    return lines


# ---------------------------------------------------------------------------------- writing


def fmt_interval(value: Mapping[str, float] | None, digits: int = 3, *, scale: float = 1.0) -> str:
    """``mean [low, high]``; the mean alone for one seed; ``n/a`` for none; ``inf`` for total exposure."""
    if value is None:
        return "n/a"
    mean = scale * value["mean"]
    if math.isinf(mean):
        return "inf"
    if value["n"] < 2 or not math.isfinite(value["low"]):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{scale * value['low']:.{digits}f}, {scale * value['high']:.{digits}f}]"


def _bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value / 2**10:.1f} KiB"


def on_front(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """For every row, the measures (short names) on whose front it lies."""
    flags: list[list[str]] = [[] for _ in rows]
    shorts = {m.key: m.short for m in MEASURES}
    for per_measure in fronts(rows).values():
        for key, idx in per_measure.items():
            for i in idx:
                flags[i].append(shorts[key])
    return flags


def table_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The frontier table, one block per cell."""
    flags = on_front(rows)
    head = ("| method | setting | accuracy (%) | " + " | ".join(m.short for m in MEASURES)
            + " | up / down per party | rounds | wall (s) | on the front of |")
    rule = "|" + "---|" * (len(MEASURES) + 7)
    lines: list[str] = []
    for cell in dict.fromkeys(r["cell"] for r in rows):
        lines += ["", f"### {cell_label(cell)}", "", head, rule]
        for i, row in enumerate(rows):
            if row["cell"] != cell:
                continue
            acc = fmt_interval(row["accuracy"], 1)
            if row["worst_party_accuracy"] is not None:
                acc = f"mean party {acc}; worst party {fmt_interval(row['worst_party_accuracy'], 1)}"
            setting = row["setting"]
            if row["family"].startswith("singularized") and row["snr_pc1"] is not None:
                setting += f"; measured SNR_pc1 {row['snr_pc1']:.3g}"
            measures = [fmt_interval(row[m.key], m.digits) for m in MEASURES]
            wall = "n/a" if row["wall"] is None else f"{row['wall']:.0f}"
            lines.append(
                f"| {row['label']} | {setting} | {acc} | " + " | ".join(measures)
                + f" | {_bytes(row['bytes_up'])} / {_bytes(row['bytes_down'])} | "
                f"{'/'.join(str(v) for v in row['rounds'])} | "
                f"{wall} | "
                f"{', '.join(flags[i]) if row['reference'] is None else '(reference)'} |")
    return lines


CSV_COLUMNS = ["cell", "parties", "beta", "rho", "family", "label", "setting", "seeds", "n", "reference",
               "accuracy_mean", "accuracy_low", "accuracy_high", "worst_party_accuracy_mean",
               "worst_party_accuracy_low", "worst_party_accuracy_high",
               *[f"{m.key}_{part}" for m in MEASURES for part in ("mean", "low", "high")],
               "recon_raw_snr_gain_mean", "bytes_uploaded_per_party", "bytes_downloaded_per_party", "rounds",
               "wall_seconds_mean", "snr_pc1_mean", "noise_mode", "attack", "low_fpr", "nonmembers", "test_rows",
               "selection", "delta", "on_front_of"]


def csv_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``frontier.csv``."""
    flags = on_front(rows)
    out = []
    for i, row in enumerate(rows):
        flat: dict[str, Any] = {
            "cell": row["cell_label"], "parties": row["cell"][0], "beta": row["cell"][1], "rho": row["cell"][2],
            "family": row["family"], "label": row["label"], "setting": row["setting"],
            "seeds": " ".join(map(str, row["seeds"])), "n": row["n"], "reference": row["reference"] or "",
            "recon_raw_snr_gain_mean": row["recon_raw_snr_gain"], "bytes_uploaded_per_party": row["bytes_up"],
            "bytes_downloaded_per_party": row["bytes_down"], "rounds": "/".join(map(str, row["rounds"])),
            "wall_seconds_mean": row["wall"], "snr_pc1_mean": row["snr_pc1"], "noise_mode": row["noise_mode"],
            "attack": row["attack"], "low_fpr": row["low_fpr"], "nonmembers": " ".join(map(str, row["nonmembers"])),
            "test_rows": " ".join(map(str, row["test_rows"])), "selection": " ".join(row["selection"]),
            "delta": row["delta"], "on_front_of": "; ".join(flags[i]),
        }
        for key in ("accuracy", "worst_party_accuracy", *(m.key for m in MEASURES)):
            value = row[key]
            for part in ("mean", "low", "high"):
                flat[f"{key}_{part}"] = None if value is None else value[part]
        out.append(flat)
    return out
