"""One-shot singularized mixup beside FedProx, on the same partitions, through ``flwr run``.

Each (strategy, seed) is one real ``flwr run`` of the app; its JSON summary is kept, and a
run whose summary already exists is not run again (so an interrupted comparison resumes).
The side-by-side table (Markdown, CSV, JSON) reports mean ± std over seeds of the test
accuracy of the model selected on validation, together with release and noise mode.

    python -m simulations.compare                              # digits, 10 parties, seeds 0 1 2
    python -m simulations.compare --seeds 0 --set beta=0.1 --set noise-mode='"strict"'
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

from simulations.local_flower import flower_env, flwr_run

STRATEGIES = ("one-shot-mixup", "fedprox")


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``key=value`` pairs with TOML values (``beta=0.1``, ``noise-mode='strict'``)."""
    values: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            values[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"--set {item!r}: value is not a TOML literal ({err})") from None
    return values


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(summaries: dict[str, list[dict]]) -> list[dict]:
    """One row per strategy with the figures the comparison prints."""
    rows = []
    for strategy, runs in summaries.items():
        if not runs:
            continue
        acc = [100 * r["result"]["test_accuracy"] for r in runs]
        wall = [r["wall_seconds"] for r in runs]
        up = [r["communication"]["bytes_uploaded"] for r in runs]
        down = [r["communication"]["bytes_downloaded"] for r in runs]
        parties = runs[0]["num_parties"]
        privacy = runs[0].get("privacy")
        acc_m, acc_s = _mean_std(acc)
        row = {
            "strategy": strategy,
            "seeds": " ".join(str(r["config"]["seed"]) for r in runs),
            "parties": parties,
            "test_accuracy_mean": acc_m,
            "test_accuracy_std": acc_s,
            "selected_by": runs[0]["result"]["selected_by"],
            "rounds": runs[0]["rounds"],
            "bytes_uploaded_total": statistics.fmean(up),
            "bytes_downloaded_total": statistics.fmean(down),
            "bytes_uploaded_per_party": statistics.fmean(up) / parties,
            "bytes_downloaded_per_party": statistics.fmean(down) / parties,
            "wall_seconds_mean": statistics.fmean(wall),
            "release_mode": privacy["release_mode"] if privacy else "none (raw data stays local)",
            "noise_mode": privacy["noise_mode"] if privacy else "n/a",
            "tau": privacy["tau"] if privacy else None,
            "snr_pc1_mean": statistics.fmean(r["privacy"]["snr_pc1"]["mean"] for r in runs) if privacy else None,
            "snr_pc1_max": max(r["privacy"]["snr_pc1"]["max"] for r in runs) if privacy else None,
        }
        rows.append(row)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    summaries_dir = out / "summaries"
    env = flower_env()
    jobs = [(s, seed) for seed in args.seeds for s in args.strategies]
    results: dict[str, list[dict]] = {s: [] for s in args.strategies}
    started = time.perf_counter()
    for k, (strategy, seed) in enumerate(jobs, 1):
        name = f"{strategy}-seed{seed}"
        path = summaries_dir / f"{name}.json"
        prefix = f"[{k}/{len(jobs)}] {strategy:15s} seed {seed}"
        if path.exists():
            summary = json.loads(path.read_text())
            print(f"{prefix}: done earlier, {100 * summary['result']['test_accuracy']:.2f} %", flush=True)
        else:
            t0 = time.perf_counter()
            config = {**overrides, "strategy": strategy, "seed": seed,
                      "output-dir": str(summaries_dir), "run-name": name}
            proc = flwr_run(config, num_supernodes=args.num_parties, log_path=out / "logs" / f"{name}.log",
                            env=env, timeout=args.timeout)
            if proc.returncode != 0 or not path.exists():
                print(f"{prefix}: FAILED (exit {proc.returncode}); log: {out / 'logs' / (name + '.log')}",
                      file=sys.stderr)
                return 1
            summary = json.loads(path.read_text())
            elapsed = time.perf_counter() - started
            eta = elapsed / k * (len(jobs) - k)
            print(f"{prefix}: {100 * summary['result']['test_accuracy']:.2f} % in {time.perf_counter() - t0:.0f} s "
                  f"(ETA {eta:.0f} s)", flush=True)
        results[strategy].append(summary)

    rows = summarise(results)
    table = markdown_table(rows, config=overrides)
    (out / "compare.md").write_text(table)
    with (out / "compare.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(table)
    print(f"written: {out / 'compare.md'}, compare.csv, compare.json; per-run summaries in {summaries_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
