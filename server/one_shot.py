"""One-shot collaboration: query every party once, train on the union of the releases."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from common.config import RunConfig
from common.model import MixupClassifier
from common.training import EpochRecord, evaluate, train_centralized
from server.metered_grid import MeteredGrid
from server.union import UnionBuffer

log = logging.getLogger("flwr.mixupfl.one-shot")  # child of flwr: shown in run logs


@dataclass
class Collected:
    train: UnionBuffer
    val: UnionBuffer
    party_metrics: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def collect_releases(
    grid: MeteredGrid, node_ids: list[int], *, timeout: float, device: torch.device | str = "cpu"
) -> Collected:
    """Send one ``query`` to every node and copy each release into the union on arrival.

    The union lives on ``device`` (the training device): each reply is copied there once
    and dropped, so host memory holds at most the reply being copied.
    """
    started = time.perf_counter()
    request = ConfigRecord({"request": "singularized-mixup-release"})
    messages = [
        Message(RecordDict({"config": request}), dst_node_id=nid, message_type=MessageType.QUERY)
        for nid in node_ids
    ]
    collected = Collected(
        train=UnionBuffer(expected_parties=len(node_ids), device=device),
        val=UnionBuffer(expected_parties=len(node_ids), device=device),
    )
    for reply in grid.iter_replies(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            collected.failures.append({"node-id": node, "error": reply.error.reason})
            log.error("node %s failed: %s", node, reply.error.reason)
            continue
        release = reply.content["release"]
        metrics = dict(reply.content["metrics"])
        pid = int(metrics["partition-id"])
        collected.train.add(pid, release["x"].numpy(), release["y"].numpy())
        collected.val.add(pid, release["val-x"].numpy(), release["val-y"].numpy())
        collected.party_metrics.append({"node-id": node, **metrics})
        log.info(
            "release %d/%d from party %d: %d rows (+%d validation), r = %.4g",
            len(collected.party_metrics), len(node_ids), pid,
            metrics["num-examples"], metrics["num-val"], metrics["radius"],
        )
        del reply, release
    answered = {m["node-id"] for m in collected.party_metrics} | {f["node-id"] for f in collected.failures}
    for nid in node_ids:
        if nid not in answered:
            collected.failures.append({"node-id": nid, "error": f"no reply within {timeout:.0f} s"})
    collected.seconds = time.perf_counter() - started
    return collected


def train_on_union(
    collected: Collected,
    cfg: RunConfig,
    *,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    device: torch.device,
) -> dict:
    """Train the appendix-E classifier on the union; select the epoch on held-out releases."""
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
