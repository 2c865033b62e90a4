"""The no-op ServerApp: ``rounds`` rounds of the run config's ``mode`` over every node,
replies pulled with a short fixed poll; writes its timings to the run config's ``out``.

Times are ``time.time()`` (one clock for every process of the machine), so the benchmark can
place them against the ``flwr run`` process it started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

IMPORTED = time.time()

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from flwr_noop.payload import arrays_for, parse_party_specs, parse_spec, spec_bytes  # noqa: E402

app = ServerApp()


def _bytes(record: RecordDict) -> int:
    return sum(r.count_bytes() for r in record.array_records.values())


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.time()
    cfg = context.run_config
    mode, rounds, poll = str(cfg["mode"]), int(cfg["rounds"]), float(cfg["poll"])
    expected = int(cfg["expected-nodes"])
    while len(ids := sorted(grid.get_node_ids())) < expected:
        time.sleep(0.01)
    nodes_ready = time.time()
    down = str(cfg["down"])
    down_arrays = arrays_for(down) if down else {}
    asked_up = {p: spec_bytes(s) for p, s in parse_party_specs(str(cfg["up"])).items()} if mode == "query" else {}
    report: dict = {"mode": mode, "nodes": len(ids), "rounds": rounds, "imported": IMPORTED, "main_started": started,
                    "nodes_ready": nodes_ready, "round_ends": [], "first_push": None, "first_reply": None,
                    "bytes_down": 0, "bytes_up": 0, "messages_down": 0, "messages_up": 0, "errors": [],
                    "down_asked_per_message": spec_bytes(parse_spec(down)) if down else 0, "up_asked": asked_up,
                    "up_received": {}}
    for rnd in range(1, rounds + 1):
        # One record per round, shared by every message (as Flower's strategies build them).
        if mode == "train":
            content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in down_arrays.items()}),
                                  "config": ConfigRecord({"server-round": rnd})})
            kind = MessageType.TRAIN
        else:
            content = RecordDict({"config": ConfigRecord({"epoch": rnd})})
            kind = MessageType.QUERY
        messages = [Message(content, dst_node_id=nid, message_type=kind) for nid in ids]
        report["bytes_down"] += sum(_bytes(m.content) for m in messages)
        report["messages_down"] += len(messages)
        pending = set(grid.push_messages(messages))
        del messages
        report["first_push"] = report["first_push"] or time.time()
        while pending:
            replies = list(grid.pull_messages(pending))
            for reply in replies:
                pending.discard(reply.metadata.reply_to_message_id)
                report["first_reply"] = report["first_reply"] or time.time()
                report["messages_up"] += 1
                if reply.has_error():
                    report["errors"].append(reply.error.reason)
                    continue
                got = _bytes(reply.content)
                report["bytes_up"] += got
                if mode == "query":
                    report["up_received"][str(int(reply.content["metrics"]["partition-id"]))] = got
            if pending and not replies:
                time.sleep(poll)
        report["round_ends"].append(time.time())
    report["finished"] = time.time()
    out = str(cfg["out"])
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report))
