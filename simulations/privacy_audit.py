"""The paper's security section made runnable: Tables 1-3 and the figure panels, per tau and
noise mode, with what the release measurably leaks beside them.

For every ``tau`` in the grid and both noise modes (``strict``: Theorem 2's spherical noise;
``clamped``: the noisy partner clipped to the valid range, as the authors' code does) one
party's private images are released once with Algorithm 1 (radius from Theorem 2 on the
private set itself), then

* **Table 1**: the LPIPS post-filter of section 5.1 (party side: it needs the originals):
  the share of released images whose LPIPS to their own original is below the threshold;
* **Table 2**: the linear inversion attack of appendix F (Adam on the unknown images, known
  mixing weights and partner graph: the paper's conservative threat model), SNR (dB), SSIM
  and LPIPS of its reconstructions, mean ± std over the private set;
* **Table 3**: the nonlinear U-Net attack of appendix F, trained on mixtures of a *public*
  set made with the same mechanism and tau, applied zero-shot to the private release; mean
  ± std over seeds of the per-seed means, and the best seed's SNR;
* beside them, measured on the release itself: the directional SNR along the data's first
  principal direction and random directions against Theorem 2's tau, the re-identification
  rate (share of released rows nearest to one of their two sources) and Theorem 1's
  per-sample minimax bound (strict mode only);
* **panels** (one PNG per noise mode): original / release / linear / U-Net reconstruction
  per tau, for the image best recovered by the linear attack at the largest tau.

The offline default uses scikit-learn's digits: a seeded half of the training split is the
private party, the other half the attacker's public set (the same distribution, which
makes the U-Net attacker stronger than the paper's Tiny-ImageNet -> CIFAR-10 transfer).
Image data sets (``--dataset cifar10 --data-dir ...``, optionally ``--public-dataset
tiny-imagenet`` as in the paper and ``--image-size 224``) are audited in the normalised
space of appendix E, with per-channel valid ranges.

Every table also reports a *prior-only* baseline: the SNR of answering the public mean
image for every row, which an attacker reaches without looking at the release; an attack
leaks only what it gains above it.

LPIPS needs AlexNet weights that cannot be downloaded here: ``--lpips-weights`` names a local
torchvision ``alexnet`` state_dict. Without one, LPIPS columns and Table 1 say "n/a";
``--lpips-uncalibrated`` computes them with a randomly initialised AlexNet, for the
mechanics only, and every table that uses them says so.

    python -m simulations.privacy_audit                       # digits, 7 taus x 2 modes
    python -m simulations.privacy_audit --lpips-weights /abs/alexnet-owt-7be5be79.pth
    python -m simulations.privacy_audit --dataset cifar10 --data-dir /data --public-dataset tiny-imagenet \
        --image-size 224 --device cuda
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from attacks.evaluation import evaluate_reconstruction
from attacks.linear import LinearInversionAttack
from attacks.metrics import snr_db
from attacks.lpips_filter import lpips_filter
from attacks.lpips_metric import LpipsMetric, LpipsWeightsMissing
from attacks.threat_model import grant_knowledge, observe
from attacks.unet import train_unet_attacker
from common.calibration import data_statistics, noise_multiplier
from common.leakage import measure_release_snr, reidentification_rate, theorem1_report
from common.mixup import singularized_mixup
from common.preprocess import NORMALISATION, ImagePreprocessing
from loaders import load_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TAUS = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
NOISE_MODES = ("strict", "clamped")


@dataclass(frozen=True)
class AuditData:
    """The private party's images, the attacker's public images, their shape and range.

    ``valid_range`` is ``(lo, hi)`` as floats, or as ``(C, H, W)`` tensors for normalised
    images (one range per channel, repeated over the pixels).
    """

    name: str
    private: torch.Tensor  # (n, C, H, W)
    private_labels: torch.Tensor
    public: torch.Tensor
    sample_shape: tuple[int, ...]
    valid_range: tuple[float, float] | tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    description: str

    @property
    def flat_range(self):
        """The range as Algorithm 1's clamp takes it for flattened rows."""
        lo, hi = self.valid_range
        return (lo.reshape(-1), hi.reshape(-1)) if isinstance(lo, torch.Tensor) else (lo, hi)

    @property
    def data_range(self):
        """Width of the valid range: a float, or one width per channel."""
        lo, hi = self.valid_range
        if isinstance(lo, torch.Tensor):
            return (hi - lo)[:, 0, 0]
        return hi - lo


def digits_audit_data(*, private_size: int, seed: int) -> AuditData:
    """Split digits' training split into a private party and a disjoint public set."""
    data = load_dataset("digits", data_dir="", test_fraction=0.2, download=False)
    x = data.train_x.reshape(-1, 1, 8, 8).float()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    if not 2 <= private_size < x.shape[0] - 32:
        raise ValueError(f"private-size must be in [2, {x.shape[0] - 32}), got {private_size}")
    private, public = order[:private_size], order[private_size:]
    return AuditData(
        name="digits", private=x[private], private_labels=data.train_y[private], public=x[public],
        sample_shape=(1, 8, 8),
        valid_range=(0.0, 1.0), num_classes=data.num_classes,
        description=f"digits: {private_size} private images, {public.numel()} public images (disjoint, same "
        "distribution), 1x8x8 in [0, 1]",
    )


def image_audit_data(
    *,
    dataset: str,
    data_dir: str,
    private_size: int,
    public_size: int,
    image_size: int | None,
    seed: int,
    public_dataset: str | None = None,
    public_data_dir: str = "",
) -> AuditData:
    """A private party drawn from an image data set's training split, normalised as in the
    paper's appendix E (Table 7 statistics; resized to ``image_size`` and 3 channels when
    given, native size otherwise), and an attacker's public set: ``public_dataset`` when
    given (the paper trains its U-Net on Tiny-ImageNet and attacks CIFAR-10), else a disjoint
    part of the same training split. Both go through the private set's preprocessing, which
    the attacker knows."""
    data = load_dataset(dataset, data_dir=data_dir, test_fraction=0.2, download=False)
    if data.kind != "image":
        raise ValueError(f"{dataset} holds no images")
    mean, std = NORMALISATION[dataset]
    pre = ImagePreprocessing(mean=mean, std=std, size=image_size, channels=3 if image_size else None)
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(seed))
    private_idx = order[:private_size]
    if public_dataset:
        pub = load_dataset(public_dataset, data_dir=public_data_dir or data_dir, test_fraction=0.2, download=False)
        pub_order = torch.randperm(pub.train_x.shape[0], generator=torch.Generator().manual_seed(seed + 1))
        public_images, public_name = pub.train_x[pub_order[:public_size]], public_dataset
    else:
        public_images, public_name = data.train_x[order[private_size : private_size + public_size]], dataset
    if public_images.shape[0] < 32:
        raise ValueError(f"the public set has {public_images.shape[0]} images; the U-Net attacker needs at least 32")
    private = pre(data.train_x[private_idx])
    public = pre(public_images)
    if public.shape[1:] != private.shape[1:]:
        raise ValueError(f"public images map to {tuple(public.shape[1:])}, private ones to {tuple(private.shape[1:])}; "
                         "set --image-size so both have one shape")
    shape = tuple(private.shape[1:])
    lo, hi = pre.valid_bounds(shape[0])
    valid = (lo[0].expand(*shape).contiguous(), hi[0].expand(*shape).contiguous())
    return AuditData(
        name=dataset, private=private, private_labels=data.train_y[private_idx], public=public, sample_shape=shape,
        valid_range=valid, num_classes=data.num_classes,
        description=f"{dataset}: {private.shape[0]} private images; public: {public.shape[0]} images of "
        f"{public_name}{' (disjoint part of the same split)' if not public_dataset else ''}; "
        f"{'x'.join(map(str, shape))}, normalised with Table 7's statistics",
    )


def _fmt(spread: dict | None, digits: int = 2) -> str:
    if not spread or spread.get("mean") is None or not math.isfinite(spread["mean"]):
        return "n/a"
    return f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f}"


def _spread(values: list[float]) -> dict[str, float] | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def _per_sample_spread(values: torch.Tensor | None) -> dict[str, float] | None:
    return None if values is None else _spread(values.double().tolist())


def audit_cell(
    data: AuditData,
    *,
    tau: float,
    noise_mode: str,
    alpha: float,
    mf_formula: str,
    seed: int,
    linear: LinearInversionAttack,
    unet_seeds: list[int],
    unet_epochs: int,
    unet_base: int,
    lpips: LpipsMetric | None,
    lpips_threshold: float,
    device: str,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Release, filter, attack and measure one (tau, noise mode); returns the figures and the
    images the panels need (original, release, reconstructions)."""
    n = data.private.shape[0]
    flat = data.private.reshape(n, -1)
    stats = data_statistics(flat, generator=torch.Generator().manual_seed(seed))
    m_f = noise_multiplier(tau=tau, alpha=alpha, dim=stats.dim, c=stats.c, formula=mf_formula)
    radius = m_f * stats.D
    clamp = data.flat_range if noise_mode == "clamped" else None
    release = singularized_mixup(flat, data.private_labels, radius=radius, alpha=alpha,
                                 generator=torch.Generator().manual_seed(seed), clamp=clamp,
                                 num_classes=data.num_classes)
    released_images = release.x.reshape(n, *data.sample_shape)
    data_range = data.data_range

    # Party side: measured leakage and the LPIPS post-filter (both need the originals).
    snr = measure_release_snr(flat, release, alpha=alpha)
    theorem1 = theorem1_report(flat, release)
    figures: dict[str, Any] = {
        "tau": tau, "noise_mode": noise_mode, "alpha": alpha, "mf_formula": mf_formula, "seed": seed,
        "radius": radius, "noise_multiplier": m_f, "n_private": n,
        "measured_snr_pc1": snr.snr_pc1, "snr_bound_pc1": snr.bound_pc1,
        "measured_snr_random": snr.snr_random, "snr_bound_random": snr.bound_random,
        "reidentification_rate": reidentification_rate(flat, release),
        "theorem1_relative_min": theorem1.min_relative, "theorem1_relative_median": theorem1.median_relative,
        "theorem1_applies": noise_mode == "strict",
    }
    if lpips is not None:
        # LPIPS is computed on the valid range: a strict release far outside it is shown as
        # what a viewer would see after clipping (the metric's input range).
        shown = released_images.clamp(*data.valid_range)
        filtered = lpips_filter(shown, data.private, metric=lpips, threshold=lpips_threshold)
        figures["lpips_filter_excluded_fraction"] = float(filtered.excluded_fraction)
        figures["lpips_release_vs_original"] = _per_sample_spread(filtered.distances)
    else:
        figures["lpips_filter_excluded_fraction"] = None
        figures["lpips_release_vs_original"] = None

    # What an attacker gets from the prior alone: the public mean image for every row. An
    # attack's SNR means something only above this line.
    prior_guess = data.public.mean(dim=0, keepdim=True).expand_as(data.private)
    figures["prior_only_snr_db"] = _per_sample_spread(snr_db(data.private, prior_guess))

    # Server side: the attacks see the release and the granted knowledge only.
    observed = observe(release, sample_shape=data.sample_shape)
    knowledge = grant_knowledge(release, noise_mode=noise_mode, valid_range=data.valid_range)
    started = time.perf_counter()
    linear_rec = linear.reconstruct(observed, knowledge)
    linear_scores = evaluate_reconstruction(linear_rec, data.private, data_range=data_range, lpips=lpips)
    figures["linear"] = {
        "snr_db": _per_sample_spread(linear_scores.snr_db), "psnr": _per_sample_spread(linear_scores.psnr),
        "ssim": _per_sample_spread(linear_scores.ssim), "lpips": _per_sample_spread(linear_scores.lpips),
        "seconds": time.perf_counter() - started,
    }
    per_seed = []
    best = None
    for unet_seed in unet_seeds:
        trained = train_unet_attacker(
            data.public, tau=tau, alpha=alpha, noise_mode=noise_mode, valid_range=data.valid_range,
            epochs=unet_epochs, base=unet_base, seed=unet_seed, device=device, progress=False,
            mf_formula=mf_formula,
        )
        rec = trained.attack(device=device).reconstruct(observed, knowledge)
        scores = evaluate_reconstruction(rec, data.private, data_range=data_range, lpips=lpips)
        seed_means = {
            "seed": unet_seed,
            "snr_db": float(scores.snr_db.double().mean()),
            "ssim": float(scores.ssim.double().mean()),
            "lpips": float(scores.lpips.double().mean()) if scores.lpips is not None else None,
            "final_train_loss": float(trained.history[-1]) if trained.history else None,
        }
        per_seed.append(seed_means)
        if best is None or seed_means["snr_db"] > best[0]:
            best = (seed_means["snr_db"], rec.x)
    figures["unet"] = {
        "per_seed": per_seed,
        "snr_db": _spread([s["snr_db"] for s in per_seed]),
        "ssim": _spread([s["ssim"] for s in per_seed]),
        "lpips": _spread([s["lpips"] for s in per_seed]) if lpips is not None else None,
        "best_snr_db": max(s["snr_db"] for s in per_seed),
        "epochs": unet_epochs, "base": unet_base,
    }
    images = {
        "original": data.private, "release": released_images,
        "linear": linear_rec.x.reshape(n, *data.sample_shape),
        "unet": best[1].reshape(n, *data.sample_shape), "linear_snr": linear_scores.snr_db,
    }
    return figures, images


# ------------------------------------------------------------------------------- outputs


def _tau_text(tau: float) -> str:
    return f"{tau:g}"


def _header(settings: dict[str, Any]) -> list[str]:
    lines = [
        f"- Data: {settings['data']}",
        f"- Release: once per party (Algorithm 1), alpha = {settings['alpha']}, m_f formula `{settings['mf_formula']}`, "
        f"mixing seed {settings['seed']}; radius from Theorem 2 on the private set",
        "- Noise modes: `strict` = Theorem 2's spherical noise; `clamped` = noisy partner clipped to the valid "
        "range (the authors' code; no Theorem 2 guarantee)",
        f"- LPIPS: {settings['lpips']}",
    ]
    return lines


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_tables(cells: list[dict[str, Any]], *, out: Path, settings: dict[str, Any]) -> list[Path]:
    """Tables 1-3 in the paper's layout (Markdown + CSV), plus the measured-leakage table."""
    taus = sorted({c["tau"] for c in cells}, reverse=True)
    modes = [m for m in NOISE_MODES if any(c["noise_mode"] == m for c in cells)]
    by = {(c["tau"], c["noise_mode"]): c for c in cells}
    written = []

    # Table 1: excluded fraction, rows = data set x noise mode, columns = tau.
    rows1 = []
    lines = ["# Table 1: share of released images excluded by the LPIPS post-filter", "", *_header(settings),
             f"- Filter: drop a released image whose LPIPS to its own original is below {settings['lpips_threshold']} "
             "(section 5.1 says 0.7 in the text, Table 1's caption 0.9; `--lpips-threshold`)", "",
             "| Data set | noise mode | " + " | ".join(f"τ = {_tau_text(t)}" for t in taus) + " |",
             "|---|---|" + "---|" * len(taus)]
    for mode in modes:
        values = [by.get((t, mode), {}).get("lpips_filter_excluded_fraction") for t in taus]
        lines.append(f"| {settings['dataset']} | {mode} | "
                     + " | ".join("n/a" if v is None else f"{100 * v:.2f} %" for v in values) + " |")
        rows1.append({"dataset": settings["dataset"], "noise_mode": mode,
                      **{f"tau={_tau_text(t)}": ("" if v is None else 100 * v) for t, v in zip(taus, values)}})
    if settings["lpips_state"] == "missing":
        lines += ["", "Not computed: no LPIPS backbone weights. Pass `--lpips-weights` (a local torchvision "
                  "AlexNet state_dict), or `--lpips-uncalibrated` to see the mechanics with a random backbone."]
    (out / "table1.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_csv(out / "table1.csv", rows1)
    written += [out / "table1.md", out / "table1.csv"]

    # Table 2: linear attack.
    rows2 = []
    lines = ["# Table 2: linear inversion attack (appendix F)", "", *_header(settings),
             f"- Attack: Adam, {settings['linear_steps']} steps, lr {settings['linear_lr']}, TV 1e-3, L2 1e-4, "
             "clamp to the valid range after each step; the attacker knows the mixing weights and partner graph",
             "- Cells: mean ± std over the private set; SNR and SSIM higher = better attack, LPIPS lower = better attack",
             "- Prior only: SNR of answering the public mean image for every row (no information from the "
             "release); an attack leaks only what it gains above this",
             "", "| Data set | noise mode | τ | SNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | prior only, SNR (dB) |",
             "|---|---|---|---|---|---|---|"]
    for mode in modes:
        for t in taus:
            c = by.get((t, mode))
            if not c:
                continue
            lin = c["linear"]
            lines.append(f"| {settings['dataset']} | {mode} | {_tau_text(t)} | {_fmt(lin['snr_db'])} | "
                         f"{_fmt(lin['ssim'], 3)} | {_fmt(lin['lpips'], 3)} | {_fmt(c['prior_only_snr_db'])} |")
            rows2.append({"dataset": settings["dataset"], "noise_mode": mode, "tau": t,
                          **{f"{k}_{s}": (lin[k] or {}).get(s, "") for k in ("snr_db", "ssim", "lpips")
                             for s in ("mean", "std")}, "prior_only_snr_db": c["prior_only_snr_db"]["mean"]})
    (out / "table2.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_csv(out / "table2.csv", rows2)
    written += [out / "table2.md", out / "table2.csv"]

    # Table 3: U-Net attack over seeds.
    rows3 = []
    first = cells[0]["unet"]
    lines = ["# Table 3: nonlinear U-Net attack (appendix F)", "", *_header(settings),
             f"- Attack: U-Net (3 levels, base width {first['base']}) trained on mixtures of the public set made with "
             f"the same mechanism, tau and noise mode; Adam lr 1e-3, batch 32, L1 + 1e-4 TV, {first['epochs']} epochs "
             "(the paper: 30), applied zero-shot to the private release",
             f"- Cells: mean ± std over {len(first['per_seed'])} seeds of each seed's mean over the private set "
             "(the paper: 5 seeds); 'Best SNR': the best seed's",
             "- Prior only: SNR of answering the public mean image for every row, the level a network "
             "reaches by learning the data's average alone", "",
             "| Data set | noise mode | τ | SNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | Best SNR (dB) | prior only, SNR (dB) |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        for t in taus:
            c = by.get((t, mode))
            if not c:
                continue
            u = c["unet"]
            lines.append(f"| {settings['dataset']} | {mode} | {_tau_text(t)} | {_fmt(u['snr_db'])} | "
                         f"{_fmt(u['ssim'], 3)} | {_fmt(u['lpips'], 3)} | {u['best_snr_db']:.2f} | "
                         f"{_fmt(c['prior_only_snr_db'])} |")
            rows3.append({"dataset": settings["dataset"], "noise_mode": mode, "tau": t,
                          **{f"{k}_{s}": (u[k] or {}).get(s, "") for k in ("snr_db", "ssim", "lpips")
                             for s in ("mean", "std")}, "best_snr_db": u["best_snr_db"],
                          "prior_only_snr_db": c["prior_only_snr_db"]["mean"]})
    (out / "table3.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_csv(out / "table3.csv", rows3)
    written += [out / "table3.md", out / "table3.csv"]

    # What the release measurably leaks, beside the theorems.
    rows4 = []
    lines = ["# Measured leakage of each release", "", *_header(settings),
             "- Directional SNR: energy of w1 (x - mean) over that of the noisy partner term, along the first "
             "principal direction (PC1) and averaged over 16 random directions, beside Theorem 2's bound (tau "
             "for strict noise)",
             "- Re-identification: share of released rows whose nearest private row is one of their two sources "
             "(chance about 2/n)",
             "- Theorem 1: minimax lower bound on the weakest sample's reconstruction MSE, divided by the mean "
             "squared norm of the private rows (applies to strict noise only)", "",
             "| noise mode | τ | radius r | SNR PC1 (measured / bound) | SNR random (measured / bound) | "
             "re-identified | Theorem 1 bound, weakest sample |", "|---|---|---|---|---|---|---|"]
    for mode in modes:
        for t in taus:
            c = by.get((t, mode))
            if not c:
                continue
            th1 = f"{c['theorem1_relative_min']:.3g}" if c["theorem1_applies"] else "n/a (clamped)"
            lines.append(f"| {mode} | {_tau_text(t)} | {c['radius']:.3g} | {c['measured_snr_pc1']:.3g} / "
                         f"{c['snr_bound_pc1']:.3g} | {c['measured_snr_random']:.3g} / {c['snr_bound_random']:.3g} | "
                         f"{100 * c['reidentification_rate']:.1f} % | {th1} |")
            rows4.append({k: c[k] for k in ("noise_mode", "tau", "radius", "measured_snr_pc1", "snr_bound_pc1",
                                            "measured_snr_random", "snr_bound_random", "reidentification_rate",
                                            "theorem1_relative_min", "theorem1_applies")})
    (out / "leakage.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_csv(out / "leakage.csv", rows4)
    written += [out / "leakage.md", out / "leakage.csv"]
    return written


def write_panels(images: dict[tuple[float, str], dict[str, torch.Tensor]], *, out: Path,
                 settings: dict[str, Any], valid_range) -> list[Path]:
    """One PNG per noise mode: rows original / release / linear / U-Net, columns tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    lo, hi = valid_range  # floats, or (C, H, W) tensors: each channel shown over its own range
    for mode in NOISE_MODES:
        taus = sorted({t for t, m in images if m == mode}, reverse=True)
        if not taus:
            continue
        # Appendix F: the displayed image is the one best recovered (linear attack) at the largest tau.
        index = int(images[(taus[0], mode)]["linear_snr"].argmax())
        rows = ("original", "release", "linear", "unet")
        labels = ("original", "release (clipped for display)", "linear attack", "U-Net attack (best seed)")
        fig, axes = plt.subplots(len(rows), len(taus), figsize=(1.5 * len(taus) + 1, 1.6 * len(rows) + 0.6),
                                 squeeze=False)
        for col, tau in enumerate(taus):
            for row, key in enumerate(rows):
                img = images[(tau, mode)][key][index].detach().cpu().float().clamp(lo, hi)
                img = ((img - lo) / (hi - lo)).permute(1, 2, 0).numpy()
                ax = axes[row][col]
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"τ = {tau:g}", fontsize=9)
                if col == 0:
                    ax.set_ylabel(labels[row], fontsize=7)
        fig.suptitle(f"{settings['dataset']}, noise mode {mode}: private image {index} "
                     "(best linear recovery at the largest τ)", fontsize=9)
        fig.tight_layout()
        path = out / f"panels_{mode}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "runs" / "privacy-audit")
    parser.add_argument("--taus", type=float, nargs="+", default=list(DEFAULT_TAUS))
    parser.add_argument("--noise-modes", nargs="+", choices=NOISE_MODES, default=list(NOISE_MODES))
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist", "cifar10", "cifar100", "tiny-imagenet"])
    parser.add_argument("--data-dir", default="", help="absolute folder of the image data set's local copy")
    parser.add_argument("--public-dataset", help="the attacker's public data set (default: a disjoint part of --dataset)")
    parser.add_argument("--public-data-dir", default="", help="its folder (default: --data-dir)")
    parser.add_argument("--image-size", type=int, help="resize images to this side and 3 channels (the paper: 224); "
                        "default: native size")
    parser.add_argument("--public-size", type=int, default=2000, help="public images for image data sets (default 2000)")
    parser.add_argument("--private-size", type=int, default=500, help="private images of the party (default 500)")
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--mf-formula", choices=["paper", "paper-code"], default="paper")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the mixing")
    parser.add_argument("--linear-steps", type=int, default=200)
    parser.add_argument("--linear-lr", type=float, default=0.05)
    parser.add_argument("--unet-seeds", type=int, nargs="+", default=[0, 1, 2], help="the paper uses 5")
    parser.add_argument("--unet-epochs", type=int, default=6, help="the paper uses 30 (default 6 keeps the offline audit near 10 minutes on 2 cores)")
    parser.add_argument("--unet-base", type=int, default=48)
    parser.add_argument("--lpips-weights", help="absolute path of a torchvision AlexNet state_dict for LPIPS")
    parser.add_argument("--lpips-uncalibrated", action="store_true",
                        help="compute LPIPS with a randomly initialised AlexNet (mechanics only; labelled)")
    parser.add_argument("--lpips-threshold", type=float, default=0.9,
                        help="post-filter threshold (Table 1 caption: 0.9; section 5.1 text: 0.7)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    out = args.out.resolve()
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.dataset == "digits":
            data = digits_audit_data(private_size=args.private_size, seed=args.seed)
        else:
            data = image_audit_data(
                dataset=args.dataset, data_dir=args.data_dir, private_size=args.private_size,
                public_size=args.public_size, image_size=args.image_size, seed=args.seed,
                public_dataset=args.public_dataset, public_data_dir=args.public_data_dir,
            )
    except (OSError, ValueError) as err:  # DatasetNotFoundError is an OSError: it says where to put the data
        print(f"error: {err}", file=sys.stderr)
        return 2
    lpips = None
    lpips_state = "missing"
    try:
        if args.lpips_weights:
            lpips = LpipsMetric(backbone_weights=args.lpips_weights, device=args.device, value_range=data.valid_range)
            lpips_state = "calibrated"
        elif args.lpips_uncalibrated:
            lpips = LpipsMetric(backbone_weights=None, allow_random_backbone=True, device=args.device,
                                value_range=data.valid_range)
            lpips_state = "uncalibrated"
    except (LpipsWeightsMissing, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lpips_text = {
        "calibrated": f"AlexNet LPIPS, backbone weights {args.lpips_weights}",
        "uncalibrated": "UNCALIBRATED: AlexNet backbone randomly initialised (no ImageNet weights here); LPIPS "
        "values and Table 1 show the mechanics only, not perceptual similarity",
        "missing": "not computed (no backbone weights; --lpips-weights PATH)",
    }[lpips_state]
    settings = {
        "dataset": data.name, "data": data.description, "alpha": args.alpha, "mf_formula": args.mf_formula,
        "seed": args.seed, "lpips": lpips_text, "lpips_state": lpips_state, "lpips_threshold": args.lpips_threshold,
        "linear_steps": args.linear_steps, "linear_lr": args.linear_lr,
        "unet_seeds": args.unet_seeds, "unet_epochs": args.unet_epochs, "unet_base": args.unet_base,
    }
    linear = LinearInversionAttack(steps=args.linear_steps, lr=args.linear_lr, device=args.device, seed=args.seed)
    grid = [(t, m) for m in args.noise_modes for t in sorted(args.taus, reverse=True)]
    cells, images = [], {}
    # Every cell's figures are also kept as JSON (cells/), with the settings that made them.
    fingerprint = {k: v for k, v in settings.items() if k not in ("data",)}
    for tau, mode in tqdm(grid, desc="privacy audit", unit="cell"):
        path = cells_dir / f"{mode}-tau{tau:g}.json"
        figures, imgs = audit_cell(
            data, tau=tau, noise_mode=mode, alpha=args.alpha, mf_formula=args.mf_formula, seed=args.seed,
            linear=linear, unet_seeds=args.unet_seeds, unet_epochs=args.unet_epochs, unet_base=args.unet_base,
            lpips=lpips, lpips_threshold=args.lpips_threshold, device=args.device,
        )
        figures["settings"] = fingerprint
        path.write_text(json.dumps(figures, indent=2, default=float) + "\n", encoding="utf-8")
        tqdm.write(f"  {mode:8s} tau {tau:<7g} linear SNR {_fmt(figures['linear']['snr_db'])} dB, U-Net SNR "
                   f"{_fmt(figures['unet']['snr_db'])} dB, re-identified {100 * figures['reidentification_rate']:.1f} %")
        cells.append(figures)
        images[(tau, mode)] = imgs
    written = write_tables(cells, out=out, settings=settings)
    written += write_panels(images, out=out, settings=settings, valid_range=data.valid_range)
    index = ["# Privacy audit", ""] + [f"- [{p.name}]({p.name})" for p in written if p.suffix == ".md"]
    index += [f"![{p.stem}]({p.name})" for p in written if p.suffix == ".png"]
    for p in written:
        if p.suffix == ".md":
            index += ["", ("\n" + p.read_text(encoding="utf-8")).replace("\n# ", "\n## ").lstrip("\n")]
    (out / "report.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    for p in written + [out / "report.md"]:
        print(f"written: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
