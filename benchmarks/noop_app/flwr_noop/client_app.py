"""The no-op ClientApp: computes nothing, but moves what a real ClientApp moves through
Flower's own API: a ``train`` message's arrays are read (``ArrayRecord.to_numpy_ndarrays``)
and answered with new arrays of the same names, dtypes and shapes; a ``query`` is answered
with the arrays of the run config's ``up`` spec for the node's partition id."""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flwr_noop.payload import arrays_for, format_spec, parse_party_specs

app = ClientApp()

_UP: dict[str, dict[int, str]] = {}


def _fresh(arrays: dict) -> ArrayRecord:
    """A new record of ``arrays`` (serialised now, as a ClientApp's reply always is)."""
    return ArrayRecord({name: Array(value) for name, value in arrays.items()})


@app.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    received = msg.content["arrays"]
    values = received.to_numpy_ndarrays()  # what any ClientApp does with the global model
    spec = format_spec({name: (str(v.dtype), tuple(v.shape)) for name, v in zip(received.keys(), values)})
    metrics = MetricRecord({"num-examples": 1, "partition-id": pid})
    return Message(RecordDict({"arrays": _fresh(arrays_for(spec)), "metrics": metrics}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    up = str(context.run_config["up"])
    if up not in _UP:
        _UP[up] = {p: format_spec(spec) for p, spec in parse_party_specs(up).items()}
    metrics = MetricRecord({"partition-id": pid, "num-examples": 1})
    return Message(RecordDict({"release": _fresh(arrays_for(_UP[up][pid])), "metrics": metrics}), reply_to=msg)
