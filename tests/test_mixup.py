"""Unit tests of Algorithm 1 (common.mixup): weights, partner, noise, labels, clamping."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

import common.mixup as mixup_mod
from common.mixup import sample_derangement, sample_mixing_weights, singularized_mixup


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ratio_cdf(t: np.ndarray) -> np.ndarray:
    """Exact CDF of u1 / (u1 + u2) for u1, u2 i.i.d. Uniform(0, 1)."""
    t = np.asarray(t, dtype=np.float64)
    low = t / (2 * (1 - np.minimum(t, 0.5)))
    high = 1 - (1 - t) / (2 * np.maximum(t, 0.5))
    return np.where(t <= 0.5, low, high)


def _recover_noise(x: torch.Tensor, rel) -> torch.Tensor:
    """e_i = (x~_i - w1 x_i - w2 x_pi(i)) / w2, flattened."""
    n = x.shape[0]
    flat = x.reshape(n, -1).double()
    mixed = rel.x.reshape(n, -1).double()
    w = rel.weights.double()
    return (mixed - w[:, :1] * flat - w[:, 1:] * flat[rel.partner]) / w[:, 1:]


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("alpha", [0.55, 0.7, 0.9])
def test_weights_shape_simplex_and_bounds(alpha):
    w = sample_mixing_weights(5000, alpha=alpha, generator=_gen(1), dtype=torch.float64)
    assert w.shape == (5000, 2)
    assert w.dtype == torch.float64
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5000, dtype=torch.float64), rtol=0, atol=1e-12)
    assert float(w.max()) <= alpha
    assert float(w.min()) >= 1 - alpha - 1e-12
    assert bool((w > 0).all())


def test_weights_dtype_follows_argument():
    w = sample_mixing_weights(10, alpha=0.7, generator=_gen(0))
    assert w.dtype == torch.float32 and w.shape == (10, 2)


def test_ratio_cdf_helper_is_the_exact_cdf():
    # Sanity of the reference CDF: continuity at 1/2, endpoints, and a Monte Carlo check.
    assert _ratio_cdf(np.array([0.0]))[0] == 0.0
    assert _ratio_cdf(np.array([1.0]))[0] == 1.0
    assert _ratio_cdf(np.array([0.5]))[0] == pytest.approx(0.5)
    # Hand values: t = 1/4 -> 0.25 / 1.5 = 1/6 ; t = 3/4 -> 1 - 0.25 / 1.5 = 5/6.
    np.testing.assert_allclose(_ratio_cdf(np.array([0.25, 0.75])), [1 / 6, 5 / 6])
    rng = np.random.default_rng(0)
    u = rng.random((200_000, 2))
    z = u[:, 0] / u.sum(axis=1)
    for t in (0.1, 0.3, 0.5, 0.6, 0.85):
        assert np.mean(z <= t) == pytest.approx(_ratio_cdf(np.array([t]))[0], abs=5e-3)


@pytest.mark.parametrize("alpha", [0.6, 0.7, 0.95])
def test_weights_distribution_matches_truncated_ratio_law(alpha):
    n = 20_000
    w1 = sample_mixing_weights(n, alpha=alpha, generator=_gen(123), dtype=torch.float64)[:, 0].numpy()
    lo, hi = 1 - alpha, alpha
    f_lo, f_hi = _ratio_cdf(np.array([lo]))[0], _ratio_cdf(np.array([hi]))[0]
    # Acceptance probability of the rejection step is (2 alpha - 1) / alpha.
    assert f_hi - f_lo == pytest.approx((2 * alpha - 1) / alpha)

    def cdf(t):
        return np.clip((_ratio_cdf(np.clip(t, lo, hi)) - f_lo) / (f_hi - f_lo), 0.0, 1.0)

    result = stats.kstest(w1, cdf)
    assert result.pvalue > 1e-3, result
    # The law is symmetric about 1/2 (swap u1 and u2): mean of w1 close to 1/2.
    assert abs(w1.mean() - 0.5) < 4 * w1.std() / math.sqrt(n)


def test_weights_reject_a_uniform_law():
    # The KS test above has power: the accepted w1 is *not* uniform on [1 - alpha, alpha].
    alpha = 0.95
    w1 = sample_mixing_weights(20_000, alpha=alpha, generator=_gen(7), dtype=torch.float64)[:, 0].numpy()
    assert stats.kstest(w1, stats.uniform(loc=1 - alpha, scale=2 * alpha - 1).cdf).pvalue < 1e-6


@pytest.mark.parametrize("alpha", [0.5, 1.0, 0.3, 1.5, 0.0])
def test_invalid_alpha_raises(alpha):
    with pytest.raises(ValueError):
        sample_mixing_weights(10, alpha=alpha, generator=_gen(0))
    with pytest.raises(ValueError):
        singularized_mixup(
            torch.randn(4, 3, generator=_gen(0)),
            torch.tensor([0, 1, 0, 1]),
            radius=1.0,
            alpha=alpha,
            generator=_gen(0),
            num_classes=2,
        )


# --------------------------------------------------------------------------- partner


@pytest.mark.parametrize("n", [2, 3, 7, 100, 1001])
def test_derangement_is_permutation_without_fixed_point(n):
    gen = _gen(n)
    for _ in range(20):
        pi = sample_derangement(n, generator=gen)
        assert pi.dtype == torch.long
        assert sorted(pi.tolist()) == list(range(n))
        assert bool((pi != torch.arange(n)).all())


def test_derangement_n2_is_the_swap():
    assert sample_derangement(2, generator=_gen(0)).tolist() == [1, 0]


def test_derangement_uniform_for_n3():
    gen = _gen(2024)
    trials = 4000
    counts = Counter(tuple(sample_derangement(3, generator=gen).tolist()) for _ in range(trials))
    assert set(counts) == {(1, 2, 0), (2, 0, 1)}
    # Binomial(4000, 1/2): sd = 31.6; 5 sd.
    assert abs(counts[(1, 2, 0)] - trials / 2) < 5 * math.sqrt(trials) / 2


def test_derangement_uniform_for_n4():
    # 9 derangements of 4 items; chi-square goodness of fit to the uniform law.
    gen = _gen(99)
    trials = 4500
    counts = Counter(tuple(sample_derangement(4, generator=gen).tolist()) for _ in range(trials))
    assert len(counts) == 9
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3


@pytest.mark.parametrize("n", [0, 1])
def test_derangement_too_small_raises(n):
    with pytest.raises(ValueError):
        sample_derangement(n, generator=_gen(0))


def test_mixup_needs_two_samples():
    with pytest.raises(ValueError):
        singularized_mixup(
            torch.zeros(1, 3), torch.tensor([0]), radius=1.0, alpha=0.7, generator=_gen(0), num_classes=2
        )


def test_release_partner_is_derangement():
    x = torch.randn(50, 6, generator=_gen(0))
    rel = singularized_mixup(x, torch.arange(50) % 3, radius=1.0, alpha=0.7, generator=_gen(1), num_classes=3)
    assert sorted(rel.partner.tolist()) == list(range(50))
    assert bool((rel.partner != torch.arange(50)).all())


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("radius", [0.0, 1e-3, 1.0, 3.5, 250.0])
def test_noise_has_exact_radius(radius):
    x = torch.randn(64, 10, generator=_gen(3), dtype=torch.float64)
    y = torch.arange(64) % 4
    rel = singularized_mixup(x, y, radius=radius, alpha=0.7, generator=_gen(4), num_classes=4)
    assert rel.radius == radius and rel.clamp is None
    assert rel.x.shape == x.shape and rel.x.dtype == torch.float64
    e = _recover_noise(x, rel)
    norms = torch.linalg.vector_norm(e, dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, radius), rtol=1e-9, atol=1e-9)


def test_noise_radius_float32_input():
    x = torch.randn(32, 20, generator=_gen(3))
    rel = singularized_mixup(x, torch.arange(32) % 2, radius=2.0, alpha=0.8, generator=_gen(5), num_classes=2)
    assert rel.x.dtype == torch.float32
    norms = torch.linalg.vector_norm(_recover_noise(x, rel), dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.0), rtol=1e-4, atol=1e-4)


def test_radius_zero_is_plain_mixup():
    x = torch.randn(20, 5, generator=_gen(8), dtype=torch.float64)
    rel = singularized_mixup(x, torch.arange(20) % 2, radius=0.0, alpha=0.7, generator=_gen(9), num_classes=2)
    expected = rel.weights[:, :1] * x + rel.weights[:, 1:] * x[rel.partner]
    torch.testing.assert_close(rel.x, expected, rtol=0, atol=1e-12)


def test_noise_directions_isotropic():
    n, d, r = 20_000, 5, 2.0
    x = torch.randn(n, d, generator=_gen(11), dtype=torch.float64)
    rel = singularized_mixup(x, torch.zeros(n, dtype=torch.long), radius=r, alpha=0.7, generator=_gen(12), num_classes=1)
    u = (_recover_noise(x, rel) / r).numpy()
    # Uniform on the sphere: mean 0, covariance I / d. Each coordinate has variance 1/d,
    # so the mean's sd is sqrt(1/(d n)) = 0.0032; each covariance entry's sd is < 0.003.
    assert np.abs(u.mean(axis=0)).max() < 0.015
    cov = u.T @ u / n
    np.testing.assert_allclose(cov, np.eye(d) / d, atol=0.012)
    # The noise is independent of the private data: no correlation with x_pi(i).
    partner_x = x[rel.partner].numpy()
    assert np.abs(u.T @ partner_x / n).max() < 0.03


@pytest.mark.parametrize("radius", [-1.0, math.inf, math.nan])
def test_invalid_radius_raises(radius):
    with pytest.raises(ValueError):
        singularized_mixup(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), radius=radius, alpha=0.7, generator=_gen(0), num_classes=2)


def test_integer_inputs_rejected():
    with pytest.raises(TypeError):
        singularized_mixup(torch.zeros(4, 2, dtype=torch.long), torch.tensor([0, 1, 0, 1]), radius=1.0, alpha=0.7, generator=_gen(0), num_classes=2)


# --------------------------------------------------------------------------- labels


def test_soft_labels_from_class_indices():
    n, c = 40, 5
    x = torch.randn(n, 3, generator=_gen(13))
    y = torch.randint(0, 3, (n,), generator=_gen(14))  # classes 3, 4 absent: still C = 5 columns
    rel = singularized_mixup(x, y, radius=1.0, alpha=0.75, generator=_gen(15), num_classes=c)
    assert rel.y.shape == (n, c)
    assert bool((rel.y >= 0).all())
    torch.testing.assert_close(rel.y.sum(dim=1), torch.ones(n), rtol=0, atol=1e-6)
    onehot = torch.nn.functional.one_hot(y, c).float()
    w = rel.weights.float()
    expected = w[:, :1] * onehot + w[:, 1:] * onehot[rel.partner]
    torch.testing.assert_close(rel.y, expected, rtol=0, atol=1e-7)
    assert float(rel.y[:, 3:].abs().max()) == 0.0
    # When both partners share the class, the label stays one-hot.
    same = y == y[rel.partner]
    if bool(same.any()):
        torch.testing.assert_close(rel.y[same], onehot[same])


def test_integer_labels_need_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        singularized_mixup(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), radius=1.0, alpha=0.7, generator=_gen(0))


def test_labels_out_of_range_and_bad_shapes_raise():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError):
        singularized_mixup(x, torch.tensor([0, 1, 2, 1]), radius=1.0, alpha=0.7, generator=_gen(0), num_classes=2)
    with pytest.raises(ValueError):
        singularized_mixup(x, torch.tensor([0, 1, 0]), radius=1.0, alpha=0.7, generator=_gen(0), num_classes=2)
    with pytest.raises(TypeError):
        singularized_mixup(x, torch.tensor([0.0, 1.0, 0.0, 1.0]), radius=1.0, alpha=0.7, generator=_gen(0), num_classes=2)
    with pytest.raises(ValueError):  # soft rows not summing to 1
        singularized_mixup(x, torch.full((4, 2), 0.7), radius=1.0, alpha=0.7, generator=_gen(0))
    with pytest.raises(ValueError):  # negative soft labels
        singularized_mixup(x, torch.tensor([[1.5, -0.5]] * 4), radius=1.0, alpha=0.7, generator=_gen(0))


def test_soft_label_input_accepted():
    n = 30
    soft = torch.rand(n, 4, generator=_gen(18)) + 0.01
    soft = soft / soft.sum(dim=1, keepdim=True)
    x = torch.randn(n, 3, generator=_gen(16))
    rel = singularized_mixup(x, soft, radius=0.5, alpha=0.7, generator=_gen(17))
    assert rel.y.shape == (n, 4)
    torch.testing.assert_close(rel.y.sum(dim=1), torch.ones(n), rtol=0, atol=1e-6)
    w = rel.weights.float()
    torch.testing.assert_close(rel.y, w[:, :1] * soft + w[:, 1:] * soft[rel.partner])


# --------------------------------------------------------------------------- clamp


def test_clamp_keeps_partner_term_in_range_strict_does_not():
    n, d = 200, 16
    x = torch.rand(n, d, generator=_gen(20), dtype=torch.float64)
    y = torch.arange(n) % 2
    radius = 1e3
    clamped = singularized_mixup(x, y, radius=radius, alpha=0.7, generator=_gen(21), clamp=(0.0, 1.0), num_classes=2)
    assert clamped.clamp == (0.0, 1.0)
    w = clamped.weights
    partner_term = (clamped.x - w[:, :1] * x) / w[:, 1:]
    assert float(partner_term.min()) >= -1e-9
    assert float(partner_term.max()) <= 1 + 1e-9
    # The outputs are convex combinations of points of [0, 1]^d.
    assert float(clamped.x.min()) >= -1e-12 and float(clamped.x.max()) <= 1 + 1e-12

    strict = singularized_mixup(x, y, radius=radius, alpha=0.7, generator=_gen(21), num_classes=2)
    w = strict.weights
    partner_term = (strict.x - w[:, :1] * x) / w[:, 1:]
    assert float(partner_term.min()) < -1 and float(partner_term.max()) > 2
    # Same seed: same partner and weights, only the clipping differs.
    assert torch.equal(strict.partner, clamped.partner)
    assert torch.equal(strict.weights, clamped.weights)


def test_clamp_with_zero_radius_is_identity_on_valid_data():
    x = torch.rand(30, 4, generator=_gen(22), dtype=torch.float64)
    y = torch.arange(30) % 3
    a = singularized_mixup(x, y, radius=0.0, alpha=0.7, generator=_gen(23), clamp=(0.0, 1.0), num_classes=3)
    b = singularized_mixup(x, y, radius=0.0, alpha=0.7, generator=_gen(23), num_classes=3)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)


def test_bad_clamp_raises():
    with pytest.raises(ValueError):
        singularized_mixup(torch.rand(4, 2), torch.tensor([0, 1, 0, 1]), radius=1.0, alpha=0.7, generator=_gen(0), clamp=(1.0, 0.0), num_classes=2)


# --------------------------------------------------------------------------- randomness


def _release(gen, x, y):
    return singularized_mixup(x, y, radius=1.5, alpha=0.7, generator=gen, num_classes=3)


def test_seeded_reproducibility_and_seed_sensitivity():
    x = torch.randn(40, 8, generator=_gen(30))
    y = torch.arange(40) % 3
    a, b, c = _release(_gen(5), x, y), _release(_gen(5), x, y), _release(_gen(6), x, y)
    for field in ("x", "y", "partner", "weights"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert not torch.equal(a.x, c.x)
    assert not torch.equal(a.weights, c.weights)


def test_unseeded_generator_is_random():
    x = torch.randn(40, 8, generator=_gen(31))
    y = torch.arange(40) % 3
    a, b = _release(None, x, y), _release(None, x, y)
    assert not torch.equal(a.x, b.x)
    assert not torch.equal(a.weights, b.weights)
    for rel in (a, b):  # still a valid release
        norms = torch.linalg.vector_norm(_recover_noise(x, rel), dim=1)
        torch.testing.assert_close(norms, torch.full_like(norms, 1.5), rtol=1e-4, atol=1e-4)
        assert bool((rel.partner != torch.arange(40)).all())


def test_secure_generator_differs_between_calls():
    g1, g2 = mixup_mod.secure_generator(), mixup_mod.secure_generator()
    assert g1.initial_seed() != g2.initial_seed()


# --------------------------------------------------------------------------- chunking / shapes


def test_chunked_run_keeps_identities(monkeypatch):
    n = 57
    x = torch.randn(n, 1, 8, 8, generator=_gen(40), dtype=torch.float64)
    y = torch.arange(n) % 10
    # One row is 64 float64 = 512 bytes; a 1,100-byte budget gives 2-row chunks (+ a last 1-row chunk).
    monkeypatch.setattr(mixup_mod, "_CHUNK_BUDGET_BYTES", 1100)
    rel = singularized_mixup(x, y, radius=0.8, alpha=0.7, generator=_gen(41), num_classes=10)
    assert rel.x.shape == (n, 1, 8, 8) and rel.x.dtype == torch.float64
    norms = torch.linalg.vector_norm(_recover_noise(x, rel), dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.8), rtol=1e-9, atol=1e-9)
    assert sorted(rel.partner.tolist()) == list(range(n))
    assert bool((rel.partner != torch.arange(n)).all())
    # Same seed and budget: reproducible.
    again = singularized_mixup(x, y, radius=0.8, alpha=0.7, generator=_gen(41), num_classes=10)
    assert torch.equal(rel.x, again.x)
    # Partner and weights are drawn before the noise: they do not depend on chunking.
    monkeypatch.setattr(mixup_mod, "_CHUNK_BUDGET_BYTES", 256 * 2**20)
    unchunked = singularized_mixup(x, y, radius=0.8, alpha=0.7, generator=_gen(41), num_classes=10)
    assert torch.equal(rel.partner, unchunked.partner)
    assert torch.equal(rel.weights, unchunked.weights)


def test_image_shape_preserved_float32():
    x = torch.rand(25, 1, 8, 8, generator=_gen(42))
    rel = singularized_mixup(x, torch.arange(25) % 10, radius=1.0, alpha=0.7, generator=_gen(43), num_classes=10, clamp=(0.0, 1.0))
    assert rel.x.shape == x.shape and rel.x.dtype == x.dtype
    assert rel.y.shape == (25, 10)
    assert rel.weights.shape == (25, 2) and rel.partner.shape == (25,)



def test_system_randomness_draws_the_right_laws():
    from scipy import stats

    from common.secure_random import SystemRandom

    source = SystemRandom()
    u = source.uniform((20000,))
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    z = source.normal_(torch.empty(20001))
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    perm = source.randperm(1000)
    assert sorted(perm.tolist()) == list(range(1000))
    assert not torch.equal(source.randperm(1000), perm)  # no seed, no repetition


def test_release_without_a_generator_uses_the_csprng_and_keeps_algorithm_1():
    x = torch.rand(50, 16)
    y = torch.randint(0, 3, (50,))
    a = singularized_mixup(x, y, radius=2.0, alpha=0.7, num_classes=3)
    b = singularized_mixup(x, y, radius=2.0, alpha=0.7, num_classes=3)
    assert not torch.equal(a.x, b.x)
    for release in (a, b):
        assert bool((release.partner != torch.arange(50)).all())
        w = release.weights
        assert torch.allclose(w.sum(dim=1), torch.ones(50)) and float(w.max()) <= 0.7 + 1e-6
        noise = (release.x - w[:, :1] * x - w[:, 1:] * x[release.partner]) / w[:, 1:]
        assert torch.allclose(noise.norm(dim=1), torch.full((50,), 2.0), rtol=1e-4)
