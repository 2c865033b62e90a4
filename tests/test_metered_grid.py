"""The metered grid counts payload bytes per node and stops waiting at its timeout."""

import numpy as np
import pytest
from flwr.supercore.task_identity import TaskIdentity
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from server.metered_grid import MeteredGrid, payload_bytes


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    # Outside a run Flower has no run/node identity to stamp on messages; give it one.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)


class EchoGrid(Grid):
    """Replies to every message with 1,000 float32 values, except to node 99 (silent)."""

    def __init__(self):
        self.pushed: dict[str, Message] = {}

    def set_run(self, run):
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        raise NotImplementedError

    def get_node_ids(self):
        return [1, 2, 99]

    def push_messages(self, messages):
        ids = []
        for i, msg in enumerate(messages):
            mid = f"m{len(self.pushed) + i}"
            self.pushed[mid] = msg
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids):
        replies = []
        for mid in list(message_ids):
            msg = self.pushed[mid]
            if msg.metadata.dst_node_id == 99:
                continue
            content = RecordDict({"a": ArrayRecord({"x": Array(np.zeros(1000, np.float32))}),
                                  "m": MetricRecord({"n": 1})})
            reply = Message(content, reply_to=msg)
            # What a SuperLink stamps on a reply: the id it gave the request.
            reply.metadata.__dict__["_reply_to_message_id"] = mid
            replies.append(reply)
        return replies

    def send_and_receive(self, messages, *, timeout=None):
        raise NotImplementedError


def test_payload_bytes_counts_array_buffers():
    content = RecordDict({"a": ArrayRecord({"x": Array(np.zeros((10, 10), np.float32))})})
    # 400 bytes of data, a .npy header, and the key's length.
    assert 400 < payload_bytes(content) < 600


def test_bytes_are_counted_per_node_and_silent_nodes_time_out():
    grid = MeteredGrid(EchoGrid(), poll_interval=0.01, max_poll_interval=0.02)
    query = RecordDict({"c": ConfigRecord({"request": "release"})})
    msgs = [Message(query, dst_node_id=nid, message_type="query") for nid in (1, 2, 99)]
    replies = grid.send_and_receive(msgs, timeout=0.3)
    assert sorted(r.metadata.src_node_id for r in replies) == [1, 2]
    assert set(grid.bytes_sent) == {1, 2, 99}
    assert grid.bytes_sent[1] == payload_bytes(query)
    assert set(grid.bytes_received) == {1, 2}
    assert 4000 < grid.bytes_received[1] < 4300
    assert grid.total_bytes_received == 2 * grid.bytes_received[1]
    assert grid.messages_sent == 3 and grid.messages_received == 2


def test_replies_are_pulled_a_tenth_at_a_time_and_each_yielded_once():
    class CountingGrid(EchoGrid):
        def __init__(self):
            super().__init__()
            self.pull_sizes = []

        def pull_messages(self, message_ids):
            ids = list(message_ids)
            self.pull_sizes.append(len(ids))
            return super().pull_messages(ids)

    inner = CountingGrid()
    grid = MeteredGrid(inner, poll_interval=0.01, max_poll_interval=0.02)
    query = RecordDict({"c": ConfigRecord({"request": "release"})})
    msgs = [Message(query, dst_node_id=nid, message_type="query") for nid in range(1, 21)]
    seen = [r.metadata.src_node_id for r in grid.iter_replies(msgs, timeout=5)]
    assert sorted(seen) == list(range(1, 21))  # every party once, although all answered at once
    assert max(inner.pull_sizes) == 2  # ceil(0.1 * 20): at most a tenth of the replies in memory


def _simulated_grid(node_ids):
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    class Fixed(InMemoryGrid):
        def __init__(self) -> None:  # no SuperLink state: only the node ids are asked
            pass

        def get_node_ids(self):
            return list(node_ids)

    return Fixed()


def test_simulation_below_quorum_fails_at_once_naming_the_fix():
    import time

    from server.nodes import wait_for_nodes

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"1 node\(s\) and quorum is 2.*num-supernodes=2"):
        wait_for_nodes(_simulated_grid([7]), expected=0, quorum=2, timeout=600, settle=0.05, poll=0.01)
    assert time.monotonic() - started < 5  # not the 600 s timeout
    assert wait_for_nodes(_simulated_grid([9, 3]), expected=0, quorum=2, timeout=600, settle=0.05, poll=0.01) == [3, 9]
