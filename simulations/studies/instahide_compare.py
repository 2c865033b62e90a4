from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from attacks.evaluation import evaluate_reconstruction
from attacks.instahide import (
    CarliniInstaHideAttack,
    grant_instahide_knowledge,
    neighbour_precision,
    shares_component,
    similarity_neighbours,
)
from attacks.linear import LinearInversionAttack
from attacks.lpips_metric import LpipsMetric
from attacks.metrics import snr_db
from attacks.threat_model import grant_knowledge, observe
from client.party import load_party, load_public_pool
from client.release import make_release
from common.config import RunConfig, parse_run_config
from common.io import write_json_atomic, write_text_atomic
from simulations.runtime.executor import Executor
from simulations.studies.base import (
    Study,
    StudyError,
    add_lpips_arguments,
    embed,
    fmt_spread,
    load_lpips,
    set_threads,
    spread,
    write_csv,
    write_image_grid,
)
from simulations.sweep import SWEEPS_DIR, SweepError, SweepSpec, expand_runs

__all__ = ["attack_cell", "main", "paired_cells", "write_attack_tables"]

DEFAULT_FILE = SWEEPS_DIR / "instahide-digits.toml"
# Released rows sharing a private sample with a given row: 2 for both encodings here
# (InstaHide with k_private = 2 and Algorithm 1 both put each sample into two rows).
NEIGHBOURS = 2


def paired_cells(spec: SweepSpec, *, overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The one-shot cells of ``spec`` (with the ``--set`` values) that ran with both encodings:
    per (P, beta, rho, seed), the run config of each encoding."""
    cells: dict[tuple, dict[str, Any]] = {}
    for run in expand_runs(spec, overrides=overrides):
        if run.strategy != "one-shot-mixup" or run.release != "once":
            continue
        encoding = run.run_config.get("encoding", "singularized")
        cell = cells.setdefault((run.parties, run.beta, run.rho, run.seed), {
            "parties": run.parties, "beta": run.beta, "rho": run.rho, "seed": run.seed, "configs": {}})
        cell["configs"][encoding] = run.run_config
    paired = [c for c in cells.values() if set(c["configs"]) == {"singularized", "instahide"}]
    if not paired:
        raise SweepError("the sweep has no cell run with both encodings (encodings = "
                         "['singularized', 'instahide'] and releases = ['once'])")
    return paired


def _sample_shape(cfg: RunConfig, rows: torch.Tensor) -> tuple[int, ...]:
    if rows.ndim > 2:
        return tuple(rows.shape[1:])
    if cfg.dataset == "digits":
        return (1, 8, 8)
    return (int(rows[0].numel()),)


def _data_range(bounds, sample_shape: tuple[int, ...]):
    lo, hi = bounds
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        width = (torch.as_tensor(hi) - torch.as_tensor(lo)).reshape(sample_shape)
        return [float(w) for w in width.reshape(sample_shape[0], -1)[:, 0]]
    return float(hi) - float(lo)


def _spread(values) -> dict[str, float] | None:
    """Mean ± population std of the values that were computed (``None``: not computed, e.g.
    LPIPS without a metric; NaN left out; an exact reconstruction's infinite SNR kept)."""
    return spread(values, ddof=0, finite_only=False)


def _fmt(value: dict | None, digits: int = 2) -> str:
    return fmt_spread(value, digits, missing="–")


def _pct(value: dict | None) -> str:
    return fmt_spread(value, 1, missing="–", scale=100, unit=" %")


def _scores(reconstruction, originals, *, data_range, lpips) -> dict[str, float | None]:
    scored = evaluate_reconstruction(reconstruction, originals, data_range=data_range, lpips=lpips)
    mean = lambda t: None if t is None else float(t.double().mean())  # noqa: E731
    return {"snr_db": mean(scored.snr_db), "psnr": mean(scored.psnr), "ssim": mean(scored.ssim),
            "lpips": mean(scored.lpips)}


def attack_cell(
    cell: dict[str, Any],
    *,
    linear: LinearInversionAttack,
    carlini: CarliniInstaHideAttack,
    lpips: LpipsMetric | None,
    keep_images: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor] | None]:
    """Attack every party's release of one cell with both encodings; one record per
    (party, variant), plus the first party's images when ``keep_images``."""
    records: list[dict[str, Any]] = []
    images = None
    device = torch.device("cpu")
    single_cfg = parse_run_config(cell["configs"]["singularized"])
    insta_cfg = parse_run_config(cell["configs"]["instahide"])
    if single_cfg.uses_backbone:
        raise ValueError("the attack comparison runs on raw inputs (backbone = 'none'): with a backbone the "
                         "releases are features, not images")
    strict_cfg = single_cfg.model_copy(update={"noise_mode": "strict"})
    public = load_public_pool(insta_cfg)
    for pid in range(cell["parties"]):
        party = load_party(single_cfg, pid, cell["parties"])
        private = party.train_x.float()
        shape = _sample_shape(single_cfg, private)
        originals = private.reshape(private.shape[0], *shape)
        data_range = _data_range(party.input_bounds, shape)
        prior = public.float().mean(dim=0, keepdim=True).expand(private.shape[0], -1).reshape(originals.shape)
        base = {"parties": cell["parties"], "beta": cell["beta"], "rho": cell["rho"], "seed": cell["seed"],
                "party": pid, "n": int(private.shape[0]),
                "prior_only_snr_db": float(snr_db(originals, prior).double().mean())}
        for variant, cfg in (("singularized", single_cfg), ("singularized-strict", strict_cfg)):
            made = make_release(cfg, party, device=device, with_validation=False)
            observed = observe(made.train, sample_shape=shape)
            knowledge = grant_knowledge(made.train, noise_mode=cfg.noise_mode, valid_range=party.input_bounds)
            started = time.perf_counter()
            rec = linear.reconstruct(observed, knowledge)
            seconds = time.perf_counter() - started
            sources = torch.stack([torch.arange(observed.n), made.train.partner.cpu().long()], dim=1)
            found = neighbour_precision(similarity_neighbours(observed, neighbours=NEIGHBOURS),
                                        shares_component(sources))
            records.append({**base, "encoding": "singularized", "variant": variant, "noise_mode": cfg.noise_mode,
                            "tau": cfg.tau, "attack": linear.name, "attack_seconds": seconds,
                            **_scores(rec, originals, data_range=data_range, lpips=lpips),
                            "reidentification_rate": made.metrics["reid-rate"],
                            "cluster_precision": found["precision"], "cluster_chance": found["chance"]})
            if keep_images and pid == 0 and variant == "singularized":
                images = {"original": originals, "singularized release": observed.images(),
                          "linear attack": rec.x.reshape(originals.shape)}
        made = make_release(insta_cfg, load_party(insta_cfg, pid, cell["parties"]), device=device,
                            with_validation=False)
        observed = observe(made.train, sample_shape=shape)
        knowledge = grant_instahide_knowledge(made.train, public_pool=public.float(), valid_range=party.input_bounds)
        started = time.perf_counter()
        rec = carlini.reconstruct(observed, knowledge)
        seconds = time.perf_counter() - started
        found = neighbour_precision(similarity_neighbours(observed, neighbours=NEIGHBOURS),
                                   shares_component(made.train.private_index))
        records.append({**base, "encoding": "instahide", "variant": "instahide", "noise_mode": "none", "tau": None,
                        "attack": carlini.name, "attack_seconds": seconds,
                        **_scores(rec, originals, data_range=data_range, lpips=lpips),
                        "reidentification_rate": made.metrics["reid-rate"],
                        "cluster_precision": found["precision"], "cluster_chance": found["chance"],
                        "k": insta_cfg.instahide_k, "k_private": insta_cfg.instahide_k_private})
        if images is not None and pid == 0:
            images["InstaHide release |x~|"] = observed.images().abs()
            images["Carlini attack"] = rec.x.reshape(originals.shape)
    return records, images


VARIANT_LABELS = {
    "singularized": "singularized mixup, {noise} noise (as in the accuracy runs)",
    "singularized-strict": "singularized mixup, strict noise (Theorem 2's mechanism; reference)",
    "instahide": "InstaHide k = {k}, k_private = {k_private}",
}
CSV_COLUMNS = ["encoding", "variant", "noise_mode", "tau", "parties", "beta", "rho", "seed", "party", "n", "attack",
               "snr_db", "psnr", "ssim", "lpips", "prior_only_snr_db", "reidentification_rate", "cluster_precision",
               "cluster_chance", "attack_seconds"]


def write_attack_tables(records: list[dict[str, Any]], *, out: Path, settings: dict[str, Any]) -> list[Path]:
    """``attacks.csv`` (one row per party and variant), ``attacks.json`` and ``attacks.md``
    (mean ± std over parties, cells and seeds, per variant and per cell)."""
    csv_path = write_csv(out / "attacks.csv", records, columns=CSV_COLUMNS)
    json_path = write_json_atomic(out / "attacks.json", {"settings": settings, "records": records})
    by_variant: dict[str, list[dict]] = defaultdict(list)
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        by_variant[r["variant"]].append(r)
        by_cell[(r["variant"], r["parties"], r["beta"], r["rho"])].append(r)
    first = {v: rs[0] for v, rs in by_variant.items()}
    label = lambda v: VARIANT_LABELS[v].format(noise=first[v]["noise_mode"], k=first[v].get("k"),  # noqa: E731
                                               k_private=first[v].get("k_private"))
    seeds = sorted({r["seed"] for r in records})
    lines = [
        "# Attack success at matched settings: InstaHide vs singularized mixup",
        "",
        f"Data: {settings['data']}. Releases: every party of every one-shot cell of the accuracy sweep "
        f"({settings['cells']}), made with each run's own configuration (release once; seeds "
        f"{', '.join(str(s) for s in seeds)}). Threat model for every attack: the server's view plus the mixing "
        "graph and the mixing weights (the paper's conservative model, section 5.1); InstaHide's attacker also "
        "knows the public pool (not which public rows went where), never the sign mask. Figures: mean ± std over "
        "parties, cells and seeds of each party's mean over its released rows.",
        "",
        f"Attacks: {settings['linear']}; {settings['carlini']}. Clustering: for every released row, its "
        f"{NEIGHBOURS} most similar other rows by {settings['similarity']} of |x~|; precision = share of them that "
        "truly share a private sample with it (chance: the density of sharing pairs). LPIPS: "
        f"{settings['lpips']}.",
        "",
        "| encoding | attack | SNR (dB) | PSNR (dB) | SSIM | LPIPS | prior-only SNR (dB) | re-identified | "
        "clustering precision | chance |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [v for v in ("instahide", "singularized", "singularized-strict") if v in by_variant]
    for v in order:
        rs = by_variant[v]
        lines.append(
            f"| {label(v)} | {rs[0]['attack']} | {_fmt(_spread(r['snr_db'] for r in rs))} | "
            f"{_fmt(_spread(r['psnr'] for r in rs))} | {_fmt(_spread(r['ssim'] for r in rs), 3)} | "
            f"{_fmt(_spread(r['lpips'] for r in rs), 3)} | {_fmt(_spread(r['prior_only_snr_db'] for r in rs))} | "
            f"{_pct(_spread(r['reidentification_rate'] for r in rs))} | "
            f"{_pct(_spread(r['cluster_precision'] for r in rs))} | {_pct(_spread(r['cluster_chance'] for r in rs))} |"
        )
    lines += ["", "Per cell (SNR of the attack minus the prior-only SNR, dB; mean ± std over parties and seeds):", "",
              "| P | beta | rho | " + " | ".join(label(v) for v in order) + " |",
              "|---|---|---|" + "---|" * len(order)]
    cells = sorted({(p, b, rho) for (_, p, b, rho) in by_cell})
    for p, b, rho in cells:
        row = []
        for v in order:
            rs = by_cell.get((v, p, b, rho), [])
            row.append(_fmt(_spread(r["snr_db"] - r["prior_only_snr_db"] for r in rs)))
        lines.append(f"| {p} | {b:g} | {rho:g} | " + " | ".join(row) + " |")
    gains = {v: _spread(r["snr_db"] - r["prior_only_snr_db"] for r in by_variant[v]) for v in order}
    lines += ["", _verdict(gains, by_variant, label)]
    md_path = write_text_atomic(out / "attacks.md", "\n".join(lines) + "\n")
    return [md_path, csv_path, json_path]


def _verdict(gains: dict[str, dict | None], by_variant: dict[str, list[dict]], label) -> str:  # noqa: ANN001
    """One factual sentence per variant: gain over the prior and clustering against chance."""
    parts = []
    for v, gain in gains.items():
        if gain is None:
            continue
        rs = by_variant[v]
        precision = _spread(r["cluster_precision"] for r in rs)["mean"]
        chance = _spread(r["cluster_chance"] for r in rs)["mean"]
        beats = (f"beats the prior-only guess by {gain['mean']:.2f} dB" if gain["mean"] > 0
                 else f"falls {-gain['mean']:.2f} dB short of the prior-only guess")
        parts.append(f"{label(v)}: the attack {beats} on average, "
                     f"and similarity of |x~| finds rows sharing a private sample with precision "
                     f"{100 * precision:.1f} % (chance {100 * chance:.1f} %).")
    return " ".join(parts)




def write_panels(images: dict[str, torch.Tensor], *, path: Path, title: str, count: int = 8) -> Path:
    """Rows: original, each release and reconstruction; columns: the first ``count`` samples,
    each min-max scaled."""
    def scaled(img: torch.Tensor):  # noqa: ANN202
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        lo, hi = float(img.min()), float(img.max())
        return ((img - lo) / (hi - lo + 1e-12)).numpy()

    rows = []
    for name, batch in images.items():
        batch = batch[:count].detach().float()
        rows.append((name, [scaled(batch[col]) for col in range(count)]))
    return write_image_grid(rows, path=path, cell=(1.2, 1.3), margin=(0, 0.6), title=title, title_size=8,
                            labels="left-horizontal", fixed_range=False)


def main(argv: list[str] | None = None, *, executor: Executor | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    Study.add_sweep_arguments(parser, default_file=DEFAULT_FILE,
                              skip_help="attacks only (the accuracy sweep is not run)")
    parser.add_argument("--linear-steps", type=int, default=200)
    parser.add_argument("--linear-lr", type=float, default=0.05)
    parser.add_argument("--carlini-steps", type=int, default=500)
    parser.add_argument("--carlini-lr", type=float, default=0.05)
    add_lpips_arguments(parser)
    args = parser.parse_args(argv)

    try:
        study, spec, overrides = Study.load_sweep_arguments(args, module="instahide_compare")
        cells = paired_cells(spec, overrides=overrides)
    except (SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = study.out
    if not args.skip_sweep:
        code = study.sweep(spec, overrides=overrides, executor=executor)
        if code != 0:
            print(f"the accuracy sweep stopped with exit code {code}; run the same command again to continue",
                  file=sys.stderr)
            return code
    try:
        lpips = load_lpips(args, value_range=(0.0, 1.0),
                           uncalibrated_note="the values show the mechanics only, not perceptual similarity")
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    set_threads()
    linear = LinearInversionAttack(steps=args.linear_steps, lr=args.linear_lr, seed=0)
    carlini = CarliniInstaHideAttack(steps=args.carlini_steps, lr=args.carlini_lr)
    first = parse_run_config(cells[0]["configs"]["instahide"])
    settings = {
        "sweep": spec.name,
        "data": f"{first.dataset} ({'raw inputs' if not first.uses_backbone else first.backbone}); public pool: "
        f"public-fraction = {first.public_fraction:g} of the training split, held out for both encodings",
        "cells": "; ".join(sorted({f"P = {c['parties']}, beta = {c['beta']:g}" + (f", rho = {c['rho']:g}"
                                   if c["rho"] != 1.0 else "") for c in cells})),
        "seeds": sorted({c["seed"] for c in cells}),
        "linear": f"linear inversion (appendix F: Adam, {args.linear_steps} steps, lr {args.linear_lr})",
        "carlini": f"Carlini et al. noisy system on |x~| (Adam, {args.carlini_steps} steps, lr {args.carlini_lr})",
        "similarity": "correlation",
        "lpips": lpips.text,
    }
    records: list[dict[str, Any]] = []
    panels = None
    started = time.perf_counter()
    for cell in tqdm(cells, desc="attacks", unit="cell", disable=args.no_progress):
        got, images = attack_cell(cell, linear=linear, carlini=carlini, lpips=lpips.metric,
                                  keep_images=panels is None)
        records.extend(got)
        panels = panels or images
    settings["attack_seconds"] = time.perf_counter() - started
    written = write_attack_tables(records, out=out, settings=settings)
    if panels:
        c = cells[0]
        written.append(write_panels(panels, path=out / "attack_panels.png",
                                    title=f"party 0, P = {c['parties']}, beta = {c['beta']:g}, seed {c['seed']}: "
                                    "originals, releases and reconstructions (each image min-max scaled)"))
    pages = [name for name in ("table4.md", "attacks.md") if (out / name).exists()]
    index = ["# InstaHide vs singularized mixup", "",
             f"Sweep `{spec.name}` ({args.sweep_file.name}); one command: `{study.command}`.", ""]
    index += [f"- [{name}]({name})" for name in pages]
    index += ["- [the accuracy sweep's full report](sweep_report.md)"]
    index += [line for name in pages for line in ("", embed((out / name).read_text(encoding="utf-8")))]
    if panels:
        index += ["", "![attack panels](attack_panels.png)"]
    written.append(study.write_index(index))
    for path in written:
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
