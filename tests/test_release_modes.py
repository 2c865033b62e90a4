"""Release modes of a party: one release (the paper's protocol) or fresh mixtures per epoch."""

from __future__ import annotations

import pytest
import torch

from common.encodings import singularized as singularized_module
from client.party import load_party
from client.release import make_release, mixing_seed
from common.config import ConfigError, parse_run_config
from server.union import UnionBuffer

CPU = torch.device("cpu")


def _party(**overrides):
    cfg = parse_run_config({"output-dir": "/tmp/mixupfl-test-runs", "party-figures": "exact", **overrides})
    return cfg, load_party(cfg, 1, 4)


def test_first_epoch_of_per_epoch_is_the_once_release_and_later_epochs_are_fresh():
    cfg_once, party = _party()
    cfg_epoch, party_e = _party(release="per-epoch")
    once = make_release(cfg_once, party, device=CPU)
    first = make_release(cfg_epoch, party_e, device=CPU, epoch=1)
    second = make_release(cfg_epoch, party_e, device=CPU, epoch=2, with_validation=False)
    assert torch.equal(once.train.x, first.train.x) and torch.equal(once.val.x, first.val.x)
    assert second.val is None and second.metrics["num-val"] == 0
    assert second.train.x.shape == first.train.x.shape
    assert not torch.equal(second.train.partner, first.train.partner)
    assert not torch.allclose(second.train.x, first.train.x)
    assert second.train.radius == first.train.radius  # one calibration per party
    assert "snr-pc1" in first.metrics and "snr-pc1" not in second.metrics
    assert len({mixing_seed(cfg_epoch, 1, e) for e in range(1, 51)}) == 50
    with pytest.raises(ValueError):
        mixing_seed(cfg_epoch, 1, 0)


def test_calibration_is_computed_once_per_party():
    cfg, party = _party(release="per-epoch", seed=7)
    singularized_module._CALIBRATIONS.clear()
    calls = []
    original = singularized_module.data_statistics

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    singularized_module.data_statistics = counting
    try:
        for epoch in (1, 2, 3):
            make_release(cfg, party, device=CPU, epoch=epoch, with_validation=epoch == 1)
    finally:
        singularized_module.data_statistics = original
    assert len(calls) == 1


def test_exposures_per_release_mode():
    """Every release makes each private sample the clean component of one row and the noisy
    partner of one other, so E per-epoch releases expose each sample E times."""
    cfg, party = _party(release="per-epoch", **{"noise-mode": "strict"})
    x = party.train_x.float()
    n = x.shape[0]
    epochs = 5
    clean = torch.zeros(n, dtype=torch.long)
    partner = torch.zeros(n, dtype=torch.long)
    for epoch in range(1, epochs + 1):
        made = make_release(cfg, party, device=CPU, epoch=epoch, with_validation=False)
        w, pi = made.train.weights, made.train.partner
        # Strict noise: x~_i - w_i1 x_i - w_i2 x_pi(i) = w_i2 e_i with ||e_i|| = r, so row i
        # holds sample i un-noised and sample pi(i) as the noisy partner.
        residual = made.train.x - w[:, :1] * x - w[:, 1:] * x[pi]
        assert torch.allclose(residual.norm(dim=1), w[:, 1] * made.train.radius, rtol=1e-4)
        clean += torch.bincount(torch.arange(n), minlength=n)
        partner += torch.bincount(pi, minlength=n)
    assert torch.equal(clean, torch.full((n,), epochs))
    assert torch.equal(partner, torch.full((n,), epochs))
    once = make_release(cfg.model_copy(update={"release": "once"}), party, device=CPU)
    assert torch.equal(torch.bincount(once.train.partner, minlength=n), torch.ones(n, dtype=torch.long))


def test_release_key_is_only_for_one_shot():
    assert parse_run_config({"release": "per-epoch"}).release == "per-epoch"
    with pytest.raises(ConfigError, match="release"):
        parse_run_config({"strategy": "fedprox", "release": "per-epoch"})
    with pytest.raises(ConfigError, match="release"):
        parse_run_config({"release": "every-epoch"})


def test_union_canonical_order_sorts_rows_by_party():
    import numpy as np

    union = UnionBuffer(expected_parties=3)
    for pid, rows in ((2, 3), (0, 2), (1, 4)):
        union.add(pid, np.full((rows, 2), pid, dtype=np.float32), np.zeros((rows, 1), dtype=np.float32))
    order = union.canonical_order()
    assert union.owner[order].tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert sorted(order.tolist()) == list(range(9))


def test_release_guard_refuses_raw_rows_and_passes_a_mixed_release():
    from client.release import RawDataLeak, guard_against_raw_rows
    from common.mixup import MixupRelease

    cfg, party = _party()
    made = make_release(cfg, party, device=CPU)
    assert guard_against_raw_rows(cfg, party, made.train, made.val) > cfg.release_guard
    # A "release" that carries private row 3 verbatim (a bypassed mixing, say) is refused.
    leaked_x = made.train.x.clone()
    leaked_x[5] = party.train_x[3]
    leaked = MixupRelease(x=leaked_x, y=made.train.y, partner=made.train.partner, weights=made.train.weights,
                          radius=made.train.radius, clamp=made.train.clamp)
    with pytest.raises(RawDataLeak, match="row 5 .* private row 3"):
        guard_against_raw_rows(cfg, party, leaked, made.val)
    # A validation row equal to a private training row is caught too.
    leaked_val_x = made.val.x.clone()
    leaked_val_x[0] = party.train_x[0]
    leaked_val = MixupRelease(x=leaked_val_x, y=made.val.y, partner=made.val.partner, weights=made.val.weights,
                              radius=made.val.radius, clamp=made.val.clamp)
    with pytest.raises(RawDataLeak, match="validation row 0"):
        guard_against_raw_rows(cfg, party, made.train, leaked_val)


def test_a_supernode_requiring_secure_randomness_refuses_seeded_runs(monkeypatch):
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from client.app import query

    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    msg = Message(RecordDict({"config": ConfigRecord({"epoch": 1, "with-validation": True})}), dst_node_id=5,
                  message_type=MessageType.QUERY)
    node = {"partition-id": 0, "num-partitions": 4, "require-secure-rng": "true"}
    seeded = Context(run_id=1, node_id=5, node_config=node, state=RecordDict(),
                     run_config={"output-dir": "/tmp/mixupfl-test-runs"})
    with pytest.raises(PermissionError, match="secure-rng = true"):
        query(msg, seeded)
    secure = Context(run_id=1, node_id=5, node_config=node, state=RecordDict(),
                     run_config={"output-dir": "/tmp/mixupfl-test-runs", "secure-rng": True})
    reply = query(msg, secure)
    assert reply.content["release"]["x"].numpy().shape[0] == int(reply.content["metrics"]["num-examples"])
