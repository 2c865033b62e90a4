"""A party's one-shot release: the run's encoding (:mod:`common.encodings`), then the steps
every release goes through whatever the encoding: the raw-row guard, the sizes the server
checks against the arrays, and the cast to the upload dtype."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from common.config import RunConfig
from common.encodings import EncodedRows, release_nbytes
from common.encodings.singularized import Calibration, calibrate, mixing_seed
from common.leakage import nearest_private_rows
from common.party import PartyData

__all__ = [
    "Calibration", "PartyRelease", "RawDataLeak", "announce_release", "calibrate", "guard_against_raw_rows",
    "make_release", "mixing_seed", "to_upload_dtype",
]

FLOAT16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True)
class PartyRelease:
    """What a party uploads (``train``, ``val``: their ``x`` and ``y``) and its figures."""

    train: EncodedRows
    val: EncodedRows | None
    metrics: dict[str, float | int]


def make_release(
    cfg: RunConfig, party: PartyData, *, device: torch.device, epoch: int = 1, with_validation: bool = True
) -> PartyRelease:
    """Encode the training part and, with ``with_validation``, the validation part; refuse a
    release that would carry a private row; add the sizes every upload reports.

    ``epoch`` selects fresh randomness for ``release = "per-epoch"``; every call exposes each
    private training sample again. The validation part is meant to be released once
    (``with_validation`` on the first epoch); without it ``val`` is ``None``.
    """
    started = time.perf_counter()
    encoding = cfg.encoding_spec
    out = encoding.encode(cfg, party, device=device, epoch=epoch, with_validation=with_validation)
    if not encoding.releases_raw_rows:  # a no-protection reference uploads raw rows by design
        guard_against_raw_rows(cfg, party, out.train, out.val, absolute=encoding.compares_absolute_values)
    metrics = {
        "partition-id": party.partition_id,
        "epoch": epoch,
        "num-examples": int(out.train.x.shape[0]),
        "num-val": int(out.val.x.shape[0]) if out.val is not None else 0,
        "input-dim": int(out.train.x[0].numel()),
        "num-classes": party.num_classes,
        **encoding.party_metrics(cfg, out.metrics),
        "mixing-seconds": time.perf_counter() - started,
    }
    return PartyRelease(train=out.train, val=out.val, metrics=metrics)


def announce_release(cfg: RunConfig, party: PartyData, *, with_validation: bool) -> dict[str, int]:
    """What the party's release will be, from its data's shapes alone (nothing is encoded).

    The server accepts or refuses this announcement before the release is asked for
    (:mod:`server.announcement`); the upload must then have exactly these rows and this
    input dimension.

    Returns
    -------
    dict
        ``partition-id``, ``num-examples`` and ``num-val`` (rows of the training and, with
        ``with_validation``, the validation release; else 0), ``input-dim``, ``num-classes``
        and ``release-bytes`` (:func:`common.encodings.release_nbytes` of all those rows).
    """
    encoding = cfg.encoding_spec
    rows = encoding.release_rows(int(party.train_x.shape[0]))
    val_rows = encoding.release_rows(int(party.val_x.shape[0])) if with_validation else 0
    dim = int(party.train_x[0].numel())
    return {
        "partition-id": party.partition_id, "num-examples": rows, "num-val": val_rows, "input-dim": dim,
        "num-classes": party.num_classes,
        "release-bytes": release_nbytes(rows + val_rows, dim, party.num_classes, cfg.upload_dtype),
    }


class RawDataLeak(RuntimeError):
    """A release row is (nearly) one of the party's private rows: it must not be sent."""


def guard_against_raw_rows(
    cfg: RunConfig,
    party: PartyData,
    release: EncodedRows,
    val_release: EncodedRows | None,
    *,
    absolute: bool = False,
) -> float:
    """Refuse a release in which any row lies within ``release-guard`` x (RMS norm of the
    party's rows) of one of the party's private rows (training or validation part).

    Algorithm 1 never returns a private row unless its partner is (nearly) a copy of it and
    the noise is (nearly) zero, or a bug or a misconfiguration bypassed the mixing; either
    way raw data would leave the party. With ``absolute`` (an encoding with a sign mask) rows
    are compared by their absolute values, because a sign mask alone hides nothing from an
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
