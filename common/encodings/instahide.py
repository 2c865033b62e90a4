"""InstaHide (the paper's comparator, section 3.1, equations 3-4) as a one-shot encoding.

The training part and the validation part are encoded separately (private slots draw only
from their own part), both with public rows from the run's public pool
(:func:`common.instahide.instahide_encode`). There is no calibrated noise, so no radius,
SNR or Theorem 1 figure; the party measures how often ``|x~_i|`` is nearest to one of its
own private sources instead. Every private training sample is a private component of
``instahide-k-private`` rows of each release: the repeated component Carlini et al. (2021)
cluster on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from common.encodings.base import ENCODINGS, Encoding, EncodingOutput
from common.encodings.singularized import mixing_randomness, mixing_seed
from common.instahide import instahide_encode
from common.leakage import instahide_reidentification_rate
from common.stats import mean_max

if TYPE_CHECKING:
    from common.config import RunConfig
    from common.party import PartyData

__all__ = ["InstaHide"]


@ENCODINGS.register
class InstaHide(Encoding):
    """k-sample mixes with public images and a random sign mask (no calibrated noise)."""

    name = "instahide"
    label = "InstaHide"
    compares_absolute_values = True
    first_release_metrics = ("instahide-k", "instahide-k-private", "public-pool-size", "reid-rate")
    later_release_metrics = ("instahide-k",)
    metric_ranges = {"instahide-k": (1, 1024), "instahide-k-private": (1, 1024), "public-pool-size": (0, math.inf),
                     "reid-rate": (0.0, 1.0)}
    # Weights on the simplex and a sign mask: |x~| never exceeds the valid range's largest |x|.

    def check_config(self, cfg: RunConfig) -> None:
        if cfg.instahide_k_private > cfg.instahide_k:
            raise ValueError(
                f"instahide-k-private: {cfg.instahide_k_private} private samples do not fit in instahide-k = "
                f"{cfg.instahide_k}"
            )
        if cfg.instahide_k > cfg.instahide_k_private and cfg.public_fraction == 0:
            raise ValueError(
                f"public-fraction: InstaHide with instahide-k = {cfg.instahide_k} mixes "
                f"{cfg.instahide_k - cfg.instahide_k_private} public images into every row; hold out a public pool "
                "(e.g. public-fraction = 0.2), or set instahide-k = instahide-k-private"
            )

    def encode(
        self, cfg: RunConfig, party: PartyData, *, device: torch.device, epoch: int, with_validation: bool
    ) -> EncodingOutput:
        k, k_private = cfg.instahide_k, cfg.instahide_k_private
        public = None
        if k > k_private:
            if party.public_pool is None:
                raise ValueError("InstaHide with public slots needs the run's public pool (public-fraction > 0)")
            public = party.public_pool().to(device).float()
        generator = None if cfg.secure_rng else torch.Generator().manual_seed(
            mixing_seed(cfg, party.partition_id, epoch))
        common = dict(public_x=public, k=k, k_private=k_private, num_classes=party.num_classes, generator=generator)
        train_x = party.train_x.to(device).float()
        release = instahide_encode(train_x, party.train_y, **common)
        val_release = instahide_encode(party.val_x.to(device).float(), party.val_y, **common) if with_validation else None
        metrics: dict[str, float | int] = {
            "instahide-k": k,
            "instahide-k-private": k_private,
            "public-pool-size": int(public.shape[0]) if public is not None else 0,
        }
        if epoch == 1:
            metrics["reid-rate"] = instahide_reidentification_rate(train_x, release)
        return EncodingOutput(train=release, val=val_release, metrics=metrics)

    def privacy_summary(self, cfg: RunConfig, parties: Sequence[Mapping[str, Any]], releases: Counter) -> dict:
        per_release = cfg.instahide_k_private
        exposures = mean_max(per_release * r for r in releases.values())
        return {
            "encoding": self.name,
            "release_mode": cfg.release,
            "k": cfg.instahide_k,
            "k_private": cfg.instahide_k_private,
            "public_fraction": cfg.public_fraction,
            "public_pool_size": mean_max(m["public-pool-size"] for m in parties),
            "noise_mode": "none",
            "tau": None,
            "releases_per_party": mean_max(releases.values()),
            "exposures_per_sample": exposures,
            "exposures_per_private_sample": {
                "as_private_component": exposures,
                "validation_sample": per_release if cfg.selection == "mixed-validation" else 0,
                "note": f"every InstaHide release puts each private training sample into exactly k_private = "
                f"{per_release} encoded rows (once as the row's own sample, once per further private slot); "
                "this repeated component is what Carlini et al. (2021) cluster on",
            },
            "mixing_randomness": mixing_randomness(cfg),
            "reidentification_rate": mean_max(m["reid-rate"] for m in parties),
            "reidentification_note": "share of each party's released rows whose absolute values |x~| are nearest "
            "to |x| of one of the row's k_private private sources; chance is about k_private/n; measured by the party",
            "upload_dtype": cfg.upload_dtype,
        }

    def log_rows(self, privacy: Mapping[str, Any]) -> list[tuple[str, str]]:
        exposures = privacy["exposures_per_sample"]
        return [
            ("encoding / release",
             f"InstaHide k = {privacy['k']} (k_private = {privacy['k_private']}, public pool "
             f"{privacy['public_pool_size']['max']:g} rows) / {privacy['release_mode']}, each private sample in "
             f"{exposures['max']:g} encoded rows; no calibrated noise"),
            ("re-identification",
             f"{100 * privacy['reidentification_rate']['mean']:.1f} % of released rows (|x~|) nearest to |x| of one "
             f"of their private sources (max party {100 * privacy['reidentification_rate']['max']:.1f} %)"),
        ]

    def table_fields(self, privacy: Mapping[str, Any]) -> dict[str, Any]:
        return {"instahide_k": privacy.get("k"), "instahide_k_private": privacy.get("k_private")}
