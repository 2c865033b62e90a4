"""A Grid that counts the bytes it moves and polls for replies without long sleeps.

Strategies and protocols talk to it as to any Grid; what it adds is transport-level:
payload bytes sent to parties (their download) and received from them (their upload),
per node, and a ``send_and_receive`` that polls with a short, growing interval (5 ms, up to
0.1 s while nothing arrives; Flower's own grids sleep 0.1 s to 3 s between polls, which would
dominate a small simulated round). It also notes when the first message left and the first
reply came back (``time.time()``), for the start-up figures of a run, and which node each
message went to (:meth:`MeteredGrid.destination_of`), so that a reply is attributed to that node.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

__all__ = ["MeteredGrid", "is_simulation", "payload_bytes"]


def payload_bytes(content: RecordDict) -> int:
    """Bytes of a message's records: array buffers plus serialised metric/config records."""
    total = 0
    for record in content.array_records.values():
        total += record.count_bytes()
    for record in content.metric_records.values():
        total += len(record.deflate())
    for record in content.config_records.values():
        total += len(record.deflate())
    return total


class MeteredGrid(Grid):
    """Wrap ``grid``; every pushed and pulled message is counted."""

    def __init__(self, grid: Grid, *, poll_interval: float = 0.005, max_poll_interval: float = 0.1) -> None:
        self._grid = grid
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval
        self.bytes_sent: dict[int, int] = defaultdict(int)
        self.bytes_received: dict[int, int] = defaultdict(int)
        self.messages_sent = 0
        self.messages_received = 0
        self.first_push_time: float | None = None
        self.first_reply_time: float | None = None
        self._destinations: dict[str, int] = {}

    # -- counting ------------------------------------------------------------------------
    @property
    def total_bytes_sent(self) -> int:
        return sum(self.bytes_sent.values())

    @property
    def total_bytes_received(self) -> int:
        return sum(self.bytes_received.values())

    def _count_sent(self, messages: Iterable[Message]) -> Iterator[Message]:
        for msg in messages:
            self.bytes_sent[msg.metadata.dst_node_id] += payload_bytes(msg.content)
            self.messages_sent += 1
            yield msg

    # -- Grid interface -----------------------------------------------------------------
    def set_run(self, run):  # noqa: ANN001 - Flower's Run type
        self._grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001, ANN201
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self):  # noqa: ANN201
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(self._count_sent(messages))
        ids = list(self._grid.push_messages(messages))
        for mid, msg in zip(ids, messages, strict=False):
            if mid:
                self._destinations[mid] = msg.metadata.dst_node_id
        if self.first_push_time is None:
            self.first_push_time = time.time()
        return ids

    def destination_of(self, reply: Message) -> int | None:
        """The node the message ``reply`` answers was sent to (a SuperLink's error reply for a
        node that is gone has the SuperLink as its sender), or ``None`` if not sent here."""
        return self._destinations.get(reply.metadata.reply_to_message_id)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        if replies and self.first_reply_time is None:
            self.first_reply_time = time.time()
        for msg in replies:
            if msg.has_content():
                self.bytes_received[msg.metadata.src_node_id] += payload_bytes(msg.content)
            self.messages_received += 1
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.iter_replies(messages, timeout=timeout))

    def iter_replies(
        self, messages: Iterable[Message], *, timeout: float | None = None, pull_fraction: float = 0.1
    ) -> Iterator[Message]:
        """Push ``messages`` and yield replies as they arrive, until all came or ``timeout``.

        Replies are handed over one by one, with no reference kept. Against a SuperLink (a
        deployment, whose pulled replies are deserialised copies) they are pulled for at most
        ``ceil(pull_fraction * N)`` message ids at a time: a consumer that copies each reply
        and drops it holds at most that fraction of all replies in memory at once, even when
        every party has already answered. The simulation's in-memory grid hands out the
        replies it already holds, so every pending id is asked in one call there.

        Polling: every ``poll_interval`` while replies keep coming; after a poll that found
        nothing the interval grows by 10 % up to ``max_poll_interval``.
        """
        pending = list(self.push_messages(messages))
        chunk = len(pending) if is_simulation(self._grid) else max(1, math.ceil(pull_fraction * len(pending)))
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = self._poll_interval
        while pending:
            got_any = False
            waiting: list[str] = []
            for ids in [pending[i : i + chunk] for i in range(0, len(pending), chunk)]:
                replies = list(self.pull_messages(ids))
                got_any = got_any or bool(replies)
                answered = {msg.metadata.reply_to_message_id for msg in replies}
                waiting.extend(m for m in ids if m not in answered)
                while replies:
                    yield replies.pop()
            pending = waiting
            if not pending:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            if got_any:
                interval = self._poll_interval
            else:
                time.sleep(interval)
                interval = min(self._max_poll_interval, interval * 1.1)


def is_simulation(grid: object) -> bool:
    """Whether ``grid`` (or a grid it wraps, through ``_grid``) is Flower's in-process
    simulation grid."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    for _ in range(8):
        if isinstance(grid, InMemoryGrid):
            return True
        grid = getattr(grid, "_grid", None)
        if grid is None:
            return False
    return False
