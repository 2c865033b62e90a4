"""The ClientApp. Thin: it reads the party's data, calls ``common`` and packs messages.

* ``query``: one-shot singularized mixup. Calibrates ``r`` from the party's own data
  (Theorem 2; in image space, then mapped to features, when a backbone is used), applies
  Algorithm 1 once to the training part and once to the held-out validation part (disjoint
  private samples), and replies with both releases in one ArrayRecord (mixed inputs in
  ``upload-dtype``) plus counts, calibration figures and the measured directional SNR.
  With ``release = "per-epoch"`` the server sends one query per central epoch, carrying
  ``epoch`` (fresh mixing randomness) and ``with-validation`` (true on the first only).
* ``train``: a FedProx (or FedAvg, ``mu = 0``) local update with the squared proximal term,
  under the run's client-side defence (plain, Fed-AugMix or DP-Mix, :mod:`client.defences`);
  DP-Mix parties also report their (epsilon, delta) so far.
* ``evaluate``: the global model on the party's clean validation part, used by the server
  to select a round; the test set is only ever touched by the server.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.defences import local_update
from client.party import STREAM_TRAIN, PartyData, derive_seed, load_party
from client.release import make_release, to_upload_dtype
from common.config import RunConfig, parse_run_config
from common.model import MixupClassifier
from common.training import cosine_lr, evaluate as evaluate_model
from features.pipeline import resolve_device

# Simulated parties share the machine's cores: one thread each avoids oversubscription.
torch.set_num_threads(1)

app = ClientApp()


def _party(context: Context) -> tuple[RunConfig, PartyData]:
    cfg = parse_run_config(context.run_config)
    pid = int(context.node_config["partition-id"])
    num = int(context.node_config["num-partitions"])
    return cfg, load_party(cfg, pid, num)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Produce this party's one-shot release (see :mod:`client.release`)."""
    cfg, party = _party(context)
    # A deployed SuperNode can insist on unpredictable mixing (Opacus' secure_mode spirit):
    # seeded randomness is for simulation and tests only.
    if _truthy(context.node_config.get("require-secure-rng", False)) and not cfg.secure_rng:
        raise PermissionError(
            "this SuperNode runs with require-secure-rng: set secure-rng = true in the run config "
            "(seeded mixing randomness is for simulation only)"
        )
    fault = _injected_fault(context)
    if fault == "silent":  # a party that never answers (the server's quorum must carry the run)
        time.sleep(float(context.node_config.get("test-fault-seconds", 3600.0)))
    request = msg.content["config"]
    epoch = int(request.get("epoch", 1))
    with_validation = bool(request.get("with-validation", True))
    made = make_release(
        cfg, party, device=resolve_device(cfg.device), epoch=epoch, with_validation=with_validation
    )
    arrays = {
        "x": _array(to_upload_dtype(made.train.x, cfg.upload_dtype)),
        "y": _array(made.train.y.float()),
    }
    if made.val is not None:
        arrays["val-x"] = _array(to_upload_dtype(made.val.x, cfg.upload_dtype))
        arrays["val-y"] = _array(made.val.y.float())
    if fault == "nan-upload":  # a malformed upload (the server must reject it and go on)
        arrays["x"] = Array(np.full(arrays["x"].numpy().shape, np.nan, dtype=arrays["x"].numpy().dtype))
    arrays = ArrayRecord(arrays)
    return Message(RecordDict({"release": arrays, "metrics": MetricRecord(made.metrics)}), reply_to=msg)


FAULT_INJECTION_ENV = "MIXUPFL_ALLOW_FAULT_INJECTION"


def _injected_fault(context: Context) -> str | None:
    """``test-fault`` from the node config ("silent" or "nan-upload"), honoured only when the
    SuperNode's environment sets MIXUPFL_ALLOW_FAULT_INJECTION=1: the deployment tests use it
    to play a broken party; a production node cannot be misconfigured into one by accident."""
    fault = context.node_config.get("test-fault")
    if not fault:
        return None
    if os.environ.get(FAULT_INJECTION_ENV) != "1":
        raise PermissionError(f"node config test-fault={fault!r} needs {FAULT_INJECTION_ENV}=1 (tests only)")
    if fault not in ("silent", "nan-upload"):
        raise ValueError(f"unknown test-fault {fault!r}; known: silent, nan-upload")
    return str(fault)


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in {"true", "1", "yes"}) or value == 1


def _array(tensor: torch.Tensor) -> Array:
    return Array(tensor.detach().cpu().contiguous().numpy())


def _model(cfg: RunConfig, party: PartyData, msg: Message) -> MixupClassifier:
    model = MixupClassifier(in_dim=int(party.train_x[0].numel()), num_classes=party.num_classes, norm=cfg.model_norm)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return model.to(resolve_device(cfg.device))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One FedProx/FedAvg local update from the received global model."""
    cfg, party = _party(context)
    config = msg.content["config"]
    server_round = int(config["server-round"])
    mu = float(config.get("proximal-mu", 0.0))  # FedAvg sends none
    lr = cosine_lr(cfg.lr, server_round - 1, cfg.num_rounds)
    model = _model(cfg, party, msg)
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, party.partition_id, STREAM_TRAIN, server_round))
    update = local_update(cfg, party, model, lr=lr, proximal_mu=mu, generator=generator, server_round=server_round)
    metrics = {"num-examples": int(party.train_x.shape[0]), **update.metrics}
    if update.train_loss is not None:  # DP-Mix keeps its unprivatised loss to itself
        metrics["train-loss"] = update.train_loss
    content = RecordDict({"arrays": ArrayRecord(model.cpu().state_dict()), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the global model on this party's validation part."""
    cfg, party = _party(context)
    model = _model(cfg, party, msg)
    loss, accuracy = evaluate_model(model, party.val_x, party.val_y)
    metrics = MetricRecord(
        {"num-examples": int(party.val_x.shape[0]), "val-loss": loss, "val-accuracy": accuracy}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
