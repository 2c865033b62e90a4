"""A party's one-shot release: calibrate, (map the radius,) mix, measure.

Raw inputs (digits, or images with ``backbone = "none"``): Theorem 2 on the party's inputs
gives ``r = m_f D`` and Algorithm 1 runs on those inputs, clamped to their valid range in the
clamped mode.

Backbone features (section 5 of the paper): Theorem 2 on the party's *preprocessed images*
(``d = 3 x image-size^2``) gives ``r_img``; the feature radius is the mean displacement
``||f(x + e) - f(x)||`` over ``radius-sample`` of the party's images (noisy images clamped
to the valid pixel range in the clamped mode); Algorithm 1 then runs on the features with
that radius and no clamp (features have no valid range).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from client.party import STREAM_MIXUP, STREAM_RADIUS, STREAM_STATS, PartyData, derive_seed, load_public_pool
from common.calibration import data_statistics, noise_multiplier, streamed_statistics
from common.config import RunConfig
from common.feature_radius import map_radius_to_features
from common.instahide import InstaHideRelease, instahide_encode
from common.leakage import (
    instahide_reidentification_rate,
    measure_release_snr,
    nearest_private_rows,
    reidentification_rate,
    theorem1_report,
)
from common.mixup import MixupRelease, singularized_mixup
from features.extraction import forward_features
from features.pipeline import load_backbone, preprocessing_for
from loaders import load_dataset

__all__ = ["Calibration", "PartyRelease", "RawDataLeak", "guard_against_raw_rows", "calibrate", "make_release", "mixing_seed", "to_upload_dtype"]

FLOAT16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True)
class PartyRelease:
    """What a party uploads (``train``, ``val``: their ``x`` and ``y``) and its figures."""

    train: MixupRelease | InstaHideRelease
    val: MixupRelease | InstaHideRelease | None
    metrics: dict[str, float | int]


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _calibrate_on_images(cfg: RunConfig, party: PartyData, device: torch.device) -> tuple[float, dict]:
    """Image-space Theorem 2, then the feature-space radius."""
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction, download=cfg.download)
    pre = preprocessing_for(cfg, data)
    images = party.train_images

    def rows(idx: torch.Tensor) -> torch.Tensor:
        return pre(images[idx], device=device)

    stats = streamed_statistics(
        images.shape[0],
        rows,
        generator=_generator(derive_seed(cfg.seed, party.partition_id, STREAM_STATS), torch.device("cpu")),
        batch_size=max(8, min(256, cfg.extract_batch_size)),
    )
    m_f = noise_multiplier(tau=cfg.tau, alpha=cfg.alpha, dim=stats.dim, c=stats.c, formula=cfg.mf_formula)
    image_radius = m_f * stats.D
    sample_gen = _generator(derive_seed(cfg.seed, party.partition_id, STREAM_RADIUS), torch.device("cpu"))
    sample = torch.randperm(images.shape[0], generator=sample_gen)[: cfg.radius_sample].sort().values
    backbone, _ = load_backbone(cfg.backbone, cfg.backbone_weights, cfg.feature_pool, str(device))
    clamp = pre.valid_bounds(3, device=device) if cfg.clamp_partner else None
    mapped = map_radius_to_features(
        rows(sample),
        feature_fn=lambda batch: forward_features(backbone, batch, device=device),
        image_radius=image_radius,
        generator=_generator(derive_seed(cfg.seed, party.partition_id, STREAM_RADIUS, 1), device),
        clamp=clamp,
        batch_size=max(8, min(64, cfg.extract_batch_size)),
    )
    figures = {
        "dim": stats.dim,
        "stat-V": stats.V,
        "stat-D": stats.D,
        "stat-c": stats.c,
        "noise-multiplier": m_f,
        "image-radius": image_radius,
        "feature-radius": mapped.radius,
        "feature-radius-std": mapped.std,
        "radius-sample": mapped.num_images,
    }
    return mapped.radius, figures


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
            party.train_x,
            generator=_generator(derive_seed(cfg.seed, party.partition_id, STREAM_STATS), torch.device("cpu")),
        )
        m_f = noise_multiplier(tau=cfg.tau, alpha=cfg.alpha, dim=stats.dim, c=stats.c, formula=cfg.mf_formula)
        radius = m_f * stats.D
        clamp = party.input_bounds if cfg.clamp_partner else None
        figures = {
            "dim": stats.dim, "stat-V": stats.V, "stat-D": stats.D, "stat-c": stats.c,
            "noise-multiplier": m_f, "image-radius": radius,
        }
    calibration = Calibration(radius=radius, clamp=clamp, figures=figures, seconds=time.perf_counter() - started)
    if len(_CALIBRATIONS) >= 64:  # a long-lived simulation worker serves many runs
        _CALIBRATIONS.pop(next(iter(_CALIBRATIONS)))
    _CALIBRATIONS[key] = calibration
    return calibration


def mixing_seed(cfg: RunConfig, partition_id: int, epoch: int) -> int:
    """Seed of the mixing randomness of ``epoch`` (1-based). Epoch 1 draws exactly the
    one-shot release, so a per-epoch run starts from the ``release = "once"`` data."""
    if epoch < 1:
        raise ValueError(f"epoch must be >= 1, got {epoch}")
    if epoch == 1:
        return derive_seed(cfg.seed, partition_id, STREAM_MIXUP)
    return derive_seed(cfg.seed, partition_id, STREAM_MIXUP, epoch)


def make_release(
    cfg: RunConfig, party: PartyData, *, device: torch.device, epoch: int = 1, with_validation: bool = True
) -> PartyRelease:
    """Calibrate (once per party), mix the training part and, with ``with_validation``, the
    validation part; measure the directional SNR of the first epoch's release.

    ``epoch`` selects fresh mixing randomness for ``release = "per-epoch"``; every call
    exposes each private training sample again, as the clean component of one released row
    and as the noisy partner of another (Algorithm 1 pairs by a derangement). The
    validation part is meant to be released once (``with_validation`` on the first epoch);
    without it ``val`` is ``None``.
    """
    if cfg.encoding == "instahide":
        return _instahide_release(cfg, party, device=device, epoch=epoch, with_validation=with_validation)
    started = time.perf_counter()
    calibration = calibrate(cfg, party, device=device)
    # None: singularized_mixup draws from the operating system's CSPRNG (deployment).
    generator = None if cfg.secure_rng else _generator(mixing_seed(cfg, party.partition_id, epoch), device)
    train_x = party.train_x.to(device).float()
    common = dict(
        radius=calibration.radius, alpha=cfg.alpha, generator=generator, clamp=calibration.clamp,
        num_classes=party.num_classes,
    )
    release = singularized_mixup(train_x, party.train_y, **common)
    val_release = singularized_mixup(party.val_x.to(device).float(), party.val_y, **common) if with_validation else None
    guard_against_raw_rows(cfg, party, release, val_release)
    metrics = {
        **_release_sizes(party, release, val_release, epoch=epoch),
        **calibration.figures,
        "radius": calibration.radius,
        "calibration-seconds": calibration.seconds,
        "mixing-seconds": time.perf_counter() - started,
    }
    if epoch == 1:  # later epochs' releases follow the same law; measuring is not free
        metrics.update(measure_release_snr(train_x, release, alpha=cfg.alpha).as_metrics())
        metrics["reid-rate"] = reidentification_rate(train_x, release)
        metrics.update(theorem1_report(train_x, release).as_metrics())
    return PartyRelease(train=release, val=val_release, metrics=metrics)


def _release_sizes(party: PartyData, release, val_release, *, epoch: int) -> dict[str, int]:
    """Who released what: the figures the server checks against the arrays (any encoding)."""
    return {
        "partition-id": party.partition_id,
        "epoch": epoch,
        "num-examples": int(release.x.shape[0]),
        "num-val": int(val_release.x.shape[0]) if val_release is not None else 0,
        "input-dim": int(release.x[0].numel()),
        "num-classes": party.num_classes,
    }


def _instahide_release(
    cfg: RunConfig, party: PartyData, *, device: torch.device, epoch: int, with_validation: bool
) -> PartyRelease:
    """The InstaHide comparator (:mod:`common.instahide`) in place of Algorithm 1.

    The training part and the validation part are encoded separately (private slots draw
    only from their own part), both with public rows from the run's public pool. There is
    no calibrated noise, so no radius, SNR or Theorem 1 figure; the party measures how
    often ``|x~_i|`` is nearest to one of its own private sources instead.
    """
    started = time.perf_counter()
    k, k_private = cfg.instahide_k, cfg.instahide_k_private
    public = load_public_pool(cfg).to(device).float() if k > k_private else None
    generator = None if cfg.secure_rng else _generator(mixing_seed(cfg, party.partition_id, epoch), torch.device("cpu"))
    common = dict(public_x=public, k=k, k_private=k_private, num_classes=party.num_classes, generator=generator)
    train_x = party.train_x.to(device).float()
    release = instahide_encode(train_x, party.train_y, **common)
    val_release = instahide_encode(party.val_x.to(device).float(), party.val_y, **common) if with_validation else None
    guard_against_raw_rows(cfg, party, release, val_release, absolute=True)
    metrics = {
        **_release_sizes(party, release, val_release, epoch=epoch),
        "instahide-k": k,
        "instahide-k-private": k_private,
        "public-pool-size": int(public.shape[0]) if public is not None else 0,
        "mixing-seconds": time.perf_counter() - started,
    }
    if epoch == 1:
        metrics["reid-rate"] = instahide_reidentification_rate(train_x, release)
    return PartyRelease(train=release, val=val_release, metrics=metrics)


class RawDataLeak(RuntimeError):
    """A release row is (nearly) one of the party's private rows: it must not be sent."""


def guard_against_raw_rows(
    cfg: RunConfig,
    party: PartyData,
    release: MixupRelease | InstaHideRelease,
    val_release: MixupRelease | InstaHideRelease | None,
    *,
    absolute: bool = False,
) -> float:
    """Refuse a release in which any row lies within ``release-guard`` x (RMS norm of the
    party's rows) of one of the party's private rows (training or validation part).

    Algorithm 1 never returns a private row unless its partner is (nearly) a copy of it and
    the noise is (nearly) zero, or a bug or a misconfiguration bypassed the mixing; either
    way raw data would leave the party. With ``absolute`` (InstaHide) rows are compared by
    their absolute values, because a sign mask alone (``k = 1``) hides nothing from an
    attacker who takes ``|x~|``. Returns the smallest distance found, relative.
    """
    private = torch.cat([party.train_x.reshape(party.train_x.shape[0], -1),
                         party.val_x.reshape(party.val_x.shape[0], -1)]).float()
    if absolute:
        private = private.abs()
    scale = float(private.double().pow(2).sum(dim=1).mean().sqrt()) or 1.0
    released = [release.x] + ([val_release.x] if val_release is not None else [])
    smallest = math.inf
    for part, rows in zip(("training", "validation"), released):
        rows = rows.reshape(rows.shape[0], -1).cpu()
        distances, nearest = nearest_private_rows(private, rows.abs() if absolute else rows)
        if distances.numel() == 0:
            continue
        worst = int(distances.argmin())
        relative = float(distances[worst]) / scale
        smallest = min(smallest, relative)
        if relative <= cfg.release_guard:
            raise RawDataLeak(
                f"party {party.partition_id}: released {part} row {worst} lies {relative:.3g} x the RMS row norm "
                f"from private row {int(nearest[worst])} (release-guard = {cfg.release_guard:g}); nothing is sent"
            )
    return smallest


def to_upload_dtype(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """Cast mixed inputs for upload; refuse a float16 cast that would overflow to inf."""
    if dtype == "float32":
        return x.float()
    if dtype != "float16":
        raise ValueError(f"unknown upload dtype {dtype!r}")
    peak = float(x.abs().max()) if x.numel() else 0.0
    if not math.isfinite(peak) or peak > FLOAT16_MAX:
        raise OverflowError(
            f"upload-dtype = 'float16' cannot carry this release: |x~| reaches {peak:.3g} > {FLOAT16_MAX:.0f} "
            "(the float16 maximum); use upload-dtype = 'float32'"
        )
    return x.half()
