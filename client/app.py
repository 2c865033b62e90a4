"""The ClientApp. Thin: it reads the party's data, calls ``common`` and packs messages.

* ``query``: first, a query whose config carries ``announce = true`` asks what the release
  will be: the party answers from its data's shapes alone, without encoding anything
  (rows, input dimension, classes and the byte size; :func:`client.release.announce_release`),
  and the server asks for the release only if it accepts that size. Then
  the party's one-shot release under the run's encoding (:mod:`client.release`):
  the training part and, on the first query, the held-out validation part, in one
  ArrayRecord (mixed inputs in ``upload-dtype``) plus counts and the encoding's figures.
  With ``release = "per-epoch"`` the server sends one query per central epoch, carrying
  ``epoch`` (fresh mixing randomness) and ``with-validation`` (true on the first only).
* ``train``: a FedProx (or FedAvg, ``mu = 0``) local update with the squared proximal term,
  under the run's client-side defence (:mod:`common.defences`); DP-Mix parties also report
  their (epsilon, delta) so far.
* ``evaluate``: the global model on the party's clean validation part, used by the server
  to select a round. In a node-local run without a server test set, a message carrying
  ``test-steps`` asks for the reported (and last) model's loss and accuracy on the party's
  own test part, answered with the sizes of its parts (:mod:`server.federated_evaluation`); the
  test part never chooses a model.

Where the party's data comes from: its partition of the run's data set (simulation,
``data-source = "partition"``), or the SuperNode's own data named by the node config's
``data-path`` and ``data-format`` (``data-source = "node-local"``, :mod:`client.local_party`).

The handlers are plain functions of ``(msg, context)`` so that another ClientApp (the
tests' fault-injecting one, say) can wrap them.

A simulation worker serves many parties: the parsed run config, each party's data
(:mod:`client.party`) and the classifier are built once per worker and reused; each message
only loads the received weights into the model, in place, from the message's buffers.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.local_party import local_party
from client.party import PartyData, load_party
from client.release import announce_release, make_release, to_upload_dtype
from common.config import RunConfig, parse_run_config
from common.defences import local_update
from common.device import resolve_device
from common.model import MixupClassifier
from common.npy import npy_view
from common.seeds import Stream, derive_seed
from common.training import CentralTrainer, cosine_lr, evaluate as evaluate_model

__all__ = ["app", "evaluate", "query", "train"]

# Simulated parties share the machine's cores: one thread each avoids oversubscription.
torch.set_num_threads(1)

app = ClientApp()


@lru_cache(maxsize=8)
def _parsed(items: tuple) -> RunConfig:
    return parse_run_config(dict(items))


def run_config_of(context: Context) -> RunConfig:
    """The run config of ``context``, parsed once per worker and run config."""
    try:
        key = tuple(sorted(context.run_config.items()))
        hash(key)
    except TypeError:  # an unhashable value: parse every time (validation reports it)
        return parse_run_config(context.run_config)
    return _parsed(key)


def _party(context: Context) -> tuple[RunConfig, PartyData]:
    cfg = run_config_of(context)
    if cfg.node_local:
        return cfg, local_party(cfg, context.node_config)
    pid = int(context.node_config["partition-id"])
    num = int(context.node_config["num-partitions"])
    return cfg, load_party(cfg, pid, num)


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"true", "1", "yes"}) or value == 1


def _array(tensor: torch.Tensor) -> Array:
    return Array(tensor.detach().cpu().contiguous().numpy())


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Announce this party's release (a query with ``announce = true``), or produce it (see
    :mod:`client.release`)."""
    cfg, party = _party(context)
    # A deployed SuperNode can insist on unpredictable mixing (Opacus' secure_mode spirit):
    # seeded randomness is for simulation and tests only.
    if _truthy(context.node_config.get("require-secure-rng", False)) and not cfg.secure_rng:
        raise PermissionError(
            "this SuperNode runs with require-secure-rng: set secure-rng = true in the run config "
            "(seeded mixing randomness is for simulation only)"
        )
    request = msg.content["config"]
    if _truthy(request.get("announce", False)):  # the size first; nothing is encoded
        announced = announce_release(cfg, party, with_validation=bool(request.get("with-validation", True)))
        return Message(RecordDict({"announcement": MetricRecord(announced)}), reply_to=msg)
    made = make_release(
        cfg, party, device=resolve_device(cfg.device), epoch=int(request.get("epoch", 1)),
        with_validation=bool(request.get("with-validation", True)),
    )
    arrays = {"x": _array(to_upload_dtype(made.train.x, cfg.upload_dtype)), "y": _array(made.train.y.float())}
    if made.val is not None:
        arrays["val-x"] = _array(to_upload_dtype(made.val.x, cfg.upload_dtype))
        arrays["val-y"] = _array(made.val.y.float())
    content = RecordDict({"release": ArrayRecord(arrays), "metrics": MetricRecord(made.metrics)})
    return Message(content, reply_to=msg)


_MODELS: dict[tuple, MixupClassifier] = {}


def load_arrays(model: torch.nn.Module, arrays: ArrayRecord) -> None:
    """Copy ``arrays`` into ``model``'s parameters and buffers in place (``load_state_dict``
    with ``strict = True``), reading each array from the message's buffer without an
    intermediate copy."""
    state = model.state_dict()
    if set(arrays.keys()) != set(state):
        missing, unexpected = sorted(set(state) - set(arrays.keys())), sorted(set(arrays.keys()) - set(state))
        raise KeyError(f"received weights do not fit the model: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for key, target in state.items():
            try:
                source = npy_view(arrays[key].data)
            except ValueError:
                source = arrays[key].numpy()
            if tuple(source.shape) != tuple(target.shape):
                raise ValueError(f"{key}: received shape {tuple(source.shape)}, model has {tuple(target.shape)}")
            if target.device.type == "cpu":
                np.copyto(target.numpy(), source, casting="unsafe")  # load_state_dict casts too
            else:
                with warnings.catch_warnings():  # read-only view: copied to the device at once
                    warnings.simplefilter("ignore", UserWarning)
                    target.copy_(torch.from_numpy(source))


def _model(cfg: RunConfig, party: PartyData, arrays: ArrayRecord, *, reuse: bool = True) -> MixupClassifier:
    """The run's classifier holding ``arrays``. With ``reuse`` one model per worker and shape
    is kept and overwritten (every parameter and buffer is loaded; the optimiser is the
    caller's); a defence that wraps or hooks the model gets a fresh one."""
    device = resolve_device(cfg.device)
    key = (int(party.train_x[0].numel()), party.num_classes, cfg.model_norm, str(device))
    model = _MODELS.get(key) if reuse else None
    if model is None:
        model = MixupClassifier(in_dim=key[0], num_classes=key[1], norm=cfg.model_norm).to(device)
        if reuse:
            _MODELS[key] = model
    load_arrays(model, arrays)
    return model


def _state(model: torch.nn.Module) -> ArrayRecord:
    """The model's weights as a reply record (one serialisation; the model stays where it is)."""
    return ArrayRecord({k: v.detach() for k, v in model.state_dict().items()})


def _train_alone(cfg: RunConfig, party: PartyData, model: MixupClassifier, epochs: int) -> None:
    """``strategy = "local-only"``: the central recipe on the party's own rows (a reference)."""
    trainer = CentralTrainer(model, rows=party.train_x.shape[0], epochs=epochs, batch_size=cfg.batch_size,
                             generator=torch.Generator().manual_seed(derive_seed(cfg.seed, party.partition_id,
                                                                                 Stream.TRAIN, 0)),
                             lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(epochs):
        trainer.train_epoch(party.train_x, party.train_y)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One FedProx/FedAvg local update from the received global model (or, for the
    local-only reference, the party's whole training alone)."""
    cfg, party = _party(context)
    config = msg.content["config"]
    if config.get("local-only", False):
        model = _model(cfg, party, msg.content["arrays"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, party.partition_id, Stream.DROPOUT, 0))
            _train_alone(cfg, party, model, int(config["epochs"]))
        metrics = {"num-examples": int(party.train_x.shape[0]), "partition-id": party.partition_id}
        content = RecordDict({"arrays": _state(model), "metrics": MetricRecord(metrics)})
        return Message(content, reply_to=msg)
    server_round = int(config["server-round"])
    mu = float(config.get("proximal-mu", 0.0))  # FedAvg sends none
    lr = cosine_lr(cfg.lr, server_round - 1, cfg.num_rounds)
    model = _model(cfg, party, msg.content["arrays"], reuse=cfg.defence_spec.plain)
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, party.partition_id, Stream.TRAIN, server_round))
    # Dropout draws from the global generator: seed it per party and round, so that the update
    # does not depend on which simulated parties shared this worker before (reruns are exact).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, party.partition_id, Stream.DROPOUT, server_round))
        update = local_update(cfg, party, model, lr=lr, proximal_mu=mu, generator=generator,
                              server_round=server_round)
    metrics = {"num-examples": int(party.train_x.shape[0]), "partition-id": party.partition_id, **update.metrics}
    if update.train_loss is not None:  # DP-Mix keeps its unprivatised loss to itself
        metrics["train-loss"] = update.train_loss
    content = RecordDict({"arrays": _state(model), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the global model on this party's validation part; or, for a
    one-shot selection round, the loss of every candidate checkpoint the server sent."""
    cfg, party = _party(context)
    config = msg.content["config"] if "config" in msg.content else {}
    if "test-steps" in config:
        return _evaluate_test(cfg, party, msg, [int(step) for step in config["test-steps"]])
    if "candidate-steps" in config:
        metrics: dict = {"num-examples": int(party.val_x.shape[0]), "partition-id": party.partition_id}
        for step in config["candidate-steps"]:
            model = _model(cfg, party, msg.content[f"model-{int(step)}"])
            metrics[f"val-loss-{int(step)}"], _ = evaluate_model(model, party.val_x, party.val_y)
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
    model = _model(cfg, party, msg.content["arrays"])
    loss, accuracy = evaluate_model(model, party.val_x, party.val_y)
    metrics = MetricRecord({"num-examples": int(party.val_x.shape[0]), "partition-id": party.partition_id,
                            "val-loss": loss, "val-accuracy": accuracy})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _evaluate_test(cfg: RunConfig, party: PartyData, msg: Message, steps: list[int]) -> Message:
    """The federated test: each sent model on the party's own test part, plus the sizes of
    its parts and its data's format (no rows, no path)."""
    if party.test_x is None:
        raise ValueError("this party holds out no test part (a partition run, or the run names server-test-path)")
    metrics: dict = {"num-examples": int(party.test_y.shape[0]), "partition-id": party.partition_id}
    for step in steps:
        model = _model(cfg, party, msg.content[f"model-{step}"])
        metrics[f"test-loss-{step}"], metrics[f"test-accuracy-{step}"] = evaluate_model(model, party.test_x,
                                                                                        party.test_y)
    content = RecordDict({"metrics": MetricRecord(metrics), "data": ConfigRecord(party.description())})
    return Message(content, reply_to=msg)
