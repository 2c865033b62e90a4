"""One-shot collaboration: query every party once, train on the union of the releases.

With ``release = "per-epoch"`` the server queries every party again before each central
epoch after the first and trains that epoch on the fresh union (the validation releases,
sent with the first query, stay fixed for model selection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from common.config import RunConfig
from common.model import MixupClassifier
from common.training import EpochRecord, evaluate, train_centralized
from server.metered_grid import MeteredGrid
from server.union import UnionBuffer
from server.validation import UploadCheck, UploadRejected

log = logging.getLogger("flwr.mixupfl.one-shot")  # child of flwr: shown in run logs


@dataclass
class Collected:
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
    device: torch.device | str = "cpu",
    epoch: int = 1,
    with_validation: bool = True,
    check: UploadCheck,
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
    request = ConfigRecord(
        {"request": "singularized-mixup-release", "epoch": epoch, "with-validation": with_validation}
    )
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
            arrays = {key: release[key].numpy() for key in release}
        except Exception as err:  # noqa: BLE001 - any malformed reply is a rejection, not a crash
            _reject(collected, node=node, pid=None, epoch=epoch, reason=f"unreadable reply: {err}")
            continue
        try:
            pid = check.check(node_id=node, arrays=arrays, metrics=metrics, with_validation=with_validation)
        except UploadRejected as err:
            _reject(collected, node=node, pid=metrics.get("partition-id"), epoch=epoch, reason=str(err))
            continue
        collected.train.add(pid, arrays["x"], arrays["y"])
        if collected.val is not None:
            collected.val.add(pid, arrays["val-x"], arrays["val-y"])
        collected.party_metrics.append({"node-id": node, **metrics})
        if epoch == 1:  # later epochs of a per-epoch run get one line each (below)
            how = (f"r = {metrics['radius']:.4g}" if "radius" in metrics
                   else f"InstaHide k = {metrics.get('instahide-k')}")
            log.info(
                "release %d/%d from party %d: %d rows (+%d validation), %s",
                len(collected.party_metrics), len(node_ids), pid, metrics["num-examples"], metrics["num-val"], how,
            )
        del reply, release, arrays
    answered = ({m["node-id"] for m in collected.party_metrics} | {f["node-id"] for f in collected.failures}
                | {r["node-id"] for r in collected.rejections})
    for nid in node_ids:
        if nid not in answered:
            collected.failures.append({"node-id": nid, "error": f"no reply within {timeout:.0f} s"})
    collected.seconds = time.perf_counter() - started
    if epoch > 1:
        log.info(
            "epoch %d: fresh releases from %d/%d parties, %d rows, in %.1f s",
            epoch, len(collected.party_metrics), len(node_ids), collected.train.filled, collected.seconds,
        )
    return collected


def _reject(collected: Collected, *, node: int, pid: object, epoch: int, reason: str) -> None:
    collected.rejections.append({"node-id": node, "partition-id": pid, "epoch": epoch, "reason": reason})
    log.error("upload from node %s (party %s) rejected: %s", node, pid, reason)


def train_on_union(
    collected: Collected,
    cfg: RunConfig,
    *,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    device: torch.device,
    next_release: Callable[[int], Collected] | None = None,
) -> dict:
    """Train the appendix-E classifier on the union; select the epoch on held-out releases.

    ``next_release(epoch)``, when given, collects that epoch's fresh releases
    (``release = "per-epoch"``); the first epoch trains on ``collected``. Batches are drawn
    over the union in canonical order (by party id), so a seeded run does not depend on the
    order in which the replies arrived.
    """
    if collected.val is None:
        raise ValueError("the first collection must carry the validation releases")
    torch.manual_seed(cfg.seed)
    x, y = collected.train.x, collected.train.y
    model = MixupClassifier(in_dim=int(x[0].numel()), num_classes=y.shape[1]).to(device)
    every = max(1, cfg.central_epochs // 10)

    def progress(rec: EpochRecord) -> None:
        if rec.epoch % every == 0 or rec.epoch == cfg.central_epochs:
            log.info(
                "epoch %d/%d  train loss %.4f  val loss %.4f (mixed validation releases)",
                rec.epoch, cfg.central_epochs, rec.train_loss, rec.val_loss,
            )

    started = time.perf_counter()
    result = train_centralized(
        model,
        x,
        y,
        val_x=collected.val.x,
        val_y=collected.val.y,
        epochs=cfg.central_epochs,
        generator=torch.Generator().manual_seed(cfg.seed),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        on_epoch=progress,
        row_order=collected.train.canonical_order(),
        fresh_data=None if next_release is None else _fresh_union(next_release),
    )
    train_seconds = time.perf_counter() - started
    test_loss, test_acc = evaluate(model, test_x, test_y)
    # Reported beside the selected model, never used to choose it.
    last = MixupClassifier(in_dim=int(x[0].numel()), num_classes=y.shape[1]).to(device)
    last.load_state_dict(result.last_state)
    _, last_acc = evaluate(last, test_x, test_y)
    return {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "selected_epoch": result.best_epoch,
        "selected_val_loss": result.best_val_loss,
        "last_epoch_test_accuracy": last_acc,
        "train_seconds": train_seconds,
        "history": [vars(r) for r in result.history],
    }


def _fresh_union(
    next_release: Callable[[int], Collected],
) -> Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    def fresh(epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        collected = next_release(epoch)
        if collected.train.filled == 0:
            raise RuntimeError(f"epoch {epoch}: no party sent a release: {collected.failures}")
        return collected.train.x, collected.train.y, collected.train.canonical_order()

    return fresh
