"""Size before transfer: every party announces its one-shot release before it uploads it.

Before the first collection the server sends each party one small ``query`` whose config
carries ``announce = true``; the party answers from its data's shapes alone, without
encoding anything (:func:`client.release.announce_release`): its partition, the rows of its
training (and validation) release, the input dimension, the classes and the byte size of the
release's arrays. The server refuses an announcement above ``max-upload-mb``, one that is
malformed (a figure missing, not finite, negative or fractional) and one whose shapes do not
fit the run or whose size is not what those shapes make; it asks only the accepted parties
for their releases (:func:`server.collection.collect_releases`), and each upload must then
have exactly the announced rows and input dimension (:class:`server.validation.UploadCheck`).
An oversized release is thus refused before it is sent: one small message each way.

What this does not do: a hostile party that ignores the protocol (it announces a small
release and sends a large one) still makes the server receive its message before the
mismatch and the size check after transfer (the last line of defence) refuse it. Such a
message is bounded only by Flower's transport: Flower 1.42 moves an array in chunks of
``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE`` (5 MiB) and every gRPC call is bounded by
``flwr.supercore.grpc.GRPC_MAX_MESSAGE_LENGTH`` (2_147_483_647 bytes, 2 GiB - 1), which
therefore bounds a chunk, not a whole message.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from common.encodings import release_nbytes
from server.collection import _short_error
from server.validation import UploadRejected

__all__ = ["ANNOUNCED_FIELDS", "Announced", "Announcement", "announce_releases", "check_announcement"]

log = logging.getLogger("flwr.mixupfl.one-shot")  # child of flwr: shown in run logs

ANNOUNCED_FIELDS = ("partition-id", "num-examples", "num-val", "input-dim", "num-classes", "release-bytes")
"""What every announcement carries (whole numbers, none negative)."""

MIB = 2**20


@dataclass(frozen=True)
class Announcement:
    """An accepted announcement: what the party's upload must be."""

    node_id: int
    partition_id: int
    rows: int
    val_rows: int
    input_dim: int
    num_classes: int
    release_bytes: int


@dataclass
class Announced:
    """One announcement round: the accepted parties and who was refused or failed.

    ``rejections`` entries carry ``stage = "announcement"`` and the announced size
    (``announced_bytes``, where it was a number); ``bytes_uploaded`` / ``bytes_downloaded``
    are the round's payload bytes as the metering grid counted them (0 on a grid that does
    not count).
    """

    accepted: dict[int, Announcement] = field(default_factory=dict)
    rejections: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0

    def figures(self) -> dict:
        """The round's figures for the summary's ``union`` block."""
        return {"announce_seconds": self.seconds, "announce_bytes_uploaded": self.bytes_uploaded,
                "announce_bytes_downloaded": self.bytes_downloaded,
                "announced_bytes": sum(a.release_bytes for a in self.accepted.values()),
                "announce_refused": len(self.rejections)}


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mib(value: float) -> str:
    return f"{value / MIB:.4g}"


def check_announcement(
    node_id: int,
    metrics: Mapping[str, object],
    *,
    max_bytes: int,
    row_shape: tuple[int, ...],
    num_classes: int,
    input_dtype: str,
    num_partitions: int,
    with_validation: bool,
) -> Announcement:
    """Accept one announcement or raise :class:`server.validation.UploadRejected` (one line).

    Refused: a field of :data:`ANNOUNCED_FIELDS` missing, not a number, NaN, infinite,
    negative or fractional; a size above ``max_bytes`` (the reason reads "announced N MiB,
    above max-upload-mb = M"); a partition out of range; shapes that are not the run's
    (input dimension, classes), no training rows, or validation rows not asked for; a size
    that is not what the announced shapes make in ``input_dtype``. A size exactly at
    ``max_bytes`` is accepted.
    """
    values: dict[str, int] = {}
    for key in ANNOUNCED_FIELDS:
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UploadRejected(f"announcement: {key} missing or not a number ({value!r})")
        if not math.isfinite(value):
            raise UploadRejected(f"announced {key} = {value} is not finite")
        if value < 0:
            raise UploadRejected(f"announced {key} = {value:g} is negative")
        if value != int(value):
            raise UploadRejected(f"announced {key} = {value:g} is not a whole number")
        values[key] = int(value)
    size = values["release-bytes"]
    if size > max_bytes:
        raise UploadRejected(f"announced {_mib(size)} MiB, above max-upload-mb = {_mib(max_bytes)}")
    if values["partition-id"] >= num_partitions:
        raise UploadRejected(f"announced partition-id {values['partition-id']} is not in [0, {num_partitions})")
    dim = math.prod(row_shape)
    if values["input-dim"] != dim or values["num-classes"] != num_classes:
        raise UploadRejected(f"announced rows of {values['input-dim']} inputs and {values['num-classes']} classes; "
                             f"this run's have {dim} and {num_classes}")
    if values["num-examples"] < 1:
        raise UploadRejected("announced no training rows")
    if values["num-val"] and not with_validation:
        raise UploadRejected(f"announced {values['num-val']} validation rows; this run asks for none")
    expected = release_nbytes(values["num-examples"] + values["num-val"], dim, num_classes, input_dtype)
    if size != expected:
        raise UploadRejected(f"announced {size} bytes, but {values['num-examples']} + {values['num-val']} rows of "
                             f"{dim} {input_dtype} inputs and {num_classes} float32 labels make {expected}")
    return Announcement(node_id=node_id, partition_id=values["partition-id"], rows=values["num-examples"],
                        val_rows=values["num-val"], input_dim=dim, num_classes=num_classes, release_bytes=size)


def announce_releases(
    grid,  # noqa: ANN001 - a Grid; a MeteredGrid attributes replies and counts the bytes
    node_ids: list[int],
    *,
    timeout: float,
    max_bytes: int,
    row_shape: tuple[int, ...],
    num_classes: int,
    input_dtype: str,
    num_partitions: int,
    with_validation: bool,
) -> Announced:
    """Ask every node what its release will be; accept or refuse each announcement.

    Each queried node ends up once in ``accepted``, ``rejections`` or ``failures`` (an error
    reply, an unreadable one counts as a rejection, no reply within ``timeout``). Replies are
    attributed to the node their query went to (:meth:`MeteredGrid.destination_of`).
    """
    started = time.perf_counter()
    up0, down0 = getattr(grid, "total_bytes_received", 0), getattr(grid, "total_bytes_sent", 0)
    request = ConfigRecord({"request": "one-shot-announce", "announce": True, "with-validation": with_validation})
    messages = [Message(RecordDict({"config": request}), dst_node_id=nid, message_type=MessageType.QUERY)
                for nid in node_ids]
    out = Announced()
    destination_of = getattr(grid, "destination_of", lambda _reply: None)
    for reply in grid.iter_replies(messages, timeout=timeout):
        dst = destination_of(reply)
        node = reply.metadata.src_node_id if dst is None else dst
        if node in out.accepted or any(e["node-id"] == node for e in out.rejections + out.failures):
            continue  # one entry per node
        if reply.has_error():
            out.failures.append({"node-id": node, "error": _short_error(reply.error.reason)})
            log.error("node %s failed to announce its release: %s", node, out.failures[-1]["error"])
            continue
        metrics: dict = {}
        try:
            metrics = dict(reply.content["announcement"])
            out.accepted[node] = check_announcement(
                node, metrics, max_bytes=max_bytes, row_shape=row_shape, num_classes=num_classes,
                input_dtype=input_dtype, num_partitions=num_partitions, with_validation=with_validation)
        except Exception as err:  # noqa: BLE001 - a malformed announcement is a refusal, not a crash
            reason = str(err) if isinstance(err, UploadRejected) else f"unreadable announcement: {err}"
            size = metrics.get("release-bytes")
            out.rejections.append({"node-id": node, "partition-id": metrics.get("partition-id"), "epoch": 1,
                                   "stage": "announcement", "reason": reason,
                                   **({"announced_bytes": size} if _finite_number(size) else {})})
            log.error("release of node %s (party %s) refused before transfer: %s", node,
                      metrics.get("partition-id"), reason)
    answered = set(out.accepted) | {e["node-id"] for e in out.rejections + out.failures}
    out.failures.extend({"node-id": nid, "error": f"no reply within {timeout:.0f} s (announcement)"}
                        for nid in node_ids if nid not in answered)
    out.seconds = time.perf_counter() - started
    out.bytes_uploaded = getattr(grid, "total_bytes_received", 0) - up0
    out.bytes_downloaded = getattr(grid, "total_bytes_sent", 0) - down0
    log.info("announcements: %d of %d parties accepted, %d refused before transfer, %d failed, in %.1f s",
             len(out.accepted), len(node_ids), len(out.rejections), len(out.failures), out.seconds)
    return out
