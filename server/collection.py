"""One collection of one-shot releases: a ``query`` to every party, each valid reply copied
into the union as it arrives.

Every reply is attributed to the node its query went to (:meth:`MeteredGrid.destination_of`):
an error reply for a party that died may come from the SuperLink, whose node id is not the
party's. Each queried node appears once in ``party_metrics``, ``failures`` or ``rejections``
(a node flagged in a partition conflict is in ``rejections`` and ``conflicts``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from common.npy import npy_view
from server.metered_grid import MeteredGrid
from server.union import UnionBuffer
from server.validation import PartitionConflict, UploadCheck, UploadRejected

__all__ = ["Collected", "collect_releases"]

log = logging.getLogger("flwr.mixupfl.one-shot")  # child of flwr: shown in run logs


@dataclass
class Collected:
    """The union of one collection and what each party did.

    ``conflicts``: one entry per partition that several nodes claimed with valid releases
    (``partition-id``, ``node-ids``, ``epoch``); every claimant is also in ``rejections``.
    """

    train: UnionBuffer
    val: UnionBuffer | None
    epoch: int = 1
    party_metrics: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def collect_releases(
    grid: MeteredGrid,
    node_ids: list[int],
    *,
    timeout: float,
    check: UploadCheck,
    device: torch.device | str = "cpu",
    epoch: int = 1,
    with_validation: bool = True,
) -> Collected:
    """Send one ``query`` to every node and copy each release into the union on arrival.

    The union lives on ``device`` (the training device): each reply is copied there once
    and dropped, so host memory holds at most the reply being copied. ``epoch`` asks for
    that epoch's fresh mixtures (``release = "per-epoch"``); ``with_validation`` asks for
    the party's validation release too. ``check`` validates every upload first
    (:mod:`server.validation`): a rejected one is logged, listed in ``rejections`` and
    left out; the collection goes on with the valid parties. Two nodes claiming one
    partition (:class:`server.validation.PartitionConflict`) are both rejected and listed in
    ``conflicts``; a release of the first claimant already in the union is taken out again.
    """
    started = time.perf_counter()
    request = ConfigRecord({"request": "one-shot-release", "epoch": epoch, "with-validation": with_validation})
    messages = [
        Message(RecordDict({"config": request}), dst_node_id=nid, message_type=MessageType.QUERY)
        for nid in node_ids
    ]
    collected = Collected(
        train=UnionBuffer(expected_parties=len(node_ids), device=device),
        val=UnionBuffer(expected_parties=len(node_ids), device=device) if with_validation else None,
        epoch=epoch,
    )
    destination_of = getattr(grid, "destination_of", lambda _reply: None)
    for reply in grid.iter_replies(messages, timeout=timeout):
        dst = destination_of(reply)
        node = reply.metadata.src_node_id if dst is None else dst
        if reply.has_error():
            _fail(collected, node, _short_error(reply.error.reason))
            continue
        try:
            release = reply.content["release"]
            metrics = dict(reply.content["metrics"])
            arrays = {key: _view(release[key]) for key in release}
        except Exception as err:  # noqa: BLE001 - any malformed reply is a rejection, not a crash
            _reject(collected, node=node, pid=None, epoch=epoch, reason=f"unreadable reply: {err}")
            continue
        try:
            pid = check.check(node_id=node, arrays=arrays, metrics=metrics, with_validation=with_validation,
                              first=epoch == 1)
        except PartitionConflict as err:
            _conflict(collected, err, node=node, epoch=epoch)
            continue
        except UploadRejected as err:
            _reject(collected, node=node, pid=metrics.get("partition-id"), epoch=epoch, reason=str(err))
            continue
        collected.train.add(pid, arrays["x"], arrays["y"])
        if collected.val is not None:
            collected.val.add(pid, arrays["val-x"], arrays["val-y"])
        collected.party_metrics.append({"node-id": node, **metrics})
        if epoch == 1:  # later epochs of a per-epoch run get one line each (below)
            log.info("release %d/%d from party %d: %d rows (+%d validation)",
                     len(collected.party_metrics), len(node_ids), pid, metrics["num-examples"], metrics["num-val"])
        large = sum(a.nbytes for a in arrays.values()) >= TRIM_AFTER_BYTES
        del reply, release, arrays
        if large:
            release_freed_memory()
    answered = ({m["node-id"] for m in collected.party_metrics} | {f["node-id"] for f in collected.failures}
                | {r["node-id"] for r in collected.rejections})
    for nid in node_ids:
        if nid not in answered:
            _fail(collected, nid, f"no reply within {timeout:.0f} s")
    collected.seconds = time.perf_counter() - started
    if epoch > 1:
        log.info("epoch %d: fresh releases from %d/%d parties, %d rows, in %.1f s",
                 epoch, len(collected.party_metrics), len(node_ids), collected.train.filled, collected.seconds)
    return collected


TRIM_AFTER_BYTES = 1 << 20
"""Replies at least this large hand their freed memory back at once (small ones do not matter)."""


def _libc_trim():  # noqa: ANN202
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        return None


_MALLOC_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the OS (glibc ``malloc_trim``). A reply's buffers
    are freed once copied into the union; without this the allocator keeps one or two
    replies' worth of freed memory per thread arena, resident for the rest of the run."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _view(array) -> np.ndarray:  # noqa: ANN001 - Flower's Array
    """The reply's array without a copy (a read-only view of its buffer): the union copies
    it once; ``Array.numpy()`` would add a second, transient, copy of every release."""
    try:
        return npy_view(array.data)
    except ValueError:
        return array.numpy()


def _short_error(reason: str) -> str:
    from server.strategies.screening import short_error  # the strategies package imports this module

    return short_error(reason)


def _fail(collected: Collected, node: int, error: str) -> None:
    """One failure per node: a second error reply for a node already listed adds nothing."""
    if any(f["node-id"] == node for f in collected.failures):
        return
    collected.failures.append({"node-id": node, "error": error})
    log.error("node %s failed: %s", node, error)


def _conflict(collected: Collected, err: PartitionConflict, *, node: int, epoch: int) -> None:
    """Flag every claimant of ``err.partition_id``: an accepted earlier claimant's release
    leaves the union and its metrics become a rejection; this claimant is rejected."""
    pid = err.partition_id
    earlier = [m for m in collected.party_metrics if int(m["partition-id"]) == pid]
    if earlier:
        collected.party_metrics = [m for m in collected.party_metrics if int(m["partition-id"]) != pid]
        collected.train.drop(pid)
        if collected.val is not None:
            collected.val.drop(pid)
        for m in earlier:
            _reject(collected, node=m["node-id"], pid=pid, epoch=epoch, reason=str(err))
    entry = next((c for c in collected.conflicts if c["partition-id"] == pid), None)
    if entry is None:
        collected.conflicts.append({"partition-id": pid, "node-ids": list(err.node_ids), "epoch": epoch})
    else:
        entry["node-ids"] = list(err.node_ids)
        for r in collected.rejections:  # earlier claimants' reasons name every claimant
            if r["partition-id"] == pid and r["node-id"] in err.node_ids:
                r["reason"] = str(err)
    _reject(collected, node=node, pid=pid, epoch=epoch, reason=str(err))


def _reject(collected: Collected, *, node: int, pid: object, epoch: int, reason: str) -> None:
    collected.rejections.append({"node-id": node, "partition-id": pid, "epoch": epoch, "reason": reason})
    log.error("upload from node %s (party %s) rejected: %s", node, pid, reason)
