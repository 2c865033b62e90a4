"""No protection: every party uploads its clean training rows (one-hot labels).

The utility ceiling of a collaboration study: the server trains the same classifier, with
the same recipe, on exactly the rows the parties hold. Raw rows leave the parties, so it is a
simulation reference only: the run config refuses it in a deployment (``expected-parties``
set), and the raw-row guard, which exists to stop exactly this, is told that it is intended.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from common.encodings.base import ENCODINGS, Encoding, EncodingOutput
from common.stats import mean_max

if TYPE_CHECKING:
    from common.config import RunConfig
    from common.party import PartyData

__all__ = ["Pooled"]


@dataclass(frozen=True)
class _Rows:
    x: torch.Tensor
    y: torch.Tensor


@ENCODINGS.register
class Pooled(Encoding):
    """The parties' clean rows, pooled on the server (reference point: no protection)."""

    name = "pooled"
    label = "pooled clean data (no protection)"
    releases_raw_rows = True

    def check_config(self, cfg: RunConfig) -> None:
        if cfg.expected_parties:
            raise ValueError("encoding: 'pooled' uploads the parties' raw rows; it is a simulation reference point "
                             "and refused in a deployment (expected-parties is set)")

    def encode(self, cfg: RunConfig, party: PartyData, *, device: torch.device, epoch: int,
               with_validation: bool) -> EncodingOutput:
        def rows(x: torch.Tensor, y: torch.Tensor) -> _Rows:
            return _Rows(x=x.to(device).float(), y=torch.nn.functional.one_hot(y.long(), party.num_classes).float())

        val = rows(party.val_x, party.val_y) if with_validation else None
        return EncodingOutput(train=rows(party.train_x, party.train_y), val=val)

    def privacy_summary(self, cfg: RunConfig, parties: Sequence[Mapping[str, Any]], releases: Counter) -> dict:
        per_party = mean_max(releases.values())
        return {
            "encoding": self.name, "release_mode": cfg.release, "noise_mode": "none", "tau": None,
            "releases_per_party": per_party, "exposures_per_sample": per_party,
            "protection": "none: every party uploaded its clean training rows (a reference point, simulation only)",
        }

    def log_rows(self, privacy: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("encoding", "pooled clean rows: NO protection (the utility ceiling of this study)")]
