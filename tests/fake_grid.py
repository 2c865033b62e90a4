"""A Grid for in-process tests: it keeps every pushed message under ids ``m0, m1, ...``
(``pushed``) and answers nothing itself; a test's subclass says which nodes exist
(``get_node_ids``) and how they reply (``pull_messages``)."""

from __future__ import annotations

from flwr.app import Message
from flwr.serverapp import Grid


class RecordingGrid(Grid):
    """Every pushed message kept in ``pushed``; ``send_and_receive`` is left to the strategy's
    metering wrapper (or a subclass)."""

    def __init__(self) -> None:
        self.pushed: dict[str, Message] = {}

    def set_run(self, run):  # noqa: ANN001
        pass

    @property
    def run(self):  # noqa: ANN201
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001
        raise NotImplementedError

    def push_messages(self, messages):  # noqa: ANN001
        ids = []
        for msg in messages:
            ids.append(f"m{len(self.pushed)}")
            self.pushed[ids[-1]] = msg
        return ids

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001
        raise NotImplementedError
