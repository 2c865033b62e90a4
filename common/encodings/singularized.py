"""Singularized mixup (Algorithm 1 of the paper): each private sample mixed once with a
partner of the same party that carries spherical noise of Theorem 2's radius.

Raw inputs (digits, or images with ``backbone = "none"``): Theorem 2 on the party's inputs
gives ``r = m_f D`` and Algorithm 1 runs on those inputs, the noisy partner clamped to their
valid range in the clamped mode.

Backbone features (section 5): Theorem 2 on the party's *preprocessed images*
(``d = 3 x image-size^2``) gives ``r_img``; the feature radius is the mean displacement
``||f(x + e) - f(x)||`` over ``radius-sample`` of the party's images (noisy images clamped to
the valid pixel range in the clamped mode); Algorithm 1 then runs on the features with that
radius and no clamp (features have no valid range).

Privacy caveat: Theorem 2's directional-SNR bound holds for strict noise in the space it
was calibrated in. In the clamped mode (the authors' code, the default) clipping turns the
partner into a random saturated image whatever ``tau`` is; ``tau`` is then nominal and only
the SNR each party measures on its own release says what was exposed.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from common.calibration import data_statistics, noise_multiplier, streamed_statistics
from common.encodings.base import ENCODINGS, Encoding, EncodingOutput
from common.feature_radius import map_radius_to_features
from common.leakage import measure_release_snr, reidentification_rate, theorem1_report
from common.mixup import singularized_mixup
from common.seeds import Stream, derive_seed
from common.stats import mean_max

if TYPE_CHECKING:
    from common.config import RunConfig
    from common.party import PartyData

__all__ = ["Calibration", "SingularizedMixup", "calibrate", "mixing_seed", "tau_label"]

SNR_METRICS = ("snr-pc1", "snr-bound-pc1", "snr-random", "snr-bound-random")
THEOREM1_METRICS = ("theorem1-mse-min", "theorem1-relative-min", "theorem1-relative-median")


def _generator(seed: int, device: torch.device | str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def mixing_seed(cfg: RunConfig, partition_id: int, epoch: int) -> int:
    """Seed of the mixing randomness of ``epoch`` (1-based). Epoch 1 draws exactly the
    one-shot release, so a per-epoch run starts from the ``release = "once"`` data."""
    if epoch < 1:
        raise ValueError(f"epoch must be >= 1, got {epoch}")
    if epoch == 1:
        return derive_seed(cfg.seed, partition_id, Stream.MIXUP)
    return derive_seed(cfg.seed, partition_id, Stream.MIXUP, epoch)


@dataclass(frozen=True)
class Calibration:
    """A party's mixing radius and the figures that produced it (computed once per party)."""

    radius: float
    clamp: tuple | None
    figures: dict[str, float | int]
    seconds: float


# One calibration per (run config, party, device) in a process: a per-epoch release asks for
# fresh mixtures many times, and the radius depends only on the party's private data.
_CALIBRATIONS: dict[tuple, Calibration] = {}


def _calibrate_on_images(cfg: RunConfig, party: PartyData, device: torch.device) -> tuple[float, dict]:
    """Image-space Theorem 2, then the feature-space radius."""
    space, images = party.image_space, party.train_images
    if space is None or images is None:
        raise ValueError("a backbone run needs the party's images and image space to calibrate the noise")

    def rows(idx: torch.Tensor) -> torch.Tensor:
        return space.preprocess(images[idx], device=device)

    stats = streamed_statistics(
        images.shape[0],
        rows,
        generator=_generator(derive_seed(cfg.seed, party.partition_id, Stream.STATS), "cpu"),
        batch_size=max(8, min(256, cfg.extract_batch_size)),
    )
    m_f = noise_multiplier(tau=cfg.tau, alpha=cfg.alpha, dim=stats.dim, c=stats.c, formula=cfg.mf_formula)
    image_radius = m_f * stats.D
    sample_gen = _generator(derive_seed(cfg.seed, party.partition_id, Stream.RADIUS), "cpu")
    sample = torch.randperm(images.shape[0], generator=sample_gen)[: cfg.radius_sample].sort().values
    mapped = map_radius_to_features(
        rows(sample),
        feature_fn=lambda batch: space.features(batch, device=device),
        image_radius=image_radius,
        generator=_generator(derive_seed(cfg.seed, party.partition_id, Stream.RADIUS, 1), device),
        clamp=space.valid_bounds(device=device) if cfg.clamp_partner else None,
        batch_size=max(8, min(64, cfg.extract_batch_size)),
    )
    figures = {
        "dim": stats.dim, "stat-V": stats.V, "stat-D": stats.D, "stat-c": stats.c,
        "noise-multiplier": m_f, "image-radius": image_radius, "feature-radius": mapped.radius,
        "feature-radius-std": mapped.std, "radius-sample": mapped.num_images,
    }
    return mapped.radius, figures


def calibrate(cfg: RunConfig, party: PartyData, *, device: torch.device) -> Calibration:
    """Theorem 2's radius for this party (image space then features when a backbone is used)."""
    key = (cfg, party.partition_id, party.num_partitions, str(device))
    if key in _CALIBRATIONS:
        return _CALIBRATIONS[key]
    started = time.perf_counter()
    if cfg.uses_backbone:
        radius, figures = _calibrate_on_images(cfg, party, device)
        clamp = None
    else:
        stats = data_statistics(
            party.train_x, generator=_generator(derive_seed(cfg.seed, party.partition_id, Stream.STATS), "cpu")
        )
        m_f = noise_multiplier(tau=cfg.tau, alpha=cfg.alpha, dim=stats.dim, c=stats.c, formula=cfg.mf_formula)
        radius = m_f * stats.D
        clamp = party.input_bounds if cfg.clamp_partner else None
        figures = {
            "dim": stats.dim, "stat-V": stats.V, "stat-D": stats.D, "stat-c": stats.c,
            "noise-multiplier": m_f, "image-radius": radius,
        }
    calibration = Calibration(radius=radius, clamp=clamp, figures=figures, seconds=time.perf_counter() - started)
    if len(_CALIBRATIONS) >= 4096:  # a worker serves every party of a run (P = 100 and more); a few floats each
        _CALIBRATIONS.pop(next(iter(_CALIBRATIONS)))
    _CALIBRATIONS[key] = calibration
    return calibration


@ENCODINGS.register
class SingularizedMixup(Encoding):
    """Algorithm 1 with Theorem 2's noise; every private training sample is the clean
    component of exactly one released row and the noisy partner of exactly one other."""

    name = "singularized"
    label = "singularized mixup"
    paper_tables = True
    has_calibrated_noise = True
    first_release_metrics = (*SNR_METRICS, "reid-rate", *THEOREM1_METRICS)
    later_release_metrics = ()
    # Figures computed from the party's private statistics (Theorem 2's V, D, c and what follows
    # from them: r = sqrt(d' bracket V) gives V away): sent only with party-figures = "exact".
    private_statistics = ("radius", "image-radius", "noise-multiplier", "dim", "stat-V", "stat-D", "stat-c",
                          "feature-radius", "feature-radius-std", "radius-sample")
    metric_ranges = {
        "radius": (0.0, math.inf), "image-radius": (0.0, math.inf), "noise-multiplier": (0.0, math.inf),
        "snr-pc1": (0.0, math.inf), "snr-bound-pc1": (0.0, math.inf), "snr-random": (0.0, math.inf),
        "snr-bound-random": (0.0, math.inf), "reid-rate": (0.0, 1.0), "theorem1-mse-min": (0.0, math.inf),
        "theorem1-relative-min": (0.0, math.inf), "theorem1-relative-median": (0.0, math.inf),
    }
    # With no noise (tau at or above alpha^2 / (1 - alpha)^2) Theorem 2's bound is void: inf.
    infinite_metrics = frozenset({"snr-bound-pc1", "snr-bound-random"})

    def required_metrics(self, party_figures: str, *, first: bool) -> tuple[str, ...]:
        exact = party_figures == "exact"
        if first:
            return (*self.first_release_metrics, *(("radius", "image-radius", "noise-multiplier") if exact else ()))
        return ("radius",) if exact else ()

    def party_metrics(self, cfg: RunConfig, metrics: dict[str, float | int]) -> dict[str, float | int]:
        """``"coarse"``: no private statistic (V, D, c, the radius and multiplier derived from
        them); the measured SNR and its bound to two significant digits, the re-identification
        rate to two decimals, Theorem 1's bounds as powers of ten."""
        if cfg.party_figures == "exact":
            return metrics
        coarse: dict[str, float | int] = {}
        for key, value in metrics.items():
            if key in self.private_statistics:
                continue
            if key in SNR_METRICS:
                value = _significant(float(value), 2)
            elif key == "reid-rate":
                value = round(float(value), 2)
            elif key.startswith("theorem1-"):
                value = _power_of_ten(float(value))
            coarse[key] = value
        return coarse

    def input_bound(self, cfg: RunConfig, *, value_bound: float | None, dim: int) -> float | None:
        """Clamped: the partner is clipped to the valid range, so ``|x~| <= max |x|``. Strict:
        ``x~ = w1 x_i + w2 (x_j + e)`` with ``w2 <= alpha`` and ``||e|| = r``; Theorem 2 gives
        ``r = m_f D = sqrt(d' (alpha^2 / (tau (1-alpha)^2) - 1) V)`` (``d' = d`` for the paper's
        formula, 1 for the authors' code), and ``V <= d (max |x|)^2`` in any valid box, so
        ``|x~| <= max |x| + alpha sqrt(d' bracket d) max |x|``. Features: no public range."""
        if value_bound is None:
            return None
        if cfg.clamp_partner:
            return value_bound
        bracket = max(0.0, cfg.alpha ** 2 / (cfg.tau * (1 - cfg.alpha) ** 2) - 1)
        scale = dim if cfg.mf_formula == "paper" else 1
        return value_bound * (1 + cfg.alpha * math.sqrt(scale * bracket * dim))

    def encode(
        self, cfg: RunConfig, party: PartyData, *, device: torch.device, epoch: int, with_validation: bool
    ) -> EncodingOutput:
        calibration = calibrate(cfg, party, device=device)
        # None: singularized_mixup draws from the operating system's CSPRNG (deployment).
        generator = None if cfg.secure_rng else _generator(mixing_seed(cfg, party.partition_id, epoch), device)
        train_x = party.train_x.to(device).float()
        common = dict(radius=calibration.radius, alpha=cfg.alpha, generator=generator, clamp=calibration.clamp,
                      num_classes=party.num_classes)
        release = singularized_mixup(train_x, party.train_y, **common)
        val_release = (singularized_mixup(party.val_x.to(device).float(), party.val_y, **common)
                       if with_validation else None)
        metrics: dict[str, float | int] = {
            **calibration.figures, "radius": calibration.radius, "calibration-seconds": calibration.seconds,
        }
        if epoch == 1:  # later epochs' releases follow the same law; measuring is not free
            metrics.update(measure_release_snr(train_x, release, alpha=cfg.alpha).as_metrics())
            metrics["reid-rate"] = reidentification_rate(train_x, release)
            metrics.update(theorem1_report(train_x, release).as_metrics())
        return EncodingOutput(train=release, val=val_release, metrics=metrics)

    def privacy_summary(self, cfg: RunConfig, parties: Sequence[Mapping[str, Any]], releases: Counter) -> dict:
        per_party = mean_max(releases.values())
        return {
            "encoding": self.name,
            "release_mode": cfg.release,
            "releases_per_party": per_party,
            "exposures_per_sample": per_party,
            "exposures_per_private_sample": {
                "as_clean_component": per_party,
                "as_noisy_partner": per_party,
                "validation_sample": 1 if cfg.selection == "mixed-validation" else 0,
                "note": "Algorithm 1 pairs by a derangement: every release of a party makes each of its "
                "private training samples the clean (un-noised) component of exactly one released row and the "
                "noisy partner of exactly one other; per-epoch releases the same samples once per epoch; the "
                "validation part is released once, and only for selection = 'mixed-validation'",
            },
            "noise_mode": cfg.noise_mode,
            "mf_formula": cfg.mf_formula,
            "radius_space": "feature space, mapped from image space (mean ||f(x+e) - f(x)||)"
            if cfg.uses_backbone else "input space",
            "party_figures": cfg.party_figures,
            "image_radius": _figure(parties, "image-radius"),
            "mixing_randomness": mixing_randomness(cfg),
            "tau": cfg.tau,
            "alpha": cfg.alpha,
            "noise_multiplier": _figure(parties, "noise-multiplier"),
            "radius": _figure(parties, "radius"),
            "snr_pc1": mean_max(m["snr-pc1"] for m in parties),
            "snr_bound_pc1": mean_max(m["snr-bound-pc1"] for m in parties),
            "snr_random": mean_max(m["snr-random"] for m in parties),
            "snr_bound_random": mean_max(m["snr-bound-random"] for m in parties),
            "reidentification_rate": mean_max(m["reid-rate"] for m in parties),
            "reidentification_note": "share of each party's released rows whose nearest private row "
            "(Euclidean, in the space it was mixed in) is one of the row's two sources; chance is about 2/n; "
            "measured by the party on its own data",
            "theorem1_mse_min": mean_max(m["theorem1-mse-min"] for m in parties),
            "theorem1_relative_min": mean_max(m["theorem1-relative-min"] for m in parties),
            "theorem1_relative_median": mean_max(m["theorem1-relative-median"] for m in parties),
            "theorem1_note": "Theorem 1: minimax lower bound r^2 T_i on E||x_i - x_hat_i||^2 against any "
            "estimator knowing the mixing weights, per sample; 'relative' divides by the party's mean "
            "squared row norm; holds for strict noise only (noise mode above)",
            "snr_note": "measured on each party's own release, in the space it was mixed in: energy of "
            "w1 (x - mean) over that of the noisy partner term, along the party's first principal direction "
            "and random directions; Theorem 2's bound holds for strict noise in the space it was calibrated in",
            "upload_dtype": cfg.upload_dtype,
        }

    def log_rows(self, privacy: Mapping[str, Any]) -> list[tuple[str, str]]:
        exposures = privacy["exposures_per_sample"]
        exposed = f", each private sample exposed {exposures['max']:g}x" if exposures else ""
        rows = [
            ("release / noise mode", f"{privacy['release_mode']}{exposed} / {privacy['noise_mode']}"),
            ("tau vs measured SNR", tau_label(privacy["tau"], privacy["noise_mode"], privacy["snr_pc1"]["mean"])
             + f"; max party {_fmt(privacy['snr_pc1']['max'])} (Theorem 2 bound {_fmt(privacy['snr_bound_pc1']['max'])}"
             + (", void in clamped mode)" if privacy["noise_mode"] == "clamped" else ")")),
        ]
        if privacy.get("reidentification_rate"):
            rows.append((
                "re-identification",
                f"{100 * privacy['reidentification_rate']['mean']:.1f} % of released rows nearest to one of their "
                f"sources (max party {100 * privacy['reidentification_rate']['max']:.1f} %); Theorem 1 bound on the "
                f"weakest sample's MSE / mean energy: {_fmt(privacy['theorem1_relative_min']['min'])}",
            ))
        return rows

    def table_fields(self, privacy: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "noise_mode": privacy.get("noise_mode", ""),
            "tau": privacy.get("tau"),
            "snr_pc1_mean": (privacy.get("snr_pc1") or {}).get("mean"),
        }


def tau_label(tau: float | None, noise_mode: str, measured_snr: float | None) -> str:
    """How every table and log names tau: in the clamped mode tau is nominal (clipping the
    noisy partner voids Theorem 2), so the measured directional SNR stands beside it."""
    measured = f"measured SNR along PC1 {_fmt(measured_snr)}"
    if noise_mode == "clamped":
        return f"tau = {_fmt(tau)} nominal (clamped noise), {measured}"
    return f"tau = {_fmt(tau)}, {measured}"


def _figure(parties: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Mean/max/min/std of a figure over the parties that sent it ({} when withheld)."""
    return mean_max(m[key] for m in parties if key in m)


def _significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _power_of_ten(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return value
    return 10.0 ** math.floor(math.log10(value))


def mixing_randomness(cfg: RunConfig) -> str:
    """Where a release's randomness came from (the summary states it)."""
    return "operating-system CSPRNG (os.urandom)" if cfg.secure_rng else f"seeded from seed = {cfg.seed}"


def _fmt(value: float | None) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:.3g}"
