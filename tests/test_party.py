"""A party's data: its partition split into a training part and a disjoint validation part,
identical on every call (each FedProx round rebuilds it)."""

import numpy as np
import pytest
import torch

from client.party import load_party
from common.config import parse_run_config
from loaders import load_dataset


def test_parties_split_the_training_set_into_disjoint_train_and_validation_parts():
    cfg = parse_run_config({"beta": 0.5, "seed": 3})
    data = load_dataset("digits")
    assert data.train_x.shape == (1438, 64) and data.test_x.shape == (359, 64)
    assert float(data.train_x.min()) >= 0.0 and float(data.train_x.max()) <= 1.0
    seen = []
    for pid in range(5):
        party = load_party(cfg, pid, 5)
        n = party.train_x.shape[0] + party.val_x.shape[0]
        assert n in (287, 288)  # 1438 / 5, sizes differ by at most one
        assert party.val_x.shape[0] == round(0.1 * n)
        rows = torch.cat([party.train_x, party.val_x])
        seen.append(rows)
    allrows = torch.cat(seen).numpy()
    # Every training sample of the data set belongs to exactly one party (rows of digits
    # may repeat, so compare multisets).
    a = np.sort(allrows.view([("", allrows.dtype)] * 64), axis=0)
    b = np.sort(data.train_x.numpy().copy().view([("", allrows.dtype)] * 64), axis=0)
    assert (a == b).all()


def test_party_is_reproducible_and_seed_dependent():
    cfg0, cfg1 = parse_run_config({"seed": 0}), parse_run_config({"seed": 1})
    load_party.cache_clear()
    a = load_party(cfg0, 2, 4)
    load_party.cache_clear()
    b = load_party(cfg0, 2, 4)
    c = load_party(cfg1, 2, 4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.train_y, c.train_y)


def test_bad_partition_id_is_refused():
    with pytest.raises(ValueError, match="partition-id"):
        load_party(parse_run_config({}), 4, 4)
