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

    python -m simulations.studies.privacy_audit                       # digits, 7 taus x 2 modes
    python -m simulations.studies.privacy_audit --lpips-weights /abs/alexnet-owt-7be5be79.pth
    python -m simulations.studies.privacy_audit --dataset cifar10 --data-dir /data --public-dataset tiny-imagenet \
        --image-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from attacks.evaluation import evaluate_reconstruction
from attacks.linear import LinearInversionAttack
from attacks.lpips_filter import lpips_filter
from attacks.lpips_metric import LpipsMetric
from attacks.metrics import snr_db
from attacks.threat_model import grant_knowledge, observe
from attacks.unet import train_unet_attacker
from common.calibration import data_statistics, noise_multiplier
from common.io import write_json_atomic
from common.leakage import measure_release_snr, reidentification_rate, theorem1_report
from common.mixup import singularized_mixup
from simulations.runtime.local_flower import PROJECT_ROOT
from simulations.studies.audit_data import AuditData, digits_audit_data, image_audit_data
from simulations.studies.base import (
    Study,
    add_lpips_arguments,
    embed,
    fmt_spread,
    load_lpips,
    set_threads,
    spread,
)
from simulations.studies.privacy_tables import NOISE_MODES, write_panels, write_tables

__all__ = ["DEFAULT_TAUS", "audit_cell", "main"]

DEFAULT_TAUS = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _over_seeds(values: list[float | None]) -> dict[str, float] | None:
    """Mean ± sample std over seeds (or rows) of the finite values."""
    return spread(values, ddof=1)


def _per_sample(values: torch.Tensor | None) -> dict[str, float] | None:
    return None if values is None else _over_seeds(values.double().tolist())


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
        figures["lpips_release_vs_original"] = _per_sample(filtered.distances)
    else:
        figures["lpips_filter_excluded_fraction"] = None
        figures["lpips_release_vs_original"] = None

    # What an attacker gets from the prior alone: the public mean image for every row. An
    # attack's SNR means something only above this line.
    prior_guess = data.public.mean(dim=0, keepdim=True).expand_as(data.private)
    figures["prior_only_snr_db"] = _per_sample(snr_db(data.private, prior_guess))

    # Server side: the attacks see the release and the granted knowledge only.
    observed = observe(release, sample_shape=data.sample_shape)
    knowledge = grant_knowledge(release, noise_mode=noise_mode, valid_range=data.valid_range)
    started = time.perf_counter()
    linear_rec = linear.reconstruct(observed, knowledge)
    linear_scores = evaluate_reconstruction(linear_rec, data.private, data_range=data_range, lpips=lpips)
    figures["linear"] = {
        "snr_db": _per_sample(linear_scores.snr_db), "psnr": _per_sample(linear_scores.psnr),
        "ssim": _per_sample(linear_scores.ssim), "lpips": _per_sample(linear_scores.lpips),
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
        "snr_db": _over_seeds([s["snr_db"] for s in per_seed]),
        "ssim": _over_seeds([s["ssim"] for s in per_seed]),
        "lpips": _over_seeds([s["lpips"] for s in per_seed]) if lpips is not None else None,
        "best_snr_db": max(s["snr_db"] for s in per_seed),
        "epochs": unet_epochs, "base": unet_base,
    }
    images = {
        "original": data.private, "release": released_images,
        "linear": linear_rec.x.reshape(n, *data.sample_shape),
        "unet": best[1].reshape(n, *data.sample_shape), "linear_snr": linear_scores.snr_db,
    }
    return figures, images


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
    add_lpips_arguments(parser)
    parser.add_argument("--lpips-threshold", type=float, default=0.9,
                        help="post-filter threshold (Table 1 caption: 0.9; section 5.1 text: 0.7)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    set_threads()
    study = Study(args.out, module="privacy_audit")
    out = study.out
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
        lpips_choice = load_lpips(args, value_range=data.valid_range, device=args.device,
                                  uncalibrated_note="LPIPS values and Table 1 show the mechanics only, not "
                                  "perceptual similarity")
    except (OSError, ValueError) as err:  # DatasetNotFoundError is an OSError: it says where to put the data
        print(f"error: {err}", file=sys.stderr)
        return 2
    lpips, lpips_state, lpips_text = lpips_choice.metric, lpips_choice.state, lpips_choice.text
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
        write_json_atomic(path, figures)
        tqdm.write(f"  {mode:8s} tau {tau:<7g} linear SNR {fmt_spread(figures['linear']['snr_db'])} dB, U-Net SNR "
                   f"{fmt_spread(figures['unet']['snr_db'])} dB, "
                   f"re-identified {100 * figures['reidentification_rate']:.1f} %")
        cells.append(figures)
        images[(tau, mode)] = imgs
    written = write_tables(cells, out=out, settings=settings)
    written += write_panels(images, out=out, settings=settings, valid_range=data.valid_range)
    index = ["# Privacy audit", ""] + [f"- [{p.name}]({p.name})" for p in written if p.suffix == ".md"]
    index += [f"![{p.stem}]({p.name})" for p in written if p.suffix == ".png"]
    index += [line for p in written if p.suffix == ".md" for line in ("", embed(p.read_text(encoding="utf-8")))]
    study.write_index(index)
    for p in written + [out / "report.md"]:
        print(f"written: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
