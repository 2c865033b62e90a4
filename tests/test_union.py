"""The server's union buffer: rows land in place, in order, with their party ids, and the
memory it holds stays near the union's size."""

import numpy as np
import pytest

from server.union import UnionBuffer


def _party(rows: int, seed: int, dim: int = 6, classes: int = 3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, dim)).astype(np.float32), rng.dirichlet(np.ones(classes), rows).astype(np.float32)


def test_equal_parties_fill_one_preallocated_buffer_without_growth():
    buf = UnionBuffer(expected_parties=4)
    parts = [_party(50, s) for s in range(4)]
    for pid, (x, y) in enumerate(parts):
        buf.add(pid, x, y)
    assert buf.grow_events == 0
    np.testing.assert_array_equal(buf.x.numpy(), np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(buf.y.numpy(), np.concatenate([p[1] for p in parts]))
    assert buf.owner.tolist() == [pid for pid in range(4) for _ in range(50)]
    # Peak held = one preallocation of 4 x 50 rows + 5 % slack + one row per party.
    assert buf.peak_bytes <= 1.06 * buf.used_bytes + 4 * (6 + 3 + 1) * 4
    assert buf.parties == [(0, 0, 50), (1, 50, 50), (2, 100, 50), (3, 150, 50)]


def test_small_first_party_makes_the_buffer_grow_and_keeps_every_row():
    buf = UnionBuffer(expected_parties=3)
    parts = [_party(5, 0), _party(100, 1), _party(100, 2)]
    for pid, (x, y) in enumerate(parts):
        buf.add(pid, x, y)
    assert buf.grow_events >= 1
    assert buf.filled == 205
    np.testing.assert_array_equal(buf.x.numpy(), np.concatenate([p[0] for p in parts]))


def test_mismatched_shapes_are_rejected():
    buf = UnionBuffer(expected_parties=2)
    buf.add(0, *_party(10, 0))
    with pytest.raises(ValueError, match="row shapes"):
        buf.add(1, *_party(10, 1, dim=7))
    x, y = _party(10, 2)
    with pytest.raises(ValueError, match="labels"):
        buf.add(1, x, y[:5])


def test_empty_buffer_has_no_data():
    with pytest.raises(RuntimeError):
        _ = UnionBuffer(expected_parties=2).x
