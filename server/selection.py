"""One-shot model selection on the parties' clean validation parts (``selection = "validation"``).

After central training the server sends its candidate checkpoints to every party in one
message; each party answers the loss of every candidate on its held-out validation part
(never released); the server keeps the candidate with the lowest size-weighted loss. The
extra round's bytes are counted by the metering grid like every other message.

What the server learns from a party here: its validation size and one loss per candidate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from server.metered_grid import MeteredGrid

__all__ = ["CandidateChoice", "candidate_key", "select_on_parties"]

log = logging.getLogger("flwr.mixupfl.selection")  # child of flwr: shown in run logs


def candidate_key(step: int) -> str:
    """The record name of the candidate checkpoint of central epoch ``step``."""
    return f"model-{step}"


@dataclass
class CandidateChoice:
    """The chosen candidate and what the selection round cost."""

    step: int
    val_loss: float
    figures: dict = field(default_factory=dict)


def weighted_losses(replies: list[Mapping[str, float]], steps: list[int]) -> dict[int, float]:
    """Size-weighted mean validation loss per candidate step over the valid replies."""
    total = sum(float(r["num-examples"]) for r in replies)
    return {step: sum(float(r["num-examples"]) * float(r[f"val-loss-{step}"]) for r in replies) / total
            for step in steps}


def _valid_reply(metrics: Mapping[str, object], steps: list[int]) -> str | None:
    """Why a party's answer cannot be used, or ``None``."""
    count = metrics.get("num-examples")
    if isinstance(count, bool) or not isinstance(count, (int, float)) or count != int(count) or count < 1:
        return f"num-examples {count!r} is not a positive integer"
    for step in steps:
        value = metrics.get(f"val-loss-{step}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"val-loss-{step} = {value!r} is not a finite, non-negative number"
    return None


def select_on_parties(
    grid: MeteredGrid, node_ids: list[int], candidates: Mapping[int, Mapping[str, torch.Tensor]], *, timeout: float
) -> CandidateChoice:
    """Send every candidate to every party in one message and keep the best (ties: earliest)."""
    if not candidates:
        raise ValueError("no candidate checkpoints to select from")
    steps = sorted(candidates)
    started = time.perf_counter()
    sent_before, received_before = grid.total_bytes_sent, grid.total_bytes_received
    content = {candidate_key(step): ArrayRecord(dict(candidates[step])) for step in steps}
    messages = [
        Message(RecordDict({**content, "config": ConfigRecord({"candidate-steps": steps})}), dst_node_id=nid,
                message_type=MessageType.EVALUATE)
        for nid in node_ids
    ]
    valid, refused = [], []
    for reply in grid.iter_replies(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            refused.append({"node-id": node, "reason": reply.error.reason})
            continue
        metrics = dict(reply.content["metrics"]) if "metrics" in reply.content else {}
        reason = _valid_reply(metrics, steps)
        if reason is not None:
            refused.append({"node-id": node, "reason": reason})
            log.error("selection answer of node %s rejected: %s", node, reason)
            continue
        valid.append(metrics)
    if not valid:
        raise RuntimeError(f"no party answered the selection round: {refused}")
    # A fixed order of the sum: the same run gives the same losses whatever the arrival order.
    valid.sort(key=lambda m: (m.get("partition-id", -1), m["num-examples"]))
    losses = weighted_losses(valid, steps)
    best = min(steps, key=lambda s: (losses[s], s))
    figures = {
        "candidates": steps,
        "weighted_val_loss": {str(s): losses[s] for s in steps},
        "parties_answered": len(valid),
        "refused": refused,
        "bytes_downloaded": grid.total_bytes_sent - sent_before,
        "bytes_uploaded": grid.total_bytes_received - received_before,
        "seconds": time.perf_counter() - started,
    }
    log.info("selection round: %d candidates to %d parties (%d answered), epoch %d chosen (val loss %.4f)",
             len(steps), len(node_ids), len(valid), best, losses[best])
    return CandidateChoice(step=best, val_loss=losses[best], figures=figures)
