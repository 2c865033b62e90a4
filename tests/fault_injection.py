"""A ClientApp that plays a broken or hostile party, for the tests only.

It wraps the production handlers of :mod:`client.app` and, when the party has a fault,
misbehaves. A deployed SuperNode gets its fault from its node config (``test-fault``, with
``test-fault-seconds`` / ``test-fault-round``); a simulated party, whose node config Flower
fills itself, from the plan ``<output-dir>/test-faults.json`` that the test writes before the
run (``{"<partition-id>": {"test-fault": ..., "test-fault-round": ...}}``).

One-shot (``query``): ``"silent"`` never answers (for ``test-fault-seconds``), ``"nan-upload"``
uploads NaN inputs, ``"crash"`` raises (a party that dies mid-collection: the server gets an
error reply), ``"claim-partition"`` sends its own valid release under ``partition-id =
test-fault-partition`` (another party's; its announcement claims that partition too),
``"oversized"`` repeats its release's rows until the release is at least ``test-fault-mb``
MiB and announces that truthfully (the server refuses it before transfer), ``"lies"`` announces
its honest, small release and then sends the oversized one.

FedProx / FedAvg (``train`` / ``evaluate``): ``"nan-weights"`` returns a model of NaNs, ``"negative-examples"`` reports ``-num-examples``, ``"low-val-loss"`` reports a
validation loss of ``-1e6``, ``"crash"`` raises from round ``test-fault-round`` (default 1) on,
as a party that dies mid-run.

The production ClientApp has no such switch; only a test that builds an app whose
``clientapp`` component is ``tests.fault_injection:app``
(:func:`tests.app_variants.app_with_components`) installs this one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import app as production
from common.encodings import release_nbytes

app = ClientApp()

FAULTS = ("silent", "nan-upload", "nan-weights", "negative-examples", "low-val-loss", "crash", "claim-partition",
          "oversized", "lies")
PLAN_NAME = "test-faults.json"


def write_fault_plan(output_dir: Path, plan: dict[int, dict]) -> Path:
    """Write the simulated parties' faults (partition id -> node-config-like entry)."""
    path = Path(output_dir) / PLAN_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(pid): entry for pid, entry in plan.items()}), encoding="utf-8")
    return path


def _options(context: Context) -> dict:
    """This party's fault settings: the node config's, else its entry in the run's plan."""
    if context.node_config.get("test-fault"):
        options = dict(context.node_config)
    else:
        plan = Path(str(context.run_config.get("output-dir", ""))).expanduser() / PLAN_NAME
        entries = json.loads(plan.read_text(encoding="utf-8")) if plan.is_file() else {}
        options = entries.get(str(context.node_config.get("partition-id")), {})
    fault = options.get("test-fault")
    if fault and fault not in FAULTS:
        raise ValueError(f"unknown test-fault {fault!r}; known: {', '.join(FAULTS)}")
    return options


def _fault(context: Context) -> str | None:
    return _options(context).get("test-fault") or None


def _crash_if_due(msg: Message, context: Context) -> None:
    options = _options(context)
    if options.get("test-fault") != "crash":
        return
    server_round = int(msg.content["config"].get("server-round", 1)) if "config" in msg.content else 1
    if server_round >= int(options.get("test-fault-round", 1)):
        raise RuntimeError(f"test fault: party crashed in round {server_round}")


def _repeats(train_bytes: int, options: dict) -> int:
    """How often the honest training release is repeated to reach ``test-fault-mb`` MiB."""
    return max(1, math.ceil(float(options.get("test-fault-mb", 300)) * 2**20 / max(1, train_bytes)))


def _oversized_announcement(msg: Message, reply: Message, context: Context) -> Message:
    """The truthful announcement of the repeated release."""
    told = dict(reply.content["announcement"])
    dtype = production.run_config_of(context).upload_dtype
    dim, classes = int(told["input-dim"]), int(told["num-classes"])
    rows = int(told["num-examples"]) * _repeats(release_nbytes(int(told["num-examples"]), dim, classes, dtype),
                                                _options(context))
    told.update({"num-examples": rows,
                 "release-bytes": release_nbytes(rows + int(told["num-val"]), dim, classes, dtype)})
    return Message(RecordDict({"announcement": MetricRecord(told)}), reply_to=msg)


def _oversized_release(msg: Message, reply: Message, context: Context) -> Message:
    """The release with its training rows repeated (``num-examples`` says so)."""
    release = reply.content["release"]
    arrays = {key: release[key].numpy() for key in release}
    k = _repeats(arrays["x"].nbytes + arrays["y"].nbytes, _options(context))
    for key in ("x", "y"):
        arrays[key] = np.tile(arrays[key], (k,) + (1,) * (arrays[key].ndim - 1))
    metrics = dict(reply.content["metrics"])
    metrics["num-examples"] = int(arrays["x"].shape[0])
    content = RecordDict({"release": ArrayRecord({key: Array(a) for key, a in arrays.items()}),
                          "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    fault = _fault(context)
    if fault == "silent":  # a party that never answers (the server's quorum must carry the run)
        time.sleep(float(_options(context).get("test-fault-seconds", 3600.0)))
    if fault == "crash":  # a party that dies mid-collection
        raise RuntimeError("test fault: party crashed during collection")
    reply = production.query(msg, context)
    if "announcement" in reply.content:
        if fault == "oversized":
            return _oversized_announcement(msg, reply, context)
        if fault == "claim-partition":  # a consistent claimant announces the claimed partition too
            told = dict(reply.content["announcement"])
            told["partition-id"] = int(_options(context)["test-fault-partition"])
            return Message(RecordDict({"announcement": MetricRecord(told)}), reply_to=msg)
        return reply  # "lies": the honest, small announcement
    if fault in ("oversized", "lies"):
        return _oversized_release(msg, reply, context)
    if fault == "claim-partition":  # another party's partition id on a valid release
        metrics = dict(reply.content["metrics"])
        metrics["partition-id"] = int(_options(context)["test-fault-partition"])
        return Message(RecordDict({"release": reply.content["release"], "metrics": MetricRecord(metrics)}),
                       reply_to=msg)
    if fault == "nan-upload":  # a malformed upload (the server must reject it and go on)
        release = reply.content["release"]
        arrays = {key: release[key] for key in release}
        x = arrays["x"].numpy()
        arrays["x"] = Array(np.full(x.shape, np.nan, dtype=x.dtype))
        content = RecordDict({"release": ArrayRecord(arrays), "metrics": reply.content["metrics"]})
        return Message(content, reply_to=msg)
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    _crash_if_due(msg, context)
    fault = _fault(context)
    reply = production.train(msg, context)
    if fault not in ("nan-weights", "negative-examples"):
        return reply
    arrays = {key: reply.content["arrays"][key] for key in reply.content["arrays"]}
    metrics = dict(reply.content["metrics"])
    if fault == "nan-weights":  # a poisoned model (the server must leave it out of the round)
        arrays = {key: Array(np.full(a.shape, np.nan, a.dtype)) if np.issubdtype(a.dtype, np.floating) else Array(a)
                  for key, a in ((key, array.numpy()) for key, array in arrays.items())}
    else:  # a negative weight (the mean would subtract the update)
        metrics["num-examples"] = -abs(int(metrics["num-examples"]))
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _crash_if_due(msg, context)
    reply = production.evaluate(msg, context)
    if _fault(context) == "low-val-loss" and "val-loss" in reply.content["metrics"]:  # steering the selection
        metrics = dict(reply.content["metrics"])
        metrics["val-loss"] = -1e6
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
    return reply
