"""The privacy-utility frontier (issue 17): every method on identical partitions and seeds,
accuracy against the same leakage measures, with the Pareto front per measure.

One command:

1. **The sweep** (default ``simulations/sweeps/frontier-digits.toml``, every run a real
   ``flwr run``, resumable): singularized mixup with strict noise on a ladder of tau (released
   once, and every epoch), clamped noise at tau = 1e-6 (nominal), InstaHide, FedProx plain,
   with Fed-AugMix and with DP-Mix_self on a ladder of noise multipliers, and two reference
   points: pooled clean data (``encoding = "pooled"``) and each party alone
   (``strategy = "local-only"``). Every method reports its model by the same rule
   (``selection = "last"``) and holds out the same public pool.
2. **The leakage** of every run (:mod:`simulations.studies.frontier_leakage`): membership
   inference on the reported model (loss threshold, offline LiRA), reconstruction with the
   strongest attack for the method's traffic, re-identification and epsilon; cached per run.
3. **The frontier** (:mod:`simulations.studies.frontier_table`,
   :mod:`simulations.studies.frontier_figure`): ``frontier.md`` / ``frontier.csv`` (accuracy and
   every measure as mean and 95 % interval over seeds, bytes, rounds, wall time),
   ``frontier.png`` (accuracy against each measure, the Pareto front, the references as
   lines) and ``report.md`` (which settings are on each front; whether a one-shot setting
   dominates FedProx or the reverse; how long it took).

    python -m simulations.studies.frontier                 # digits: 111 runs, 75 min on 2 cores (results README)
    python -m simulations.studies.frontier --quick --out /tmp/frontier-quick   # a first look, a few minutes
    python -m simulations.studies.frontier --skip-sweep    # tables again from the finished runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.io import write_json_atomic, write_text_atomic
from common.run_summary import read_summary
from simulations.runtime.executor import Executor
from simulations.studies.base import Study, embed, set_threads, write_csv
from simulations.studies.frontier_leakage import LeakageOptions, ReferenceModels, leakage_of_run
from simulations.studies.frontier_table import (
    CSV_COLUMNS,
    MEASURES,
    aggregate,
    csv_rows,
    dominance_statements,
    front_statements,
    run_record,
    table_lines,
)
from simulations.sweep import SWEEPS_DIR, SweepError, SweepSpec, expand_runs, unique_runs

__all__ = ["QUICK_EPOCHS", "collect_records", "main", "quick_spec", "write_frontier"]

DEFAULT_FILE = SWEEPS_DIR / "frontier-digits.toml"
QUICK_EPOCHS = 10


# ------------------------------------------------------------------------------------ quick


def _is_strict_ladder(table) -> bool:  # noqa: ANN001
    s = table.settings
    return "tau" in s and s.get("noise-mode") == "strict" and (table.releases or ["once"]) == ["once"]


def quick_spec(spec: SweepSpec) -> tuple[SweepSpec, dict[str, Any]]:
    """The ``--quick`` variant: the first seed, the first cell (P = 10 and beta = 1.0 where the
    file has them), three taus of the strict ladder (lowest, middle, highest), the middle
    noise multiplier of DP-Mix, and ``QUICK_EPOCHS`` central epochs and rounds."""
    first = spec.table[0]
    parties = 10 if any(10 in t.parties for t in spec.table) else first.parties[0]
    beta = 1.0 if any(1.0 in t.beta for t in spec.table) else first.beta[0]
    taus = sorted({float(t.settings["tau"]) for t in spec.table if _is_strict_ladder(t)})
    keep_taus = {taus[0], taus[len(taus) // 2], taus[-1]} if taus else set()
    sigmas = sorted({float(t.settings["dp-noise-multiplier"]) for t in spec.table
                     if "dp-noise-multiplier" in t.settings})
    keep_sigma = sigmas[len(sigmas) // 2] if sigmas else None
    tables = []
    for t in spec.table:
        if parties not in t.parties or beta not in t.beta:
            continue
        if _is_strict_ladder(t) and float(t.settings["tau"]) not in keep_taus:
            continue
        if "dp-noise-multiplier" in t.settings and float(t.settings["dp-noise-multiplier"]) != keep_sigma:
            continue
        tables.append(t.model_copy(update={"parties": [parties], "beta": [beta]}))
    quick = spec.model_copy(update={"name": spec.name + "-quick", "seeds": spec.seeds[:1], "table": tables})
    return quick, {"central-epochs": QUICK_EPOCHS, "num-rounds": QUICK_EPOCHS}


QUICK_LEAKAGE = LeakageOptions(reference_models=4, ig_iterations=100, carlini_steps=300)


# ---------------------------------------------------------------------------------- records


def finished_runs(spec: SweepSpec, *, overrides: Mapping[str, Any], out: Path) -> list[tuple[Path, Any]]:
    """``(summary path, summary)`` of every run of the plan that has finished, in plan order."""
    found = []
    for run in unique_runs(expand_runs(spec, overrides=overrides)):
        path = out / "summaries" / f"{run.name}.json"
        if path.exists():
            found.append((path, read_summary(path)))
    return found


def collect_records(runs: list[tuple[Path, Any]], *, leakage,  # noqa: ANN001
                    progress: bool = True) -> list[dict[str, Any]]:
    """One record per run: ``leakage(path, summary)`` gives its leakage figures."""
    records = []
    for path, summary in tqdm(runs, desc="leakage", unit="run", disable=not progress):
        records.append(run_record(summary, name=path.stem, leakage=leakage(path, summary)))
    return records


# ---------------------------------------------------------------------------------- writing


def _ladders(rows: list[dict[str, Any]]) -> dict[str, str]:
    taus = sorted({r["setting"] for r in rows if r["family"] == "singularized-strict-once"},
                  key=lambda s: float(s.split("=")[1]))
    sigmas = {}
    for r in rows:
        if "dp-mix" in r["family"] and r["epsilon"] is not None:
            sigmas.setdefault(r["setting"], []).append(r["epsilon"]["mean"])
    return {
        "taus": ", ".join(s.removeprefix("tau = ") for s in taus) or "none",
        "sigmas": "; ".join(f"{s} (epsilon {min(e):.2f}" + (f" to {max(e):.2f}" if max(e) - min(e) > 0.005 else "")
                            + ")" for s, e in sorted(sigmas.items(), key=lambda kv: -max(kv[1]))) or "none",
    }


def settings_text(records: list[dict[str, Any]], rows: list[dict[str, Any]], *, opts: LeakageOptions,
                  config: Mapping[str, Any]) -> list[str]:
    """How every number was made, and the attacks' settings and threat models."""
    seeds = sorted({r["seed"] for r in records})
    test_rows = sorted({r["test_rows"] for r in records if r.get("test_rows") is not None})
    selections = sorted({r["selection"] for r in records})
    nonmembers = sorted({r["nonmembers"] for r in records if r.get("nonmembers")})
    fprs = sorted({r["low_fpr"] for r in records if r.get("low_fpr")})
    ladders = _ladders(rows)
    return [
        f"Data: {config.get('dataset', 'digits')} (backbone {config.get('backbone', 'none')}), public pool = "
        f"public-fraction {config.get('public-fraction', 0)} of the training split, held out for every method. "
        f"Seeds {', '.join(map(str, seeds))} (each with its own test split for digits: "
        f"{', '.join(map(str, test_rows))} "
        f"test rows). Model reported by selection = {', '.join(selections)} for every method (never the test "
        f"set). {config.get('central-epochs')} central epochs (one-shot, each party alone) and "
        f"{config.get('num-rounds')} rounds of {config.get('local-epochs', 1)} local epoch (FedProx, mu = "
        f"{config.get('proximal-mu', 1e-3)}). Intervals: mean [95 % Student-t interval] over seeds; one seed has "
        "no interval. Cost columns: payload bytes each party sent / received (array buffers and records); "
        "rounds (message rounds: 1 for a one-shot release, one per epoch for per-epoch releases); wall time of the "
        "run itself (the ServerApp, without the `flwr run` start-up).",
        "",
        f"Ladders. Singularized mixup, strict noise (Theorem 2's mechanism as calibrated), released once: tau = "
        f"{ladders['taus']} (alpha = {config.get('alpha', 0.7)}; m_f vanishes at tau = alpha^2/(1-alpha)^2 = 5.44; "
        "the ladder was chosen by the in-process scan of `python -m simulations.studies.frontier_scan`, see the "
        "README). Clamped noise at tau = 1e-6 is *nominal*: clamping breaks the bound; the measured directional "
        "SNR (SNR_pc1, mean over parties) is printed beside every singularized setting. DP-Mix_self noise "
        f"multipliers: {ladders['sigmas']}, epsilon at delta = {config.get('dp-delta', 1e-5)}, worst party, all "
        "rounds counted (seeded noise: a simulation).",
        "",
        "Leakage, the same measures for every method (higher = more leakage):",
        "",
        f"1. Membership inference on the reported model. Members: every party's private training rows; "
        f"non-members: the run's test split ({', '.join(map(str, nonmembers)) or 'n/a'} rows; validation rows and "
        "the public pool are neither). Loss threshold (Yeom et al.) and offline LiRA (Carlini et al.) with "
        f"{opts.reference_models} reference models the attacker trains on random halves of the public pool with the "
        "platform's central recipe (MixupClassifier of the run's norm, AdamW + cosine, batch 128, central-epochs "
        "epochs, hard labels, last epoch; pooled variance below 64 models). TPR at FPR = "
        f"{', '.join(f'{100 * f:g} %' for f in fprs) or 'n/a'}: the smallest of 0.1/1/5/10 % that leaves at least "
        "10 non-members above the threshold (`attacks.membership.low_fpr_for`), so no TPR rests on one or two "
        "points. A party alone keeps its model: n/a.",
        f"2. Reconstruction of party {', '.join(map(str, opts.attack_parties))}'s private samples with the strongest "
        "attack for the method's traffic: linear inversion (appendix F; Adam, "
        f"{opts.linear_steps} steps, lr {opts.linear_lr:g}) of singularized releases under the paper's conservative "
        "threat model (mixing graph, weights and noise radius known), for per-epoch releases every epoch's release "
        "inverted and the estimates averaged per sample; Carlini et al.'s attack on InstaHide "
        f"({opts.carlini_steps} steps; graph and weights known, sign masks not); Inverting Gradients on the party's "
        f"update from the round-1 global model ({opts.ig_iterations} iterations; batch of 4 with known labels, 5 "
        "local SGD steps, the run's own defence code; Fed-AugMix's threat model) for FedProx and its defences. "
        "Pooled data uploads the raw rows: total exposure, stated as gain = inf and recovered share = 1. A party "
        "alone sends nothing: n/a. Scores: the SNR gain (dB) over the prior-only guess (the public pool's mean "
        "image for every sample), both *centred* (each batch minus its mean image: a BatchNorm update is blind to "
        "a shift shared by its batch, so the raw SNR would credit FedProx with that blind spot; centred, the prior "
        "scores 0 dB; the raw gain is in frontier.csv), and the share of attacked samples with SSIM > "
        f"{opts.ssim_threshold:g} (8x8 digits: one Gaussian-weighted window).",
        "3. Re-identification: the share of released rows nearest to one of their private sources, measured by "
        "every party on its release (run summary); pooled rows are their own sources (1.0); n/a for methods that "
        "release no rows. Epsilon: DP-Mix only.",
    ]


def write_frontier(records: list[dict[str, Any]], *, out: Path, opts: LeakageOptions, config: Mapping[str, Any],
                   title: str) -> tuple[list[dict[str, Any]], list[Path]]:
    """``frontier.md``, ``frontier.csv`` and ``frontier.png`` from the run records."""
    from simulations.studies.frontier_figure import write_figure

    rows = aggregate(records)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(out / "frontier.csv", csv_rows(rows), columns=CSV_COLUMNS)
    png = out / "frontier.png"
    write_figure(rows, path=png, title=title)
    lines = [f"# {title}", "", *settings_text(records, rows, opts=opts, config=config), "",
             "## The table", "", "Columns: " + "; ".join(f"{m.short} = {m.label}" for m in MEASURES) + ".",
             *table_lines(rows), "",
             "## Pareto fronts", "",
             "Per cell and measure, the method settings no other setting beats on both accuracy (higher) and that "
             "measure (lower), on the means over seeds; the references are lines, not settings:", "",
             *front_statements(rows), "",
             "## One-shot against FedProx", "", *dominance_statements(rows), "",
             "![accuracy against each leakage measure](frontier.png)"]
    md = write_text_atomic(out / "frontier.md", "\n".join(lines) + "\n")
    return rows, [md, csv_path, png]


def main(argv: list[str] | None = None, *, executor: Executor | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    Study.add_sweep_arguments(parser, default_file=DEFAULT_FILE, skip_help="leakage and tables only (no flwr runs)")
    parser.add_argument("--quick", action="store_true",
                        help=f"one cell, one seed, 3 taus, 1 sigma, {QUICK_EPOCHS} epochs/rounds, lighter attacks")
    parser.add_argument("--reference-models", type=int, help="LiRA reference models (default 8; quick 4)")
    parser.add_argument("--ig-iterations", type=int, help="Inverting Gradients iterations (default 200; quick 100)")
    parser.add_argument("--attack-parties", type=int, nargs="+", help="parties attacked per run (default: 0)")
    parser.add_argument("--ssim-threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        study, spec, overrides = Study.load_sweep_arguments(args, module="frontier")
        opts = QUICK_LEAKAGE if args.quick else LeakageOptions()
        if args.quick:
            spec, quick_overrides = quick_spec(spec)
            overrides = {**quick_overrides, **overrides}
            if args.out is None:
                study = Study(study.out.with_name(spec.name), module="frontier", progress=study.progress)
        updates = {k: v for k, v in {"reference_models": args.reference_models, "ig_iterations": args.ig_iterations,
                                     "attack_parties": tuple(args.attack_parties) if args.attack_parties else None,
                                     "ssim_threshold": args.ssim_threshold}.items() if v is not None}
        opts = LeakageOptions(**{**opts.__dict__, **updates})
    except (SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = study.out
    if not args.skip_sweep:
        code = study.sweep(spec, overrides=overrides, executor=executor)
        if code not in (0, 1):
            print(f"the sweep stopped with exit code {code}; run the same command again to continue", file=sys.stderr)
            return code
        if code == 1:
            print("some runs failed (see failures.json); the frontier is made from the finished ones; run the same "
                  "command again to retry them", file=sys.stderr)
    sweep_seconds = time.perf_counter() - started
    runs = finished_runs(spec, overrides=overrides, out=out)
    if not runs:
        print(f"error: no finished run in {out / 'summaries'}; run without --skip-sweep first", file=sys.stderr)
        return 2
    set_threads()
    refs = ReferenceModels(opts.reference_models)
    attacked = time.perf_counter()
    records = collect_records(runs, progress=study.progress, leakage=lambda path, summary: leakage_of_run(
        path, summary, opts=opts, refs=refs, cache_dir=out / "leakage"))
    leakage_seconds = time.perf_counter() - attacked
    config = {**spec.settings, **overrides}
    title = f"Privacy-utility frontier: {spec.name}"
    if args.quick:
        title += " (--quick: a first look, not the result)"
    rows, written = write_frontier(records, out=out, opts=opts, config=config, title=title)
    timing = {"sweep_and_setup_seconds_this_call": sweep_seconds, "leakage_seconds_this_call": leakage_seconds,
              "total_seconds_this_call": time.perf_counter() - started, "runs": len(runs),
              "sum_of_run_wall_seconds": sum(s.wall_seconds for _, s in runs)}
    write_json_atomic(out / "timing.json", timing)
    frontier_md = (out / "frontier.md").read_text(encoding="utf-8")
    command = study.command + (" --quick" if args.quick else "") + (f" --out {args.out}" if args.out else "")
    written.append(study.write_index([
        f"# {title}", "",
        f"Sweep `{spec.name}` ({args.sweep_file.name}{', --quick' if args.quick else ''}); one command: `{command}`. "
        f"This call: {timing['total_seconds_this_call'] / 60:.1f} min in all ({sweep_seconds / 60:.1f} min sweep "
        f"and set-up, {leakage_seconds / 60:.1f} min leakage), {len(runs)} runs whose own wall times sum to "
        f"{timing['sum_of_run_wall_seconds'] / 60:.1f} min (a resumed call reuses finished runs and cached attacks, "
        "so its time is only what was left).", "",
        "- [the sweep's full report](sweep_report.md)", "- [frontier.csv](frontier.csv)", "",
        embed(frontier_md)]))
    print(json.dumps(timing, indent=1))
    for path in written:
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
