"""InstaHide encoding (equations 3-4): structure, laws, and the repeated private component."""

from __future__ import annotations

import pytest
import torch

from common.instahide import instahide_encode


def _data(n=60, d=12, m=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.randint(0, 5, (n,), generator=g), torch.rand(m, d, generator=g)


def test_encoding_is_the_signed_mixture_of_its_mixing_graph():
    x, y, pub = _data()
    rel = instahide_encode(x, y, public_x=pub, k=4, k_private=2, num_classes=5,
                           generator=torch.Generator().manual_seed(1))
    assert rel.x.shape == x.shape and rel.private_index.shape == (60, 2) and rel.public_index.shape == (60, 2)
    w = rel.weights.double()
    assert torch.allclose(w.sum(dim=1), torch.ones(60, dtype=torch.float64), atol=1e-6) and bool((w > 0).all())
    mixture = (w[:, 0:1] * x[rel.private_index[:, 0]] + w[:, 1:2] * x[rel.private_index[:, 1]]
               + w[:, 2:3] * pub[rel.public_index[:, 0]] + w[:, 3:4] * pub[rel.public_index[:, 1]]).float()
    assert set(rel.sign_mask.unique().tolist()) == {-1, 1}
    assert torch.allclose(rel.x, rel.sign_mask.float() * mixture, atol=1e-6)
    # The sign mask is gone in absolute values: what Carlini et al.'s attack starts from.
    assert torch.allclose(rel.x.abs(), mixture.abs(), atol=1e-6)


def test_every_private_sample_appears_in_k_private_encodings():
    x, y, pub = _data()
    rel = instahide_encode(x, y, public_x=pub, k=6, k_private=3, num_classes=5,
                           generator=torch.Generator().manual_seed(2))
    assert torch.equal(rel.private_index[:, 0], torch.arange(60))
    for slot in range(3):
        assert sorted(rel.private_index[:, slot].tolist()) == list(range(60))
    counts = torch.bincount(rel.private_index.reshape(-1), minlength=60)
    assert torch.equal(counts, torch.full((60,), 3))
    assert int(rel.public_index.max()) < 80


def test_labels_mix_the_private_part_only_and_lie_on_the_simplex():
    x, y, pub = _data()
    rel = instahide_encode(x, y, public_x=pub, k=4, k_private=2, num_classes=5,
                           generator=torch.Generator().manual_seed(3))
    assert torch.allclose(rel.y.sum(dim=1), torch.ones(60), atol=1e-6) and bool((rel.y >= 0).all())
    w = rel.weights.double()
    one_hot = torch.nn.functional.one_hot(y, 5).double()
    expected = (w[:, :1] * one_hot[rel.private_index[:, 0]] + w[:, 1:2] * one_hot[rel.private_index[:, 1]])
    expected /= w[:, :2].sum(dim=1, keepdim=True)
    assert torch.allclose(rel.y.double(), expected, atol=1e-6)


def test_dirichlet_weights_are_uniform_on_the_simplex_for_concentration_one():
    from scipy import stats

    x, y, pub = _data(n=4000, d=2, m=4000)
    rel = instahide_encode(x, y, public_x=pub, k=2, k_private=1, num_classes=5,
                           generator=torch.Generator().manual_seed(4))
    # Dirichlet(1, 1): the first weight is Uniform(0, 1).
    assert stats.kstest(rel.weights[:, 0].numpy(), "uniform").pvalue > 1e-3
    heavy = instahide_encode(x, y, public_x=pub, k=2, k_private=1, num_classes=5, concentration=50.0,
                             generator=torch.Generator().manual_seed(4))
    assert float(heavy.weights[:, 0].std()) < 0.5 * float(rel.weights[:, 0].std())


def test_seeded_runs_repeat_and_the_csprng_does_not():
    x, y, pub = _data()
    a = instahide_encode(x, y, public_x=pub, num_classes=5, generator=torch.Generator().manual_seed(5))
    b = instahide_encode(x, y, public_x=pub, num_classes=5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.x, b.x)
    c = instahide_encode(x, y, public_x=pub, num_classes=5)
    d = instahide_encode(x, y, public_x=pub, num_classes=5)
    assert not torch.equal(c.x, d.x)


def test_bad_settings_are_refused():
    x, y, pub = _data()
    with pytest.raises(ValueError, match="public pool"):
        instahide_encode(x, y, public_x=None, k=4, k_private=2, num_classes=5)
    with pytest.raises(ValueError, match="k_private"):
        instahide_encode(x, y, public_x=pub, k=2, k_private=3, num_classes=5)
    with pytest.raises(ValueError, match="differ"):
        instahide_encode(x, y, public_x=torch.rand(10, 7), num_classes=5)
    only_private = instahide_encode(x, y, public_x=None, k=2, k_private=2, num_classes=5,
                                    generator=torch.Generator().manual_seed(6))
    assert only_private.public_index.shape == (60, 0)
