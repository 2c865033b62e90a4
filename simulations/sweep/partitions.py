"""What the parties of a sweep hold: class counts per party, one label-skew number and one
figure per partition cell and seed.

The partition of a run depends on its run config (data set, seed, partitioner, beta, rho,
data-poor party, public pool) and the number of parties; every strategy of a cell and seed
shares it. It is recomputed here from the run config with the parties' own code
(:func:`client.party.partition_indices`), without running anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.config import parse_run_config
from common.io import write_json_atomic
from common.partition.skew import class_counts, label_skew, party_label_distances
from simulations.sweep.plan import SweepRun

__all__ = ["PartitionFacts", "partition_facts", "write_partition_figures"]

log = logging.getLogger(__name__)

# Keys of a run config that decide its partition (beside the party count).
_PARTITION_KEYS = ("dataset", "data-dir", "test-fraction", "seed", "partitioner", "beta", "rho", "poor-party",
                   "min-party-size", "public-fraction")


@dataclass(frozen=True)
class PartitionFacts:
    """One partition: its class counts ``(P, C)``, per-party label distances and skew."""

    name: str
    counts: np.ndarray
    distances: np.ndarray
    skew: float
    poor_party: int | None

    def as_json(self) -> dict:
        return {"name": self.name, "counts": self.counts.tolist(), "label_distance": self.distances.tolist(),
                "label_skew": self.skew, "poor_party": self.poor_party}


def _key(run: SweepRun) -> tuple:
    return (run.parties, *(repr(run.run_config.get(k)) for k in _PARTITION_KEYS))


def _name(run: SweepRun) -> str:
    rho = f"-rho{run.rho:g}" if run.layout == "table6" else ""
    return f"P{run.parties}-b{run.beta:g}{rho}-seed{run.seed}"


def partition_facts(runs: Iterable[SweepRun]) -> dict[tuple, PartitionFacts]:
    """The partition of every distinct (cell, seed) among ``runs``, by partition key."""
    from client.party import partition_indices, private_pool
    from features.pipeline import load_run_data

    facts: dict[tuple, PartitionFacts] = {}
    for run in runs:
        key = _key(run)
        if key in facts:
            continue
        cfg = parse_run_config(run.run_config)
        data = load_run_data(cfg)
        labels = data.train_y.numpy()
        pool = private_pool(cfg, labels.size)
        parts = partition_indices(cfg, labels[pool], run.parties)
        counts = class_counts(labels[pool], parts, data.num_classes)
        facts[key] = PartitionFacts(
            name=_name(run), counts=counts, distances=party_label_distances(counts), skew=label_skew(counts),
            poor_party=cfg.poor_party if cfg.partitioner == "size-skew" else None,
        )
    return facts


def skew_of(facts: dict[tuple, PartitionFacts], run: SweepRun) -> float | None:
    """The label skew of ``run``'s partition, if it was computed."""
    found = facts.get(_key(run))
    return None if found is None else found.skew


def write_partition_figures(facts: dict[tuple, PartitionFacts], *, out_dir: Path) -> list[Path]:
    """One PNG per partition (classes stacked per party, the data-poor party marked) and
    ``partitions.json`` with every count; returns the files written."""
    from simulations.report.partitions import plot_partition

    folder = out_dir / "partitions"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for item in facts.values():
        path = folder / f"{item.name}.png"
        plot_partition(item.counts, path=path, title=f"{item.name}: class counts per party",
                       skew=item.skew, distances=item.distances, poor_party=item.poor_party)
        written.append(path)
    index = folder / "partitions.json"
    write_json_atomic(index, [item.as_json() for item in facts.values()])
    return [*written, index]


