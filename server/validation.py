"""Checks on every one-shot upload before it touches the union.

A deployed server receives whatever a SuperNode sends. The size limit is enforced twice: on
the party's announcement, before anything is sent (:mod:`server.announcement`), and here, after
transfer, on what arrived (a party may ignore the protocol). A release enters the union only if
it has the expected arrays, shapes, dtypes and counts, finite values, soft labels on the
probability simplex, stays under the size limit, and is the only upload of its node in
this collection. Anything else is rejected with a reason; the run goes on with the valid
parties and the summary lists every rejection.

Partition claims. In a deployment a party's ``partition-id`` comes from its SuperNode's own
node config (:mod:`client.app` reads ``partition-id`` there); the server cannot see that
config, so it checks what it can: the id is in range, no two nodes claim one partition in a
collection (:class:`PartitionConflict`: both are flagged, neither release is used, since the
server cannot know which of the two is honest), and in a later collection of a per-epoch run
a node claims the partition it released in the first one and no other node's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.encodings import Encoding

__all__ = ["PartitionConflict", "UploadCheck", "UploadRejected"]


SERVER_FIELDS = frozenset({"node-id"})
"""Summary fields the server fills itself; a party's metrics may never set them."""

SIZE_RANGES: dict[str, tuple[float, float]] = {
    "num-examples": (1, math.inf), "num-val": (0, math.inf), "epoch": (1, math.inf), "input-dim": (1, math.inf),
    "num-classes": (2, math.inf), "partition-id": (0, math.inf),
    "calibration-seconds": (0, math.inf), "mixing-seconds": (0, math.inf),
}
"""Ranges of the figures every release carries, whatever the encoding."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class UploadRejected(ValueError):
    """An upload that must not enter the union; the message says why (one line)."""


class PartitionConflict(UploadRejected):
    """A valid upload whose partition another node of this collection claimed too.

    Every claimant is flagged and no claimant's release is used: the server cannot tell the
    honest party from the one claiming its partition (in a deployment the binding lives in
    each SuperNode's node config, which the server never sees).

    Attributes
    ----------
    partition_id : int
        The contested partition.
    node_ids : list of int
        Every node that claimed it with a valid release, in arrival order (this one last).
    """

    def __init__(self, partition_id: int, node_ids: list[int]) -> None:
        self.partition_id = partition_id
        self.node_ids = list(node_ids)
        super().__init__(f"partition-id {partition_id} claimed by nodes {', '.join(map(str, self.node_ids))} "
                         "in one collection; no claimant's release is used (the server cannot tell which is honest)")


@dataclass
class UploadCheck:
    """What a valid upload of this run looks like, and which parties already sent one.

    Parameters
    ----------
    row_shape : tuple of int
        Shape of one mixed input row (the server's test inputs have the same).
    num_classes : int
        Width of the soft labels.
    input_dtype : str
        The run's ``upload-dtype`` (``float32`` or ``float16``); soft labels are float32.
    num_partitions : int
        Valid partition ids are ``0 .. num_partitions - 1``.
    max_bytes : int
        Largest accepted upload (all arrays of one reply).
    encoding : Encoding
        The run's one-shot encoding; its ``first_release_metrics`` / ``later_release_metrics``
        say which figures a release must carry, its ``metric_ranges`` where they must lie.
    party_figures : {"coarse", "exact"}
        The run's ``party-figures``: which figures the encoding requires.
    value_bound : float, optional
        The largest ``|x~|`` a legitimate release can carry (:meth:`Encoding.input_bound`, from
        the data set's valid range and the run's tau and alpha, never from the party's claims);
        ``None`` where the inputs have no public range (backbone features).
    simplex_tolerance : float
        Allowed deviation of a soft-label row from the simplex (float32 rounding).
    bound : dict of int to int
        A later collection of a per-epoch run: node id -> the partition it released in the
        first collection. Such a node must claim that partition again, and no other node may
        claim it. Empty in the first collection.
    flagged : set of int
        Nodes flagged in a partition conflict of the first collection: a later release of
        theirs is refused.
    claims : dict of int to list of int
        Filled by :meth:`check`: partition id -> the nodes that claimed it with a valid release.
    announced : dict of int to Announcement, optional
        The accepted announcements (:mod:`server.announcement`), by node: an upload must then
        have exactly the announced partition, training rows, input dimension and (when it
        carries one) validation rows; a node without an accepted announcement is refused.
        ``None``: no announcement round (the checks below still bound the size after transfer).
    """

    row_shape: tuple[int, ...]
    num_classes: int
    input_dtype: str
    num_partitions: int
    max_bytes: int
    encoding: Encoding
    simplex_tolerance: float = 1e-4
    value_bound: float | None = None
    party_figures: str = "coarse"
    seen_parties: set[int] = field(default_factory=set)
    seen_nodes: set[int] = field(default_factory=set)
    bound: dict[int, int] = field(default_factory=dict)
    flagged: set[int] = field(default_factory=set)
    claims: dict[int, list[int]] = field(default_factory=dict)
    announced: dict[int, Any] | None = None

    def check(
        self,
        *,
        node_id: int,
        arrays: Mapping[str, np.ndarray],
        metrics: Mapping[str, object],
        with_validation: bool,
        first: bool | None = None,
    ) -> int:
        """Validate one reply; return its partition id, or raise :class:`UploadRejected`.

        A valid upload marks its node as seen (a second one from it is rejected) and claims
        its partition. A valid upload claiming a partition that another node's valid upload
        claimed in this collection raises :class:`PartitionConflict` (the caller drops every
        claimant's release); a rejected upload claims nothing.
        """
        if "partition-id" not in metrics:
            raise UploadRejected("metrics carry no partition-id")
        pid = metrics["partition-id"]
        if isinstance(pid, float) and pid.is_integer():
            pid = int(pid)
        if not isinstance(pid, int) or not 0 <= pid < self.num_partitions:
            raise UploadRejected(f"partition-id {pid!r} is not in [0, {self.num_partitions})")
        if node_id in self.seen_nodes:
            raise UploadRejected(f"second upload from node {node_id} in this collection")
        self._check_binding(node_id, pid)
        reserved = sorted(set(metrics) & SERVER_FIELDS)
        if reserved:
            raise UploadRejected(f"metrics may not set the server's own fields: {', '.join(reserved)}")
        # The first release carries the party's figures, whether or not it carries a validation
        # release (only selection = "mixed-validation" asks for one).
        first = with_validation if first is None else first
        wanted = self.encoding.required_metrics(self.party_figures, first=first)
        absent = [k for k in wanted if not _is_number(metrics.get(k))]
        if absent:
            raise UploadRejected(f"metrics missing or not numbers: {', '.join(absent)}")
        self._check_metric_values(metrics)
        if self.announced is not None:
            self._check_announced(node_id, pid, arrays, with_validation)
        # The last line of defence: a party that ignored the announcement was received in full.
        total = sum(int(a.nbytes) for a in arrays.values())
        if total > self.max_bytes:
            raise UploadRejected(f"upload of {total} bytes is over the limit of {self.max_bytes} bytes")
        parts = [("x", "y", "num-examples")] + ([("val-x", "val-y", "num-val")] if with_validation else [])
        expected_keys = {k for p in parts for k in p[:2]}
        missing = sorted(expected_keys - set(arrays))
        extra = sorted(set(arrays) - expected_keys)
        if missing or extra:
            raise UploadRejected(f"arrays {sorted(arrays)}: missing {missing}, unexpected {extra}")
        for x_key, y_key, count_key in parts:
            self._check_part(arrays[x_key], arrays[y_key], metrics.get(count_key), x_key, y_key, count_key)
        self.seen_nodes.add(node_id)
        claimants = self.claims.setdefault(pid, [])
        claimants.append(node_id)
        if len(claimants) > 1:
            self.seen_parties.discard(pid)
            raise PartitionConflict(pid, claimants)
        self.seen_parties.add(pid)
        return pid

    def _check_binding(self, node_id: int, pid: int) -> None:
        """A later collection: the node keeps the partition it released first, takes no other
        node's, and was not flagged in a conflict."""
        if node_id in self.flagged:
            raise UploadRejected(f"node {node_id} was flagged in a partition conflict of the first collection")
        if node_id in self.bound and self.bound[node_id] != pid:
            raise UploadRejected(f"node {node_id} released partition {self.bound[node_id]} in the first collection, "
                                 f"not partition {pid}")
        owner = next((n for n, p in self.bound.items() if p == pid and n != node_id), None)
        if owner is not None:
            raise UploadRejected(f"partition-id {pid} was released by node {owner} in the first collection")

    def _check_announced(self, node_id: int, pid: int, arrays: Mapping[str, np.ndarray],
                         with_validation: bool) -> None:
        """The upload is what its node announced: partition, rows, input dimension."""
        told = self.announced.get(node_id) if self.announced is not None else None
        if told is None:
            raise UploadRejected(f"node {node_id} has no accepted announcement; its upload was not asked for")
        if pid != told.partition_id:
            raise UploadRejected(f"announced partition-id {told.partition_id}, sent partition-id {pid}")
        parts = [("x", told.rows)] + ([("val-x", told.val_rows)] if with_validation else [])
        for key, rows in parts:
            x = arrays.get(key)
            if x is None or x.ndim < 1:
                continue  # the key and shape checks below name it
            dim = math.prod(x.shape[1:])
            if x.shape[0] != rows or dim != told.input_dim:
                raise UploadRejected(f"announced {rows} rows x {told.input_dim} inputs for {key}, sent "
                                     f"{x.shape[0]} rows x {dim} inputs")

    def _check_metric_values(self, metrics: Mapping[str, object]) -> None:
        """Every figure a number, never NaN, finite unless the encoding allows +inf for it, and
        inside its declared range: a summary's statistics can never be poisoned or crash."""
        ranges = {**SIZE_RANGES, **self.encoding.metric_ranges}
        for key, value in metrics.items():
            if not _is_number(value) or math.isnan(float(value)):
                raise UploadRejected(f"metric {key} = {value!r} is not a number")
            value = float(value)
            if math.isinf(value) and not (value > 0 and key in self.encoding.infinite_metrics):
                raise UploadRejected(f"metric {key} = {value} is not finite")
            low, high = ranges.get(key, (-math.inf, math.inf))
            if not low <= value <= high:
                raise UploadRejected(f"metric {key} = {value:g} is outside [{low:g}, {high:g}]")

    def _check_part(self, x: np.ndarray, y: np.ndarray, count: object, x_key: str, y_key: str, count_key: str) -> None:
        if x.dtype != np.dtype(self.input_dtype):
            raise UploadRejected(f"{x_key} has dtype {x.dtype}, the run uploads {self.input_dtype}")
        if y.dtype != np.float32:
            raise UploadRejected(f"{y_key} has dtype {y.dtype}, soft labels are float32")
        if x.ndim < 1 or tuple(x.shape[1:]) != tuple(self.row_shape):
            raise UploadRejected(f"{x_key} has shape {x.shape}, rows must be {self.row_shape}")
        if y.shape != (x.shape[0], self.num_classes):
            raise UploadRejected(f"{y_key} has shape {y.shape}, expected ({x.shape[0]}, {self.num_classes})")
        if x.shape[0] == 0:
            raise UploadRejected(f"{x_key} is empty")
        if count != x.shape[0]:
            raise UploadRejected(f"{count_key} = {count!r} but {x_key} has {x.shape[0]} rows")
        # min and max propagate NaN and reach +-inf: the finiteness and |x| checks without a
        # temporary array the size of the upload (the one-shot server's memory stays near the union).
        low, high = float(x.min()), float(x.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise UploadRejected(f"{x_key} holds NaN or inf")
        if self.value_bound is not None:
            peak = max(abs(low), abs(high))
            # float16 rounds to about 1e-3 relative; float32 to about 1e-7.
            slack = 1e-3 if x.dtype == np.float16 else 1e-5
            if peak > self.value_bound * (1 + slack) + slack:
                raise UploadRejected(
                    f"{x_key} reaches |x| = {peak:.4g}, above the {self.value_bound:.4g} a valid release of this run can "
                    "carry (the data's valid range and Theorem 2's largest radius at the run's tau and alpha)")
        if not np.isfinite(y).all():
            raise UploadRejected(f"{y_key} holds NaN or inf")
        if (y < -self.simplex_tolerance).any() or np.abs(y.sum(axis=1, dtype=np.float64) - 1).max() > self.simplex_tolerance:
            raise UploadRejected(f"{y_key}: soft labels are not on the probability simplex")
