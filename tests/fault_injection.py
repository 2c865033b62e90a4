"""A ClientApp that plays a broken party, for the tests only.

It wraps the production handlers of :mod:`client.app` and, when the SuperNode's node config
sets ``test-fault``, misbehaves: ``"silent"`` never answers a query (for ``test-fault-seconds``),
``"nan-upload"`` uploads NaN inputs. The production ClientApp has no such switch; only a test
that builds an app whose ``clientapp`` component is ``tests.fault_injection:app``
(:func:`tests.app_variants.app_with_components`) installs this one.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client import app as production

app = ClientApp()

FAULTS = ("silent", "nan-upload")


def _fault(context: Context) -> str | None:
    fault = context.node_config.get("test-fault")
    if fault and fault not in FAULTS:
        raise ValueError(f"unknown test-fault {fault!r}; known: {', '.join(FAULTS)}")
    return fault or None


@app.query()
def query(msg: Message, context: Context) -> Message:
    fault = _fault(context)
    if fault == "silent":  # a party that never answers (the server's quorum must carry the run)
        time.sleep(float(context.node_config.get("test-fault-seconds", 3600.0)))
    reply = production.query(msg, context)
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
    return production.train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return production.evaluate(msg, context)
