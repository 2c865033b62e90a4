"""A party's data: its partition split into a training part and a disjoint validation part,
identical on every call (each FedProx round rebuilds it)."""

import numpy as np
import pytest
import torch

from client.party import load_party
from common.config import parse_run_config
from features.pipeline import load_run_data
from loaders import load_dataset


def test_parties_split_the_training_set_into_disjoint_train_and_validation_parts():
    cfg = parse_run_config({"beta": 0.5, "seed": 3})
    data = load_run_data(cfg)
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


def test_public_pool_is_held_out_before_partitioning_and_shared_by_every_party():
    """public-fraction carves one pool (from the seed alone) out of the training split; the
    parties share out exactly the rest, and the encoding does not change the partitions."""
    from client.party import load_public_pool, public_indices

    cfg = parse_run_config({"public-fraction": 0.2, "seed": 4, "beta": 0.3})
    data = load_run_data(cfg)
    pool = public_indices(cfg, 1438)
    assert pool.size == 288 and np.unique(pool).size == 288 and (np.diff(pool) > 0).all()
    public = load_public_pool(cfg)
    assert torch.equal(public, data.train_x[torch.as_tensor(pool)].float())
    rows = torch.cat([torch.cat([p.train_x, p.val_x]) for p in (load_party(cfg, i, 4) for i in range(4))]
                     + [public]).numpy()
    view = lambda a: np.sort(np.ascontiguousarray(a).view([("", a.dtype)] * 64), axis=0)  # noqa: E731
    assert rows.shape[0] == 1438 and (view(rows) == view(data.train_x.numpy())).all()
    insta = parse_run_config({"public-fraction": 0.2, "seed": 4, "beta": 0.3, "encoding": "instahide"})
    for pid in range(4):
        a, b = load_party(cfg, pid, 4), load_party(insta, pid, 4)
        assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    # The pool depends on the seed, and public-fraction = 0 keeps the old partitions exactly.
    assert not np.array_equal(pool, public_indices(parse_run_config({"public-fraction": 0.2, "seed": 5}), 1438))
    assert public_indices(parse_run_config({}), 1438).size == 0
    with pytest.raises(ValueError, match="public-fraction = 0"):
        load_public_pool(parse_run_config({}))


def test_instahide_release_exposes_each_sample_k_private_times_and_refuses_a_bare_sign_mask():
    from client.release import RawDataLeak, make_release

    cfg = parse_run_config({"public-fraction": 0.2, "encoding": "instahide"})
    party = load_party(cfg, 1, 5)
    made = make_release(cfg, party, device=torch.device("cpu"))
    n = party.train_x.shape[0]
    assert made.train.x.shape == party.train_x.shape and made.val.x.shape == party.val_x.shape
    counts = torch.bincount(made.train.private_index.reshape(-1), minlength=n)
    assert (counts == 2).all()  # k_private = 2 appearances of every private sample
    assert torch.allclose(made.train.y.sum(dim=1), torch.ones(n), atol=1e-6)
    assert made.metrics["public-pool-size"] == 288 and made.metrics["instahide-k"] == 4
    assert 0 <= made.metrics["reid-rate"] <= 1
    again = make_release(cfg, party, device=torch.device("cpu"))
    assert torch.equal(made.train.x, again.train.x)  # seeded: the run's upload is reproducible
    # k = k_private = 1 would upload sign-flipped private rows: |x~| = |x|, refused.
    bare = parse_run_config({"encoding": "instahide", "instahide-k": 1, "instahide-k-private": 1})
    with pytest.raises(RawDataLeak):
        make_release(bare, load_party(bare, 1, 5), device=torch.device("cpu"))


def test_digits_test_split_is_drawn_from_the_run_seed_stratified_and_of_fixed_size():
    """Seeds average over test sets too: each seed holds out another 20 % of every class."""
    splits = [load_dataset("digits", split_seed=seed) for seed in (0, 1)]
    for data in splits:
        assert data.train_x.shape == (1438, 64) and data.test_x.shape == (359, 64)
        counts = np.bincount(data.test_y.numpy(), minlength=10)
        totals = counts + np.bincount(data.train_y.numpy(), minlength=10)
        assert np.all(np.abs(counts - 0.2 * totals) <= 0.5)  # stratified: round(0.2 n_c) per class
    assert not torch.equal(splits[0].test_x, splits[1].test_x)
    assert torch.equal(load_dataset("digits", split_seed=1).test_x, splits[1].test_x)
