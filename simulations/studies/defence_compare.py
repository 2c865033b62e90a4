"""Client-side iterative defences against one-shot singularized mixup, on the same partitions.

One command makes the comparison of issue 8:

1. **Accuracy and cost.** The sweep file (default ``simulations/sweeps/defences-digits.toml``)
   runs, for every cell and seed, FedProx with each client-side defence (plain, Fed-AugMix,
   DP-Mix_self) and one-shot singularized mixup through ``flwr run`` (resumable, see
   :mod:`simulations.sweep`). Every run's summary gives the test accuracy of the model selected
   on validation, the rounds, the bytes each party sent and received, and the wall time;
   DP-Mix runs add the worst party's (epsilon, delta).
2. **Attack success.** For every iterative run, the gradient-leakage audit
   (:mod:`simulations.studies.gradient_audit`) re-makes a party's update on a batch of 4 with the run's
   own defence code from the round-1 and the selected global model, and attacks it with
   Inverting Gradients under the Fed-AugMix paper's threat model (known labels). The one-shot
   runs have no update to invert: their releases are re-made with each run's configuration and
   attacked with the linear inversion of appendix F under the paper's conservative threat model
   (mixing graph and weights known). Both are scored by MSE, PSNR and SSIM against the private
   samples, beside a prior-only guess (the mean of the party's other rows).

Outputs under ``--out`` (default ``runs/defences-digits``): the sweep's folders and report (its
index is ``sweep_report.md``),
``defences.md`` / ``defences.csv`` (one row per method), ``attacks.csv`` / ``attacks.json`` (one
record per attacked party, stage and seed), ``attack_panels.png`` and ``report.md``.

    python -m simulations.studies.defence_compare
"""

from __future__ import annotations

import argparse
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
from common.io import write_json_atomic, write_text_atomic
from common.run_summary import RunSummary, read_summary
from server.app import WEIGHTS_SUFFIX
from simulations.report import read_runs_csv
from simulations.runtime.executor import Executor
from simulations.studies.base import Study, embed, fmt_spread, set_threads, spread, write_csv, write_image_grid
from simulations.studies.gradient_audit import AUDIT_STAGES, AuditProtocol, audit_party, load_global_models
from simulations.sweep import SWEEPS_DIR, SweepError

__all__ = ["METHODS", "attack_one_shot_run", "audit_iterative_run", "main", "method_of", "write_comparison"]

DEFAULT_FILE = SWEEPS_DIR / "defences-digits.toml"

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


def _spread(values) -> dict[str, float] | None:
    """Mean and sample std over seeds (or attacked parties) of the values there are."""
    return spread(values, ddof=1, finite_only=False)


def _mean(value: dict[str, float] | None) -> float | None:
    return None if value is None else value["mean"]


def _std(value: dict[str, float] | None) -> float | None:
    """The sample std; ``None`` for a single value (no spread to speak of)."""
    return None if value is None or value["n"] < 2 else value["std"]


def _fmt(value: dict[str, float] | None, digits: int = 2) -> str:
    return fmt_spread(value, digits, std_of_one=False)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f} MiB"


def audit_iterative_run(
    run: dict[str, Any], *, protocol: AuditProtocol, parties: int | None, stages=AUDIT_STAGES,
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor] | None]:
    """Gradient-leakage audit of every (stage, party) of one iterative run."""
    summary_path = Path(run["summary_path"])
    summary = read_summary(summary_path)
    cfg = parse_run_config(summary.config)
    models = load_global_models(summary_path.with_name(summary_path.stem + WEIGHTS_SUFFIX))
    count = summary.num_parties if parties is None else min(parties, summary.num_parties)
    records, images = [], None
    for stage in stages:
        state = models[stage]
        if state is None:
            raise ValueError(f"{summary_path}: no {stage} global model was saved")
        for pid in range(count):
            record, pictures = audit_party(cfg, party_id=pid, num_parties=summary.num_parties,
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
    summary = read_summary(run["summary_path"])
    cfg = parse_run_config(summary.config)
    count = summary.num_parties if parties is None else min(parties, summary.num_parties)
    records, images = [], None
    for pid in range(count):
        party = load_party(cfg, pid, summary.num_parties)
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


def _guarantee(method: str, summaries: list[RunSummary]) -> tuple[str, float | None, float | None]:
    if method == "one-shot-mixup":
        privacy = summaries[0].privacy
        return (f"Theorem 2 directional SNR <= tau = {privacy.tau:g} ({privacy.noise_mode} noise; "
                "clamped breaks the bound), one release", None, None)
    defence = summaries[0].defence
    figures = (defence.model_extra or {}) if defence else {}
    if defence is not None and defence.defence in ("dp-mix-self", "dp-mix-diff"):
        eps = [e for e in ((s.defence.model_extra or {}).get("epsilon_max") for s in summaries) if e is not None]
        worst = max(eps) if eps else None
        sgd = figures["dp_sgd"]
        text = (f"(epsilon <= {worst:.2f}, delta = {figures['delta']:g}) per party, record level; sigma "
                f"{sgd['noise_multiplier']:g}, C {sgd['max_grad_norm']:g}; seeded noise (simulation)"
                if worst is not None else "DP-SGD (epsilon not reported)")
        return text, worst, figures["delta"]
    if defence is not None and defence.defence == "fed-augmix":
        return "none (augmentation noise, no formal guarantee)", None, None
    return "none", None, None


# The attack figures of each method: (row key prefix, record key); the row has "<prefix>_initial" (the
# untrained model's, or the release's) and "<prefix>_selected" (the trained model's, or the release's again).
ATTACK_FIGURES = (("psnr_centred", "psnr_centred"), ("psnr", "psnr_matched"), ("ssim", "ssim_matched"))


def write_comparison(
    runs: list[dict[str, Any]], records: list[dict[str, Any]], *, out: Path, settings: dict[str, Any],
) -> list[Path]:
    """``defences.md`` / ``defences.csv`` (one row per method), ``attacks.csv`` / ``attacks.json``."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_method[method_of(run)].append(run)
    attacks: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        attacks[(r["method"], r["stage"])].append(r)
    rows = []
    for method in [m for m in METHODS if m in by_method]:
        group = by_method[method]
        summaries = [read_summary(r["summary_path"]) for r in group]
        acc = _spread(r["test_accuracy"] for r in group)
        wall = _spread(r["wall_seconds"] for r in group)
        guarantee, eps, delta = _guarantee(method, summaries)
        one_shot = method == "one-shot-mixup"
        stages = ("release", "release") if one_shot else AUDIT_STAGES
        both = [r for s in stages for r in attacks.get((method, s), [])]
        row = {
            "method": method, "label": METHODS[method], "n_seeds": len(group),
            "seeds": sorted({r["seed"] for r in group}),
            "accuracy": acc, "test_accuracy_mean": _mean(acc), "test_accuracy_std": _std(acc),
            "rounds": sorted({int(r["rounds"]) for r in group}),
            "bytes_uploaded_per_party": _mean(_spread(r["bytes_uploaded_per_party"] for r in group)),
            "bytes_downloaded_per_party": _mean(_spread(r["bytes_downloaded_per_party"] for r in group)),
            "wall": wall, "wall_seconds_mean": _mean(wall), "wall_seconds_std": _std(wall),
            "guarantee": guarantee, "epsilon_max": eps, "delta": delta,
            "attack": "linear inversion of the release (appendix F)" if one_shot
            else "Inverting Gradients on one update",
            "prior_psnr_centred": _spread(r["prior_psnr_centred"] for r in both),
            "prior_psnr": _spread(r["prior_psnr"] for r in both),
        }
        for name, key in ATTACK_FIGURES:
            for when, stage in zip(("initial", "selected"), stages):
                row[f"{name}_{when}"] = _spread(r[key] for r in attacks.get((method, stage), []))
        rows.append(row)
    spreads = ("psnr_centred_initial", "psnr_centred_selected", "prior_psnr_centred", "psnr_initial",
               "psnr_selected", "ssim_initial", "ssim_selected", "prior_psnr")
    csv_path = write_csv(out / "defences.csv", [
        {**row, **{key: _mean(row[key]) for key in spreads}, "rounds": "/".join(str(v) for v in row["rounds"]),
         "method": row["label"]} for row in rows], columns=COMPARISON_COLUMNS)
    attacks_csv = write_csv(out / "attacks.csv", records, columns=ATTACK_COLUMNS)
    attacks_json = write_json_atomic(out / "attacks.json", {"settings": settings, "records": records})
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
            f"| {row['label']} | {_fmt(row['accuracy'])} | "
            f"{'/'.join(str(v) for v in row['rounds'])} | {_mib(row['bytes_uploaded_per_party'])} / "
            f"{_mib(row['bytes_downloaded_per_party'])} | {_fmt(row['wall'], 1)} | "
            f"{_fmt(row['psnr_centred_initial'])} / {_fmt(row['psnr_centred_selected'])} | "
            f"{_fmt(row['prior_psnr_centred'])} | "
            f"{_fmt(row['ssim_initial'], 3)} / {_fmt(row['ssim_selected'], 3)} | "
            f"{_fmt(row['psnr_initial'])} / {_fmt(row['psnr_selected'])} ({_fmt(row['prior_psnr'])}) | "
            f"{row['guarantee']} |"
        )
    lines += ["", _verdict(rows)]
    md_path = write_text_atomic(out / "defences.md", "\n".join(lines) + "\n")
    return [md_path, csv_path, attacks_csv, attacks_json]


def _verdict(rows: list[dict[str, Any]]) -> str:
    """Plain sentences: which attacks beat the prior-only guess, by how much."""
    parts = []
    for row in rows:
        prior = _mean(row["prior_psnr_centred"])
        gains = [_mean(v) - prior for v in (row["psnr_centred_initial"], row["psnr_centred_selected"])
                 if _mean(v) is not None and prior is not None]
        if not gains:
            continue
        best = max(gains)
        parts.append(f"{row['label']}: centred PSNR {best:+.2f} dB over the prior-only guess at its best stage "
                     f"({'the attack recovers the samples beyond the prior' if best > 1.0 else 'no better than the prior'})")
    return "Reading: " + "; ".join(parts) + "." if parts else ""


def write_panels(panels: dict[str, dict[str, torch.Tensor]], *, path: Path) -> Path:
    """Originals above reconstructions, one pair of rows per method (first attacked party)."""
    count = min(max(v["original"].shape[0] for v in panels.values()), 4)
    rows = []
    for method, images in panels.items():
        for key in ("original", "reconstruction"):
            batch = images[key]
            rows.append((f"{METHODS[method]}: {key}",
                         [batch[c, 0].detach().numpy() if c < batch.shape[0] else None for c in range(count)]))
    return write_image_grid(rows, path=path, cell=(1.3, 1.3), labels="above", frame=False)


def main(argv: list[str] | None = None, *, executor: Executor | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    Study.add_sweep_arguments(parser, default_file=DEFAULT_FILE, skip_help="attacks and tables only (no flwr runs)")
    parser.add_argument("--audit-parties", type=int, default=None,
                        help="attack the first N parties of every run (default: all)")
    parser.add_argument("--iterations", type=int, default=AuditProtocol.iterations,
                        help="Inverting Gradients iterations (the paper: 2500)")
    parser.add_argument("--restarts", type=int, default=AuditProtocol.restarts)
    parser.add_argument("--linear-steps", type=int, default=200)
    parser.add_argument("--linear-lr", type=float, default=0.05)
    args = parser.parse_args(argv)

    try:
        study, spec, overrides = Study.load_sweep_arguments(args, module="defence_compare")
    except (SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = study.out
    if not args.skip_sweep:
        code = study.sweep(spec, overrides=overrides, executor=executor)
        if code != 0:
            print(f"the sweep stopped with exit code {code}; run the same command again to continue",
                  file=sys.stderr)
            return code
    csv_path = out / "runs.csv"
    if not csv_path.exists():
        print(f"error: {csv_path} does not exist; run without --skip-sweep first", file=sys.stderr)
        return 2
    runs = [r for r in read_runs_csv(csv_path) if not args.seeds or r["seed"] in args.seeds]
    set_threads()
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
    first = read_summary(runs[0]["summary_path"]).config
    settings = {
        "sweep": spec.name,
        "data": f"{first['dataset']} (raw inputs, appendix-E MLP; DP-Mix with LayerNorm)",
        "cells": "; ".join(sorted({f"P = {r['parties']}, beta = {r['beta']:g}" for r in runs})),
        "proximal_mu": first["proximal-mu"], "rounds": first["num-rounds"], "local_epochs": first["local-epochs"],
        "tau": first["tau"], "noise_mode": first["noise-mode"], "central_epochs": first["central-epochs"],
        "audit": protocol.describe(),
        "linear": f"linear inversion (Adam, {args.linear_steps} steps, lr {args.linear_lr:g})",
        "attack_seconds": time.perf_counter() - started,
    }
    written = write_comparison(runs, records, out=out, settings=settings)
    if panels:
        written.append(write_panels(panels, path=out / "attack_panels.png"))
    defences_md = (out / "defences.md").read_text(encoding="utf-8")
    written.append(study.write_index([
        "# Client-side defences vs one-shot singularized mixup", "",
        f"Sweep `{spec.name}` ({args.sweep_file.name}); one command: `{study.command}`.", "",
        "- [the sweep's full report](sweep_report.md)", "", embed(defences_md)]))
    print(defences_md)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
