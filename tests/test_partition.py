"""Unit tests of the Dirichlet and size-skew partitioners (common.partition)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from common.partition import dirichlet_partition, size_skew_partition


def _labels(n: int, classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _assert_partition(parts: list[np.ndarray], n: int, num_parties: int) -> None:
    assert len(parts) == num_parties
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no duplicate inside a party
    allidx = np.concatenate(parts)
    assert allidx.size == n  # disjoint ...
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))  # ... and covering


def _histograms(labels: np.ndarray, parts: list[np.ndarray], classes: int) -> np.ndarray:
    return np.stack([np.bincount(labels[p], minlength=classes) for p in parts])


def _mean_max_share(labels, parts, classes) -> float:
    h = _histograms(labels, parts, classes)
    return float((h.max(axis=1) / h.sum(axis=1)).mean())


# --------------------------------------------------------------------------- dirichlet


@pytest.mark.parametrize("n,num_parties", [(1000, 7), (1003, 10), (64, 8), (500, 1)])
def test_dirichlet_disjoint_cover_equal_sizes(n, num_parties):
    labels = _labels(n, 5)
    parts = dirichlet_partition(labels, num_parties=num_parties, beta=0.5, seed=1)
    _assert_partition(parts, n, num_parties)
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() - sizes.min() <= 1
    assert sorted(sizes.tolist()) == sorted([n // num_parties + (i < n % num_parties) for i in range(num_parties)])


def test_dirichlet_class_counts_preserved():
    labels = _labels(900, 6, seed=3)
    parts = dirichlet_partition(labels, num_parties=9, beta=0.3, seed=4)
    h = _histograms(labels, parts, 6)
    np.testing.assert_array_equal(h.sum(axis=0), np.bincount(labels, minlength=6))
    # Every index of a party is listed under its own label: the histogram matches the indices.
    for p, row in zip(parts, h, strict=True):
        assert row.sum() == len(p)


def test_dirichlet_deterministic_and_seed_sensitive():
    labels = _labels(600, 10)
    a = dirichlet_partition(labels, num_parties=6, beta=0.5, seed=11)
    b = dirichlet_partition(labels, num_parties=6, beta=0.5, seed=11)
    c = dirichlet_partition(labels, num_parties=6, beta=0.5, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_label_skew_grows_as_beta_shrinks():
    classes = 10
    labels = _labels(4000, classes, seed=5)
    share = {}
    for beta in (0.1, 1.0, 100.0):
        share[beta] = np.mean([
            _mean_max_share(labels, dirichlet_partition(labels, num_parties=10, beta=beta, seed=s), classes)
            for s in range(3)
        ])
    # i.i.d. split: max share ~ 1/C plus a little; beta = 0.1: parties dominated by few classes.
    assert share[0.1] > share[1.0] > share[100.0]
    assert share[0.1] > 0.4
    assert share[100.0] < 0.16


def test_dirichlet_large_beta_matches_global_proportions():
    classes = 10
    labels = _labels(5000, classes, seed=6)
    parts = dirichlet_partition(labels, num_parties=5, beta=1000.0, seed=7)
    h = _histograms(labels, parts, classes)
    local = h / h.sum(axis=1, keepdims=True)
    global_ = np.bincount(labels, minlength=classes) / labels.size
    # Dir(1000 * 1_5) components have sd ~ 0.0057 around 0.2, i.e. ~3% relative: shares
    # within 0.02 of the global ~0.1.
    assert np.abs(local - global_[None, :]).max() < 0.02


def test_dirichlet_non_contiguous_class_ids():
    labels = np.repeat(np.array([3, 7, 42]), [50, 30, 20])
    parts = dirichlet_partition(labels, num_parties=4, beta=1.0, seed=0)
    _assert_partition(parts, 100, 4)
    assert sorted(len(p) for p in parts) == [25, 25, 25, 25]


def test_dirichlet_min_size_and_argument_errors():
    labels = _labels(20, 3)
    with pytest.raises(ValueError):  # 20 // 8 = 2 < min_size 3
        dirichlet_partition(labels, num_parties=8, beta=1.0, seed=0, min_size=3)
    with pytest.raises(ValueError):
        dirichlet_partition(labels, num_parties=0, beta=1.0, seed=0)
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError):
            dirichlet_partition(labels, num_parties=2, beta=beta, seed=0)
    with pytest.raises(TypeError):
        dirichlet_partition(labels.astype(float), num_parties=2, beta=1.0, seed=0)
    with pytest.raises(ValueError):
        dirichlet_partition(labels.reshape(4, 5), num_parties=2, beta=1.0, seed=0)
    with pytest.raises(ValueError):
        dirichlet_partition(np.array([], dtype=np.int64), num_parties=2, beta=1.0, seed=0)


def test_dirichlet_large_case_fast_and_valid():
    labels = _labels(20_000, 10, seed=8)
    start = time.perf_counter()
    parts = dirichlet_partition(labels, num_parties=100, beta=0.1, seed=9)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0
    _assert_partition(parts, 20_000, 100)
    assert {len(p) for p in parts} == {200}
    assert _mean_max_share(labels, parts, 10) > 0.4


# --------------------------------------------------------------------------- size skew


def _expected_poor(n: int, num_parties: int, rho: float, min_size: int = 2) -> int:
    return max(min_size, int(round(rho * n / (num_parties - 1 + rho))))


@pytest.mark.parametrize(
    "n,num_parties,rho,poor_party",
    [(1000, 5, 0.1, 0), (1000, 5, 0.1, 2), (1000, 5, 0.1, 4), (777, 4, 0.35, 1), (2000, 10, 0.02, 9)],
)
def test_size_skew_sizes(n, num_parties, rho, poor_party):
    labels = _labels(n, 7, seed=n)
    parts = size_skew_partition(labels, num_parties=num_parties, beta=0.5, rho=rho, seed=3, poor_party=poor_party)
    _assert_partition(parts, n, num_parties)
    sizes = np.array([len(p) for p in parts])
    n_poor = _expected_poor(n, num_parties, rho)
    assert sizes[poor_party] == n_poor
    rich = np.delete(sizes, poor_party)
    assert rich.max() - rich.min() <= 1
    assert rich.sum() == n - n_poor
    assert sizes.sum() == n


def test_size_skew_hand_computed_sizes():
    # n = 1000, P = 5, rho = 0.1: n_rich = 1000 / 4.1 = 243.9, n_poor = round(24.39) = 24,
    # rich parties share 976 -> 244 each.
    parts = size_skew_partition(_labels(1000, 4), num_parties=5, beta=1.0, rho=0.1, seed=0, poor_party=3)
    assert [len(p) for p in parts] == [244, 244, 244, 24, 244]


def test_size_skew_min_size_floor():
    # rho n_rich = 0.01 * 100 / 4.01 ~ 0.25 rounds to 0: min_size = 5 wins.
    parts = size_skew_partition(_labels(100, 3), num_parties=5, beta=1.0, rho=0.01, seed=0, min_size=5)
    sizes = [len(p) for p in parts]
    # Rich parties share 95 -> 24, 24, 24, 23.
    assert sizes == [5, 24, 24, 24, 23]


def test_size_skew_rho_one_near_equal():
    parts = size_skew_partition(_labels(1003, 5), num_parties=6, beta=1.0, rho=1.0, seed=0)
    sizes = np.array([len(p) for p in parts])
    assert sizes.max() - sizes.min() <= 1
    assert sizes.sum() == 1003


def test_size_skew_deterministic_and_label_skewed():
    labels = _labels(3000, 10, seed=2)
    a = size_skew_partition(labels, num_parties=6, beta=0.1, rho=0.2, seed=5)
    b = size_skew_partition(labels, num_parties=6, beta=0.1, rho=0.2, seed=5)
    c = size_skew_partition(labels, num_parties=6, beta=0.1, rho=0.2, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    iid = size_skew_partition(labels, num_parties=6, beta=1000.0, rho=0.2, seed=5)
    assert _mean_max_share(labels, a, 10) > _mean_max_share(labels, iid, 10) + 0.2


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(rho=0.0), ValueError),
        (dict(rho=-0.1), ValueError),
        (dict(rho=1.5), ValueError),
        (dict(poor_party=5), ValueError),
        (dict(poor_party=-1), ValueError),
        (dict(beta=0.0), ValueError),
        (dict(beta=-2.0), ValueError),
        (dict(num_parties=1), ValueError),
        (dict(min_size=30), ValueError),  # 100 samples < 5 * 30
        (dict(labels=np.linspace(0, 1, 100)), TypeError),
        (dict(labels=np.zeros((10, 10), dtype=np.int64)), ValueError),
    ],
)
def test_size_skew_bad_arguments(kwargs, error):
    args = dict(labels=_labels(100, 3), num_parties=5, beta=1.0, rho=0.5, seed=0, poor_party=0)
    args.update(kwargs)
    labels = args.pop("labels")
    with pytest.raises(error):
        size_skew_partition(labels, **args)


def test_size_skew_large_case():
    labels = _labels(20_000, 10, seed=10)
    start = time.perf_counter()
    parts = size_skew_partition(labels, num_parties=100, beta=0.1, rho=0.1, seed=1, poor_party=17)
    assert time.perf_counter() - start < 10.0
    _assert_partition(parts, 20_000, 100)
    sizes = np.array([len(p) for p in parts])
    assert sizes[17] == _expected_poor(20_000, 100, 0.1)
    rich = np.delete(sizes, 17)
    assert rich.max() - rich.min() <= 1


def test_size_skew_capacity_weights_cancel_once_sizes_are_balanced():
    """The documented fact: IPF's fixed point ignores a column factor, so the capacity
    weights of equation 5 leave the balanced counts exactly as they are."""
    import numpy as np

    from common.partition import _balance

    labels = np.repeat(np.arange(10), 120)
    sizes = np.array([30] + [130] * 9)
    for seed in range(3):
        weighted = _balance.dirichlet_counts(labels, sizes, beta=0.1, capacity=np.r_[0.1, np.ones(9)],
                                             rng=np.random.default_rng(seed))
        plain = _balance.dirichlet_counts(labels, sizes, beta=0.1, capacity=np.ones(10),
                                          rng=np.random.default_rng(seed))
        assert np.array_equal(weighted, plain)
        assert weighted.sum(axis=0).tolist() == sizes.tolist()


def test_label_skew_is_zero_for_the_global_mix_and_grows_as_beta_falls():
    import numpy as np

    from common.partition import dirichlet_partition
    from common.partition.skew import class_counts, label_skew, party_label_distances

    counts = np.array([[10, 20], [5, 10]])
    assert party_label_distances(counts).tolist() == [0.0, 0.0]
    assert label_skew(np.array([[10, 0], [0, 10]])) == 0.5  # one class each, 2 balanced classes
    labels = np.repeat(np.arange(10), 100)
    skews = [label_skew(class_counts(labels, dirichlet_partition(labels, num_parties=10, beta=b, seed=0), 10))
             for b in (100.0, 1.0, 0.1)]
    assert skews[0] < 0.1 < skews[1] < skews[2] < 0.9
