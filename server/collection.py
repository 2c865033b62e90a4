"""One collection of one-shot releases: a ``query`` to every party, each valid reply copied
into the union as it arrives."""

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
from server.validation import UploadCheck, UploadRejected

__all__ = ["Collected", "collect_releases"]

log = logging.getLogger("flwr.mixupfl.one-shot")  # child of flwr: shown in run logs


@dataclass
class Collected:
    """The union of one collection and what each party did."""

    train: UnionBuffer
    val: UnionBuffer | None
    epoch: int = 1
    party_metrics: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
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
    left out; the collection goes on with the valid parties.
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
    for reply in grid.iter_replies(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            collected.failures.append({"node-id": node, "error": reply.error.reason})
            log.error("node %s failed: %s", node, reply.error.reason)
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
            collected.failures.append({"node-id": nid, "error": f"no reply within {timeout:.0f} s"})
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


def _reject(collected: Collected, *, node: int, pid: object, epoch: int, reason: str) -> None:
    collected.rejections.append({"node-id": node, "partition-id": pid, "epoch": epoch, "reason": reason})
    log.error("upload from node %s (party %s) rejected: %s", node, pid, reason)
