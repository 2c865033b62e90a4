"""Client-side iterative defences against one-shot singularized mixup, on the same partitions.

One command makes the comparison of issue 8:

1. **Accuracy and cost.** The sweep file (default ``simulations/sweeps/defences-digits.toml``)
   runs, for every cell and seed, FedProx with each client-side defence (plain, Fed-AugMix,
   DP-Mix_self) and one-shot singularized mixup through ``flwr run`` (resumable, see
   :mod:`simulations.sweep`). Every run's summary gives the test accuracy of the model selected
   on validation, the rounds, the bytes each party sent and received, and the wall time;
   DP-Mix runs add the worst party's (epsilon, delta).
2. **Attack success.** For every iterative run, the gradient-leakage audit
   (:mod:`simulations.gradient_audit`) re-makes a party's update on a batch of 4 with the run's
   own defence code from the round-1 and the selected global model, and attacks it with
   Inverting Gradients under the Fed-AugMix paper's threat model (known labels). The one-shot
   runs have no update to invert: their releases are re-made with each run's configuration and
   attacked with the linear inversion of appendix F under the paper's conservative threat model
   (mixing graph and weights known). Both are scored by MSE, PSNR and SSIM against the private
   samples, beside a prior-only guess (the mean of the party's other rows).

Outputs under ``--out`` (default ``runs/defences-digits``): the sweep's folders and report,
``defences.md`` / ``defences.csv`` (one row per method), ``attacks.csv`` / ``attacks.json`` (one
record per attacked party, stage and seed), ``attack_panels.png`` and ``report.md``.

    python -m simulations.defence_compare
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from attacks.gradient_inversion import reconstruction_scores
from attacks.linear import LinearInversionAttack
from attacks.threat_model import grant_knowledge, observe
from client.party import load_party
from client.release import make_release
from common.config import parse_run_config
from server.app import WEIGHTS_SUFFIX
from simulations import sweep as sweep_cli
from simulations.gradient_audit import AUDIT_STAGES, AuditProtocol, audit_party, load_global_models
from simulations.local_flower import PROJECT_ROOT
from simulations.report import read_runs_csv

__all__ = ["METHODS", "attack_one_shot_run", "audit_iterative_run", "main", "method_of", "write_comparison"]

DEFAULT_FILE = sweep_cli.SWEEPS_DIR / "defences-digits.toml"

# Method key -> label, in report order.
METHODS = {
    "fedprox": "FedProx",
    "fedprox+fed-augmix": "Fed-AugMix (on FedProx)",
    "fedprox+dp-mix-self": "DP-Mix_self (on FedProx)",
    "fedprox+dp-mix-diff": "DP-Mix_diff (on FedProx)",
    "fedavg": "FedAvg",
    "fedavg+fed-augmix": "Fed-AugMix (on FedAvg)",
    "fedavg+dp-mix-self": "DP-Mix_self (on FedAvg)",
    "fedavg+dp-mix-diff": "DP-Mix_diff (on FedAvg)",
    "one-shot-mixup": "one-shot singularized mixup",
}

ATTACK_COLUMNS = ["method", "stage", "attack", "seed", "parties", "beta", "party", "n", "mse", "psnr", "ssim",
                  "psnr_matched", "ssim_matched", "mse_centred", "psnr_centred", "prior_mse", "prior_psnr",
                  "prior_ssim", "prior_psnr_centred", "final_cosine", "seconds"]
COMPARISON_COLUMNS = ["method", "n_seeds", "test_accuracy_mean", "test_accuracy_std", "rounds",
                      "bytes_uploaded_per_party", "bytes_downloaded_per_party", "wall_seconds_mean",
                      "wall_seconds_std", "guarantee", "epsilon_max", "delta", "attack", "psnr_centred_initial",
                      "psnr_centred_selected", "prior_psnr_centred", "ssim_initial", "ssim_selected",
                      "psnr_initial", "psnr_selected", "prior_psnr"]


def method_of(run: dict[str, Any]) -> str:
    """The method key of a ``runs.csv`` row."""
    if run["strategy"] == "one-shot-mixup":
        if run.get("encoding") not in ("", "singularized"):
            raise ValueError(f"run {run['run_key']}: the defence comparison takes singularized mixup only")
        return "one-shot-mixup"
    defence = run.get("defence") or "none"
    return str(run["strategy"]) + ("" if defence == "none" else f"+{defence}")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _fmt(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f} MiB"


def audit_iterative_run(
    run: dict[str, Any], *, protocol: AuditProtocol, parties: int | None, stages=AUDIT_STAGES,
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor] | None]:
    """Gradient-leakage audit of every (stage, party) of one iterative run."""
    summary_path = Path(run["summary_path"])
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    cfg = parse_run_config(summary["config"])
    models = load_global_models(summary_path.with_name(summary_path.stem + WEIGHTS_SUFFIX))
    count = summary["num_parties"] if parties is None else min(parties, summary["num_parties"])
    records, images = [], None
    for stage in stages:
        state = models[stage]
        if state is None:
            raise ValueError(f"{summary_path}: no {stage} global model was saved")
        for pid in range(count):
            record, pictures = audit_party(cfg, party_id=pid, num_parties=summary["num_parties"],
                                           global_state=state, protocol=protocol)
            records.append({"method": method_of(run), "stage": stage, "attack": "inverting-gradients",
                            "seed": run["seed"], "parties": run["parties"], "beta": run["beta"],
                            "n": protocol.batch_size, **record})
            if images is None:
                images = pictures
    return records, images


def attack_one_shot_run(
    run: dict[str, Any], *, linear: LinearInversionAttack, parties: int | None,
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor] | None]:
    """Linear inversion (appendix F) of every party's release of one one-shot run."""
    summary = json.loads(Path(run["summary_path"]).read_text(encoding="utf-8"))
    cfg = parse_run_config(summary["config"])
    count = summary["num_parties"] if parties is None else min(parties, summary["num_parties"])
    records, images = [], None
    for pid in range(count):
        party = load_party(cfg, pid, summary["num_parties"])
        shape = party.image_shape or (int(party.train_x[0].numel()),)
        originals = party.train_x.float().reshape(-1, *shape)
        lo, hi = (float(v) for v in party.input_bounds)
        started = time.perf_counter()
        made = make_release(cfg, party, device=torch.device("cpu"), with_validation=False)
        observed = observe(made.train, sample_shape=shape)
        knowledge = grant_knowledge(made.train, noise_mode=cfg.noise_mode, valid_range=party.input_bounds)
        estimate = linear.reconstruct(observed, knowledge).x.reshape(originals.shape)
        seconds = time.perf_counter() - started
        prior = originals.mean(dim=0, keepdim=True).expand_as(originals)
        scores = reconstruction_scores(originals, estimate, data_range=hi - lo)
        prior_scores = reconstruction_scores(originals, prior, data_range=hi - lo)
        records.append({"method": "one-shot-mixup", "stage": "release", "attack": linear.name, "seed": run["seed"],
                        "parties": run["parties"], "beta": run["beta"], "party": pid, "n": int(originals.shape[0]),
                        **scores, "prior_mse": prior_scores["mse"], "prior_psnr": prior_scores["psnr"],
                        "prior_ssim": prior_scores["ssim"], "prior_psnr_centred": prior_scores["psnr_centred"],
                        "final_cosine": None, "seconds": seconds})
        if images is None:
            images = {"original": originals[:4], "reconstruction": estimate[:4]}
    return records, images


def _guarantee(method: str, summaries: list[dict[str, Any]]) -> tuple[str, float | None, float | None]:
    if method == "one-shot-mixup":
        privacy = summaries[0].get("privacy") or {}
        return (f"Theorem 2 directional SNR <= tau = {privacy.get('tau'):g} ({privacy.get('noise_mode')} noise; "
                "clamped breaks the bound), one release", None, None)
    defence = summaries[0].get("defence") or {}
    if defence.get("defence") in ("dp-mix-self", "dp-mix-diff"):
        eps = [d["defence"]["epsilon_max"] for d in summaries if d["defence"].get("epsilon_max") is not None]
        worst = max(eps) if eps else None
        sgd = defence["dp_sgd"]
        text = (f"(epsilon <= {worst:.2f}, delta = {defence['delta']:g}) per party, record level; sigma "
                f"{sgd['noise_multiplier']:g}, C {sgd['max_grad_norm']:g}; seeded noise (simulation)"
                if worst is not None else "DP-SGD (epsilon not reported)")
        return text, worst, defence["delta"]
    if defence.get("defence") == "fed-augmix":
        return "none (augmentation noise, no formal guarantee)", None, None
    return "none", None, None


def write_comparison(
    runs: list[dict[str, Any]], records: list[dict[str, Any]], *, out: Path, settings: dict[str, Any],
) -> list[Path]:
    """``defences.md`` / ``defences.csv`` (one row per method), ``attacks.csv`` / ``attacks.json``."""
    out.mkdir(parents=True, exist_ok=True)
    by_method: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_method[method_of(run)].append(run)
    attacks: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        attacks[(r["method"], r["stage"])].append(r)
    rows = []
    for method in [m for m in METHODS if m in by_method]:
        group = by_method[method]
        summaries = [json.loads(Path(r["summary_path"]).read_text(encoding="utf-8")) for r in group]
        acc = _mean_std([r["test_accuracy"] for r in group])
        wall = _mean_std([r["wall_seconds"] for r in group])
        guarantee, eps, delta = _guarantee(method, summaries)
        one_shot = method == "one-shot-mixup"
        stage_a, stage_b = ("release", "release") if one_shot else AUDIT_STAGES
        pick = lambda stage, key: _mean_std([r[key] for r in attacks.get((method, stage), [])])  # noqa: E731
        prior = _mean_std([r["prior_psnr"] for s in (stage_a, stage_b) for r in attacks.get((method, s), [])])
        rows.append({
            "method": method, "label": METHODS[method], "n_seeds": len(group),
            "seeds": sorted({r["seed"] for r in group}),
            "test_accuracy_mean": acc[0], "test_accuracy_std": acc[1],
            "rounds": sorted({int(r["rounds"]) for r in group}),
            "bytes_uploaded_per_party": _mean_std([r["bytes_uploaded_per_party"] for r in group])[0],
            "bytes_downloaded_per_party": _mean_std([r["bytes_downloaded_per_party"] for r in group])[0],
            "wall_seconds_mean": wall[0], "wall_seconds_std": wall[1],
            "guarantee": guarantee, "epsilon_max": eps, "delta": delta,
            "attack": "linear inversion of the release (appendix F)" if one_shot
            else "Inverting Gradients on one update",
            "psnr_centred_initial": pick(stage_a, "psnr_centred"), "psnr_centred_selected": pick(stage_b, "psnr_centred"),
            "prior_psnr_centred": _mean_std([r["prior_psnr_centred"] for s in (stage_a, stage_b)
                                             for r in attacks.get((method, s), [])]),
            "psnr_initial": pick(stage_a, "psnr_matched"), "psnr_selected": pick(stage_b, "psnr_matched"),
            "ssim_initial": pick(stage_a, "ssim_matched"), "ssim_selected": pick(stage_b, "ssim_matched"),
            "prior_psnr": prior,
        })
    csv_path = out / "defences.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COMPARISON_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            flat = dict(row)
            for key in ("psnr_centred_initial", "psnr_centred_selected", "prior_psnr_centred", "psnr_initial",
                        "psnr_selected", "ssim_initial", "ssim_selected", "prior_psnr"):
                flat[key] = row[key][0]
            flat["rounds"] = "/".join(str(v) for v in row["rounds"])
            flat["method"] = row["label"]
            writer.writerow(flat)
    attacks_csv = out / "attacks.csv"
    with attacks_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ATTACK_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    attacks_json = out / "attacks.json"
    attacks_json.write_text(json.dumps({"settings": settings, "records": records}, indent=2, default=float) + "\n",
                            encoding="utf-8")
    seeds = sorted({s for row in rows for s in row["seeds"]})
    lines = [
        "# Client-side defences against one-shot singularized mixup, on the same partitions",
        "",
        f"Data: {settings['data']}. Cells: {settings['cells']}; seeds {', '.join(map(str, seeds))} (mean ± sample "
        "std over seeds for accuracy and wall time). Accuracy: test accuracy of the model selected on the parties' "
        "validation parts (lowest validation loss), never the best test accuracy. Iterative: FedProx "
        f"(mu = {settings['proximal_mu']:g}), {settings['rounds']} rounds of {settings['local_epochs']} local "
        "epoch(s), AdamW. One-shot: singularized mixup released once, "
        f"tau = {settings['tau']:g}, {settings['noise_mode']} noise, {settings['central_epochs']} server epochs.",
        "",
        f"Attack success. Iterative methods: {settings['audit']} — against an update re-made with the run's own "
        "defence code from the round-1 global model (untrained) and from the run's selected global model (trained); "
        "mean ± std over seeds and attacked parties. One-shot: "
        f"{settings['linear']} of every released row under the conservative threat model (mixing graph and weights "
        "known), scored against each row's own private sample; the same figure fills both columns. Higher = more "
        "leakage. The headline is the *centred* PSNR (each batch minus its own mean image): with BatchNorm the "
        "update is blind to a shift shared by the whole batch (the running statistics, which carry it, are not "
        "matched by this attack), so raw PSNR would rank the BatchNorm models (FedProx, Fed-AugMix) against the "
        "LayerNorm one (DP-Mix) by that blind spot rather than by the defence. The prior-only figures are a guess "
        "without the update (the mean of the party's other rows; centred, that guess is zero).",
        "",
        "| method | test accuracy (%) | rounds | up / down per party | wall time (s) | attack centred PSNR (dB) "
        "untrained / trained | prior-only centred PSNR | SSIM untrained / trained | raw PSNR untrained / trained "
        "(prior-only) | formal guarantee |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {_fmt(row['test_accuracy_mean'], row['test_accuracy_std'])} | "
            f"{'/'.join(str(v) for v in row['rounds'])} | {_mib(row['bytes_uploaded_per_party'])} / "
            f"{_mib(row['bytes_downloaded_per_party'])} | {_fmt(row['wall_seconds_mean'], row['wall_seconds_std'], 1)} | "
            f"{_fmt(*row['psnr_centred_initial'])} / {_fmt(*row['psnr_centred_selected'])} | "
            f"{_fmt(*row['prior_psnr_centred'])} | "
            f"{_fmt(*row['ssim_initial'], 3)} / {_fmt(*row['ssim_selected'], 3)} | "
            f"{_fmt(*row['psnr_initial'])} / {_fmt(*row['psnr_selected'])} ({_fmt(*row['prior_psnr'])}) | "
            f"{row['guarantee']} |"
        )
    lines += ["", _verdict(rows)]
    md_path = out / "defences.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [md_path, csv_path, attacks_csv, attacks_json]


def _verdict(rows: list[dict[str, Any]]) -> str:
    """Plain sentences: which attacks beat the prior-only guess, by how much."""
    parts = []
    for row in rows:
        prior = row["prior_psnr_centred"][0]
        gains = [v[0] - prior for v in (row["psnr_centred_initial"], row["psnr_centred_selected"])
                 if v[0] is not None and prior is not None]
        if not gains:
            continue
        best = max(gains)
        parts.append(f"{row['label']}: centred PSNR {best:+.2f} dB over the prior-only guess at its best stage "
                     f"({'the attack recovers the samples beyond the prior' if best > 1.0 else 'no better than the prior'})")
    return "Reading: " + "; ".join(parts) + "." if parts else ""


def write_panels(panels: dict[str, dict[str, torch.Tensor]], *, path: Path) -> Path:
    """Originals above reconstructions, one column block per method (first attacked party)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(panels)
    count = max(v["original"].shape[0] for v in panels.values())
    count = min(count, 4)
    fig, axes = plt.subplots(2 * len(methods), count, figsize=(1.3 * count, 2.6 * len(methods)), squeeze=False)
    for m, method in enumerate(methods):
        for r, key in enumerate(("original", "reconstruction")):
            images = panels[method][key]
            for c in range(count):
                ax = axes[2 * m + r][c]
                ax.axis("off")
                if c < images.shape[0]:
                    ax.imshow(images[c, 0].detach().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            axes[2 * m + r][0].set_title(f"{METHODS[method]}: {key}", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", nargs="?", type=Path, default=DEFAULT_FILE,
                        help=f"sweep TOML (default {DEFAULT_FILE.relative_to(PROJECT_ROOT)})")
    parser.add_argument("--out", type=Path, help="output folder (default runs/<sweep name>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="replace the file's seeds")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config value for every run (passed to the sweep), repeatable")
    parser.add_argument("--skip-sweep", action="store_true", help="attacks and tables only (no flwr runs)")
    parser.add_argument("--audit-parties", type=int, default=None,
                        help="attack the first N parties of every run (default: all)")
    parser.add_argument("--iterations", type=int, default=AuditProtocol.iterations,
                        help="Inverting Gradients iterations (the paper: 2500)")
    parser.add_argument("--restarts", type=int, default=AuditProtocol.restarts)
    parser.add_argument("--linear-steps", type=int, default=200)
    parser.add_argument("--linear-lr", type=float, default=0.05)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    try:
        spec = sweep_cli.load_sweep(args.sweep_file)
        if args.seeds:
            spec = spec.model_copy(update={"seeds": sweep_cli.SweepSpec._distinct_seeds(args.seeds)})
        sweep_cli.parse_overrides(args.overrides)
    except (sweep_cli.SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = (args.out or PROJECT_ROOT / "runs" / spec.name).resolve()
    if not args.skip_sweep:
        sweep_argv = [str(args.sweep_file), "--out", str(out)]
        sweep_argv += ["--seeds", *map(str, args.seeds)] if args.seeds else []
        for item in args.overrides:
            sweep_argv += ["--set", item]
        sweep_argv += ["--no-progress"] if args.no_progress else []
        code = sweep_cli.main(sweep_argv)
        if code != 0:
            print(f"the sweep stopped with exit code {code}; run the same command again to continue",
                  file=sys.stderr)
            return code
        # The sweep wrote its own report.md; this command's index takes that name.
        if (out / "report.md").exists():
            (out / "report.md").replace(out / "sweep_report.md")
    csv_path = out / "runs.csv"
    if not csv_path.exists():
        print(f"error: {csv_path} does not exist; run without --skip-sweep first", file=sys.stderr)
        return 2
    runs = [r for r in read_runs_csv(csv_path) if not args.seeds or r["seed"] in args.seeds]
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    protocol = AuditProtocol(iterations=args.iterations, restarts=args.restarts)
    linear = LinearInversionAttack(steps=args.linear_steps, lr=args.linear_lr, seed=0)
    records: list[dict[str, Any]] = []
    panels: dict[str, dict[str, torch.Tensor]] = {}
    started = time.perf_counter()
    for run in tqdm(runs, desc="attacks", unit="run", disable=args.no_progress):
        method = method_of(run)
        if method == "one-shot-mixup":
            got, images = attack_one_shot_run(run, linear=linear, parties=args.audit_parties)
        else:
            got, images = audit_iterative_run(run, protocol=protocol, parties=args.audit_parties)
        records.extend(got)
        if images is not None and method not in panels:
            panels[method] = images
    first = json.loads(Path(runs[0]["summary_path"]).read_text(encoding="utf-8"))["config"]
    settings = {
        "sweep": spec.name,
        "data": f"{first['dataset']} (raw inputs, appendix-E MLP; DP-Mix with LayerNorm)",
        "cells": "; ".join(sorted({f"P = {r['parties']}, beta = {r['beta']:g}" for r in runs})),
        "proximal_mu": first["proximal-mu"], "rounds": first["num-rounds"], "local_epochs": first["local-epochs"],
        "tau": first["tau"], "noise_mode": first["noise-mode"], "central_epochs": first["central-epochs"],
        "audit": protocol.describe(),
        "linear": f"linear inversion (Adam, {args.linear_steps} steps, lr {args.linear_lr:g})",
        "attack_seconds": None,
    }
    settings["attack_seconds"] = time.perf_counter() - started
    written = write_comparison(runs, records, out=out, settings=settings)
    if panels:
        written.append(write_panels(panels, path=out / "attack_panels.png"))
    index = ["# Client-side defences vs one-shot singularized mixup", "",
             f"Sweep `{spec.name}` ({args.sweep_file.name}); one command: `python -m simulations.defence_compare`.",
             "", "- [the sweep's full report](sweep_report.md)", "",
             ("\n" + (out / "defences.md").read_text(encoding="utf-8")).replace("\n# ", "\n## ").lstrip("\n")]
    (out / "report.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    written.append(out / "report.md")
    print((out / "defences.md").read_text(encoding="utf-8"))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
