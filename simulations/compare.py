"""One-shot singularized mixup beside FedProx, on the same partitions, through ``flwr run``.

A preset of the sweep (:mod:`simulations.sweep`): one Table-5 cell (``--num-parties`` parties,
beta from ``--set beta=...``, default 1.0) with the chosen strategies and seeds, run by
:func:`simulations.sweep.run_sweep` with one real ``flwr run`` per (strategy, seed). A run whose
summary exists is not run again, so an interrupted comparison resumes; the sweep's own files
(``summaries/``, ``logs/``, ``runs.csv``) sit beside the comparison. The side-by-side table
(``compare.md`` / ``.csv`` / ``.json``) reports mean ± std over seeds of the test accuracy of
the model selected on validation, together with release and noise mode.

``--set`` passes run-config values to every run; the cell's own keys (``beta``, ``rho`` and
``poor-party`` for a size-skew cell, ``partitioner``, ``release``, ``encoding``, ``defence``)
become the preset's grid, as a sweep file would name them.

    python -m simulations.compare                              # digits, 10 parties, seeds 0 1 2
    python -m simulations.compare --seeds 0 --set beta=0.1 --set noise-mode='"strict"'
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.io import write_json_atomic, write_text_atomic
from common.run_summary import RunSummary, read_summary
from common.stats import describe
from simulations.runtime.executor import Executor, FlowerExecutor
from simulations.runtime.local_flower import flower_env
from simulations.sweep import (
    SweepError,
    SweepSpec,
    TableSpec,
    expand_runs,
    parse_overrides,
    run_sweep,
    unique_runs,
)

__all__ = ["STRATEGIES", "compare_spec", "main", "markdown_table", "summarise"]

STRATEGIES = ("one-shot-mixup", "fedprox")
# Run-config keys the preset turns into its grid (the sweep sets them per run).
CELL_KEYS = ("beta", "rho", "poor-party", "partitioner", "release", "encoding", "defence")


def compare_spec(*, strategies: list[str], seeds: list[int], parties: int,
                 overrides: Mapping[str, Any]) -> tuple[SweepSpec, dict[str, Any]]:
    """The sweep of a comparison and the run-config values left for every run.

    Raises pydantic's ``ValidationError`` (a ``ValueError``) for a cell the sweep would refuse.
    """
    cell = {k: v for k, v in overrides.items() if k in CELL_KEYS}
    rest = {k: v for k, v in overrides.items() if k not in CELL_KEYS}
    size_skew = "rho" in cell or "poor-party" in cell
    table = TableSpec(
        name="compare", layout="table6" if size_skew else "table5", parties=[parties],
        beta=[cell.get("beta", 1.0)], rho=[cell.get("rho", 1.0)] if size_skew else None,
        poor_party=cell.get("poor-party", 0), partitioner=cell.get("partitioner"),
    )
    spec = SweepSpec(
        name="compare", description="one-shot singularized mixup beside FedProx (python -m simulations.compare)",
        seeds=seeds, strategies=strategies, table=[table],
        **{key: [cell[one]] for key, one in (("releases", "release"), ("encodings", "encoding"),
                                              ("defences", "defence")) if one in cell},
    )
    return spec, rest


def _mean(values: list[float]) -> float:
    """The mean, an infinite value included (a per-party SNR may be inf)."""
    return describe(values, ddof=1, finite_only=False).mean


def summarise(summaries: dict[str, list[RunSummary]]) -> list[dict]:
    """One row per strategy with the figures the comparison prints (mean over seeds; the
    accuracy's std is the sample std over seeds)."""
    rows = []
    for strategy, runs in summaries.items():
        if not runs:
            continue
        acc = describe([r.result.test_accuracy for r in runs], ddof=1)
        up = _mean([r.communication.bytes_uploaded for r in runs])
        down = _mean([r.communication.bytes_downloaded for r in runs])
        parties = runs[0].num_parties
        privacy = runs[0].privacy
        snr = [(r.privacy.model_extra or {}).get("snr_pc1") for r in runs] if privacy else []
        rows.append({
            "strategy": strategy,
            "seeds": " ".join(str(r.config["seed"]) for r in runs),
            "parties": parties,
            "test_accuracy_mean": acc.mean,
            "test_accuracy_std": acc.std,
            "selected_by": runs[0].result.selected_by,
            "rounds": runs[0].rounds,
            "bytes_uploaded_total": up,
            "bytes_downloaded_total": down,
            "bytes_uploaded_per_party": up / parties,
            "bytes_downloaded_per_party": down / parties,
            "wall_seconds_mean": _mean([r.wall_seconds for r in runs]),
            "release_mode": privacy.release_mode if privacy else "none (raw data stays local)",
            "noise_mode": privacy.noise_mode if privacy else "n/a",
            "tau": privacy.tau if privacy else None,
            "snr_pc1_mean": _mean([s["mean"] for s in snr]) if privacy else None,
            "snr_pc1_max": max(s["max"] for s in snr) if privacy else None,
        })
    return rows


def _mib(num: float) -> str:
    return f"{num / 2**20:.2f} MiB"


def markdown_table(rows: list[dict], *, config: dict) -> str:
    """Strategies as columns, figures as rows."""
    lines = [
        f"Data set `{config.get('dataset', 'digits')}`, {rows[0]['parties']} parties, partitioner "
        f"`{config.get('partitioner', 'dirichlet')}` beta = {config.get('beta', 1.0)}; seeds {rows[0]['seeds']}; "
        "accuracy = mean ± std over seeds of the model selected on validation (never on test).",
        "",
        "| | " + " | ".join(r["strategy"] for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]

    def add(label: str, fn) -> None:  # noqa: ANN001
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in rows) + " |")

    add("test accuracy (%)", lambda r: f"{r['test_accuracy_mean']:.2f} ± {r['test_accuracy_std']:.2f}")
    add("release mode", lambda r: r["release_mode"])
    add("noise mode", lambda r: r["noise_mode"])
    add("rounds", lambda r: str(r["rounds"]))
    add("uploaded, total", lambda r: _mib(r["bytes_uploaded_total"]))
    add("downloaded, total", lambda r: _mib(r["bytes_downloaded_total"]))
    add("uploaded per party", lambda r: _mib(r["bytes_uploaded_per_party"]))
    add("downloaded per party", lambda r: _mib(r["bytes_downloaded_per_party"]))
    add("wall time (s)", lambda r: f"{r['wall_seconds_mean']:.1f}")
    add("tau / measured SNR along PC1 (mean, max)", lambda r: "n/a" if r["tau"] is None
        else f"{r['tau']:g} / {r['snr_pc1_mean']:.3g}, {r['snr_pc1_max']:.3g}")
    add("model selection", lambda r: r["selected_by"])
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None, *, executor: Executor | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder (default runs/compare)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-parties", type=int, default=10)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=["one-shot-mixup", "fedprox", "fedavg"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config override with a TOML value, repeatable")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run")
    args = parser.parse_args(argv)

    overrides = parse_overrides(args.overrides)
    for fixed in ("strategy", "seed", "output-dir", "run-name"):
        if fixed in overrides:
            parser.error(f"--set {fixed}=... is set by this script")
    out = args.out.resolve()
    try:
        spec, rest = compare_spec(strategies=list(dict.fromkeys(args.strategies)), seeds=args.seeds,
                                  parties=args.num_parties, overrides=overrides)
        runs = unique_runs(expand_runs(spec, overrides=rest))
        outcome = run_sweep(spec, out_dir=out, executor=executor or FlowerExecutor(env=flower_env(),
                                                                                   timeout=args.timeout),
                            overrides=rest)
    except (SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if outcome.failed:
        for failure in outcome.failed:
            print(f"{failure['name']}: FAILED (exit {failure['exit_code']}); log: {failure['log']}", file=sys.stderr)
        print("run the same command again to retry the failed runs (finished ones are kept)", file=sys.stderr)
        return 1
    results: dict[str, list[RunSummary]] = {s: [] for s in spec.strategies}
    for run in runs:  # seeds outermost, as the table lists them
        results[run.strategy].append(read_summary(out / "summaries" / f"{run.name}.json"))

    rows = summarise(results)
    table = markdown_table(rows, config=overrides)
    write_text_atomic(out / "compare.md", table)
    write_text_atomic(out / "compare.csv", _csv_text(rows))
    write_json_atomic(out / "compare.json", rows)
    print()
    print(table)
    print(f"written: {out / 'compare.md'}, compare.csv, compare.json; per-run summaries in {out / 'summaries'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
