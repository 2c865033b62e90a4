"""Unit tests of the Theorem 2 calibration and the Theorem 1 bound (common.calibration)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.calibration import (
    data_statistics,
    noise_multiplier,
    noise_radius,
    theorem1_bound,
    theorem2_direction_bound,
)
from common.leakage import directional_snr, measure_release_snr, top_principal_directions
from common.mixup import sample_derangement, sample_mixing_weights, singularized_mixup


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- noise_multiplier


def test_noise_multiplier_hand_value():
    # bracket = alpha^2 / (tau (1 - alpha)^2) - 1 = 0.5625 / (0.1 * 0.0625) - 1 = 90 - 1 = 89
    # d / (2c) = 64 / (2 * 0.5) = 64  ->  m_f = sqrt(64 * 89) = 8 sqrt(89)
    assert noise_multiplier(tau=0.1, alpha=0.75, dim=64, c=0.5) == pytest.approx(math.sqrt(64 * 89), rel=1e-12)
    assert noise_multiplier(tau=0.1, alpha=0.75, dim=64, c=0.5) == pytest.approx(8 * math.sqrt(89), rel=1e-12)


def test_noise_multiplier_second_hand_value():
    # tau = 1e-2, alpha = 0.6, d = 10, c = 1: bracket = 0.36 / (0.01 * 0.16) - 1 = 225 - 1 = 224
    # d / (2c) = 5 -> m_f = sqrt(1120)
    assert noise_multiplier(tau=1e-2, alpha=0.6, dim=10, c=1.0) == pytest.approx(math.sqrt(1120), rel=1e-12)


def test_noise_multiplier_scaling():
    base = noise_multiplier(tau=1e-3, alpha=0.7, dim=10, c=0.8)
    assert noise_multiplier(tau=1e-3, alpha=0.7, dim=40, c=0.8) == pytest.approx(2 * base)
    assert noise_multiplier(tau=1e-3, alpha=0.7, dim=10, c=0.2) == pytest.approx(2 * base)
    # Smaller tau -> more noise.
    assert noise_multiplier(tau=1e-6, alpha=0.7, dim=10, c=0.8) > base


def test_noise_multiplier_zero_when_bracket_not_positive():
    # alpha^2 / (tau (1-alpha)^2) = 0.36 / (100 * 0.16) = 0.0225 <= 1
    assert noise_multiplier(tau=100.0, alpha=0.6, dim=64, c=0.5) == 0.0
    # Boundary: bracket exactly 0 at tau = alpha^2 / (1 - alpha)^2 = 0.25 / 0.25 = 1 for alpha = 0.5.
    assert noise_multiplier(tau=1.0, alpha=0.5, dim=64, c=0.5) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tau=0.0, alpha=0.7, dim=4, c=1.0),
        dict(tau=-1e-3, alpha=0.7, dim=4, c=1.0),
        dict(tau=1e-3, alpha=0.0, dim=4, c=1.0),
        dict(tau=1e-3, alpha=1.0, dim=4, c=1.0),
        dict(tau=1e-3, alpha=0.7, dim=0, c=1.0),
        dict(tau=1e-3, alpha=0.7, dim=4, c=0.0),
        dict(tau=1e-3, alpha=0.7, dim=4, c=-0.5),
        dict(tau=math.nan, alpha=0.7, dim=4, c=1.0),
    ],
)
def test_noise_multiplier_invalid_inputs(kwargs):
    with pytest.raises(ValueError):
        noise_multiplier(**kwargs)


# --------------------------------------------------------------------------- data_statistics


def test_data_statistics_hand_values():
    # Points (0,0), (3,4), (6,8): mean (3,4); centred norms^2 25, 0, 25 -> V = 50/3.
    # Distances d01 = 5, d02 = 10, d12 = 5 -> mean over the 6 ordered pairs = 20/3.
    # c = D^2 / (2V) = (400/9) / (100/3) = 4/3.
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    s = data_statistics(x)
    assert s.V == pytest.approx(50 / 3, rel=1e-12)
    assert s.D == pytest.approx(20 / 3, rel=1e-12)
    assert s.c == pytest.approx(4 / 3, rel=1e-12)
    assert s.dim == 2
    assert s.num_pairs == 6


def test_data_statistics_flattens_and_is_translation_invariant():
    x = torch.randn(12, 2, 3, generator=_gen(0), dtype=torch.float64)
    s = data_statistics(x)
    t = data_statistics(x + 100.0)
    assert s.dim == 6 and s.num_pairs == 12 * 11
    assert t.V == pytest.approx(s.V, rel=1e-9)
    assert t.D == pytest.approx(s.D, rel=1e-9)


def test_data_statistics_exact_pairs_when_few():
    n = 30
    x = torch.randn(n, 7, generator=_gen(1), dtype=torch.float64)
    s = data_statistics(x, num_pairs=n * (n - 1))
    dist = torch.linalg.vector_norm(x[:, None, :] - x[None, :, :], dim=2)
    exact_d = float(dist.sum() / (n * (n - 1)))
    exact_v = float(((x - x.mean(0)) ** 2).sum(1).mean())
    assert s.num_pairs == n * (n - 1)
    assert s.D == pytest.approx(exact_d, rel=1e-12)
    assert s.V == pytest.approx(exact_v, rel=1e-12)
    assert s.c == pytest.approx(exact_d**2 / (2 * exact_v), rel=1e-12)


def test_data_statistics_sampled_pairs_close_to_exact():
    n = 600
    scale = torch.linspace(0.2, 3.0, 20, dtype=torch.float64)
    x = torch.randn(n, 20, generator=_gen(2), dtype=torch.float64) * scale
    s = data_statistics(x, num_pairs=20_000, generator=_gen(3))
    assert s.num_pairs == 20_000
    dist = torch.linalg.vector_norm(x[:, None, :] - x[None, :, :], dim=2)
    exact_d = float(dist.sum() / (n * (n - 1)))
    assert s.D == pytest.approx(exact_d, rel=0.01)
    assert s.c == pytest.approx(s.D**2 / (2 * s.V), rel=1e-12)
    # Default generator (seed 0) is deterministic.
    assert data_statistics(x).D == data_statistics(x).D


def test_data_statistics_isotropic_gaussian_c_close_to_one():
    x = torch.randn(400, 500, generator=_gen(4), dtype=torch.float64)
    s = data_statistics(x, generator=_gen(5))
    # V ~ d, D ~ sqrt(2d): c = D^2 / (2V) -> 1 in high dimension.
    assert s.V == pytest.approx(500, rel=0.02)
    assert s.D == pytest.approx(math.sqrt(1000), rel=0.02)
    assert s.c == pytest.approx(1.0, abs=0.02)


def test_data_statistics_rejects_degenerate_data():
    with pytest.raises(ValueError):
        data_statistics(torch.ones(5, 3))
    with pytest.raises(ValueError):
        data_statistics(torch.randn(1, 3))


# --------------------------------------------------------------------------- noise_radius


def test_noise_radius_is_multiplier_times_d():
    x = torch.randn(300, 16, generator=_gen(6)) * 2.0  # n (n-1) > 20,000: sampled pairs
    for tau, alpha in [(1e-3, 0.7), (1e-6, 0.9), (0.05, 0.55)]:
        s = data_statistics(x, generator=_gen(7))
        expected = noise_multiplier(tau=tau, alpha=alpha, dim=s.dim, c=s.c) * s.D
        assert noise_radius(x, tau=tau, alpha=alpha, generator=_gen(7)) == pytest.approx(expected, rel=1e-12)
    # Without a generator both use the same fixed default seed.
    s = data_statistics(x)
    assert noise_radius(x, tau=1e-3, alpha=0.7) == pytest.approx(
        noise_multiplier(tau=1e-3, alpha=0.7, dim=s.dim, c=s.c) * s.D, rel=1e-12
    )


def test_noise_radius_zero_when_tau_large():
    x = torch.randn(50, 4, generator=_gen(8))
    assert noise_radius(x, tau=100.0, alpha=0.6) == 0.0


# --------------------------------------------------------------------------- Theorem 1


def _dense_theorem1(weights: np.ndarray, partner: np.ndarray, radius: float) -> np.ndarray:
    n = partner.shape[0]
    perm = np.zeros((n, n))
    perm[np.arange(n), partner] = 1.0  # (P x)_i = x_pi(i)
    w_mat = np.diag(weights[:, 0]) + np.diag(weights[:, 1]) @ perm
    inv = np.linalg.inv(w_mat)
    return radius**2 * (inv**2 * weights[None, :, 1] ** 2).sum(axis=1)


def test_theorem1_hand_value_n2():
    # W = [[0.7, 0.3], [0.4, 0.6]], det = 0.3, W^-1 = [[2, -1], [-4/3, 7/3]]
    # T_0 = 2^2 * 0.3^2 + (-1)^2 * 0.4^2 = 0.36 + 0.16 = 0.52
    # T_1 = (16/9) * 0.09 + (49/9) * 0.16 = 0.16 + 7.84/9
    w = np.array([[0.7, 0.3], [0.6, 0.4]])
    pi = np.array([1, 0])
    got = theorem1_bound(w, pi, radius=2.0)
    np.testing.assert_allclose(got, 4 * np.array([0.52, 0.16 + 7.84 / 9]), rtol=1e-12)


def _cycles_perm(lengths: list[int], rng: np.random.Generator) -> np.ndarray:
    """A permutation of sum(lengths) items whose cycles have exactly these lengths."""
    n = sum(lengths)
    order = rng.permutation(n)
    pi = np.empty(n, dtype=np.int64)
    start = 0
    for length in lengths:
        cyc = order[start : start + length]
        pi[cyc] = np.roll(cyc, -1)
        start += length
    return pi


@pytest.mark.parametrize(
    "lengths",
    [[2], [3], [4], [5], [2, 2], [2, 3, 4], [3, 3, 6, 7], [11], [12], [2, 5, 8, 1]],
)
def test_theorem1_matches_dense_inverse(lengths):
    rng = np.random.default_rng(sum(lengths) * 31 + len(lengths))
    pi = _cycles_perm(lengths, rng)
    n = pi.shape[0]
    for seed in range(3):
        w = sample_mixing_weights(n, alpha=0.8, generator=_gen(seed)).double().numpy()
        got = theorem1_bound(w, pi, radius=1.7)
        np.testing.assert_allclose(got, _dense_theorem1(w, pi, 1.7), rtol=1e-8)


@pytest.mark.parametrize("n", [2, 3, 9, 40])
def test_theorem1_matches_dense_on_random_derangements(n):
    for seed in range(4):
        pi = sample_derangement(n, generator=_gen(100 + seed))
        w = sample_mixing_weights(n, alpha=0.7, generator=_gen(200 + seed))
        got = theorem1_bound(w, pi, radius=0.9)
        np.testing.assert_allclose(got, _dense_theorem1(w.double().numpy(), pi.numpy(), 0.9), rtol=1e-8)


def test_theorem1_extreme_weights_match_dense():
    # Weights near alpha = 0.99 make rho = w2/w1 span 1/99 .. 99 (products far from 1).
    rng = np.random.default_rng(5)
    pi = _cycles_perm([7, 6], rng)
    w1 = np.where(np.arange(13) % 2 == 0, 0.99, 0.02)
    w = np.stack([w1, 1 - w1], axis=1)
    np.testing.assert_allclose(theorem1_bound(w, pi, 1.0), _dense_theorem1(w, pi, 1.0), rtol=1e-7)


def test_theorem1_scales_with_radius_squared():
    pi = sample_derangement(25, generator=_gen(9))
    w = sample_mixing_weights(25, alpha=0.7, generator=_gen(10))
    one = theorem1_bound(w, pi, 1.0)
    np.testing.assert_allclose(theorem1_bound(w, pi, 3.0), 9 * one, rtol=1e-12)
    assert np.all(theorem1_bound(w, pi, 0.0) == 0)
    assert np.all(one > 0)


def test_theorem1_singular_even_cycle_is_inf_odd_is_finite():
    # Equal weights on a 2-cycle: W = [[.5, .5], [.5, .5]] is singular.
    half = np.full((2, 2), 0.5)
    assert np.all(np.isinf(theorem1_bound(half, np.array([1, 0]), 1.0)))
    # On a 3-cycle, (-1)^L P = -1: W is invertible; hand value: W = 0.5 (I + C) with C the
    # cyclic shift; (I + C)^-1 = (I - C + C^2) / 2, so W^-1 = I - C + C^2 and
    # T_i = sum_l (W^-1)_il^2 * 0.25 = 3 * 0.25 = 0.75.
    got = theorem1_bound(np.full((3, 2), 0.5), np.array([1, 2, 0]), 1.0)
    np.testing.assert_allclose(got, [0.75, 0.75, 0.75], rtol=1e-12)


def test_theorem1_long_cycle_finite_positive():
    n = 2000
    pi = np.roll(np.arange(n), -1)  # one cycle of length 2000
    w = sample_mixing_weights(n, alpha=0.7, generator=_gen(11)).double().numpy()
    got = theorem1_bound(w, pi, 1.0)
    assert got.shape == (n,)
    assert np.all(np.isfinite(got)) and np.all(got > 0)
    # The O(n) cycle formula agrees with a dense inverse on a long single cycle too.
    m = 300
    pi_small = np.roll(np.arange(m), -1)
    np.testing.assert_allclose(
        theorem1_bound(w[:m], pi_small, 1.0), _dense_theorem1(w[:m], pi_small, 1.0), rtol=1e-6
    )


def test_theorem1_input_validation():
    w = np.full((3, 2), 0.5)
    with pytest.raises(ValueError):
        theorem1_bound(w[:2], np.array([1, 2, 0]), 1.0)
    with pytest.raises(ValueError):
        theorem1_bound(np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]), np.array([1, 2, 0]), 1.0)
    with pytest.raises(ValueError):
        theorem1_bound(w, np.array([1, 1, 0]), 1.0)


# --------------------------------------------------------------------------- Theorem 2


def test_theorem2_direction_bound_hand_value():
    # alpha = 0.75, E<X,u>^2 = 2, r = 4, d = 8: 0.5625 * 2 / (0.0625 * (2 + 16/8)) = 1.125 / 0.25 = 4.5
    assert theorem2_direction_bound(alpha=0.75, second_moment=2.0, radius=4.0, dim=8) == pytest.approx(4.5)
    assert theorem2_direction_bound(alpha=0.75, second_moment=0.0, radius=0.0, dim=8) == math.inf


def _anisotropic_gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    scale = torch.linspace(3.0, 0.3, d, dtype=torch.float64)
    return torch.randn(n, d, generator=_gen(seed), dtype=torch.float64) * scale + 5.0


@pytest.mark.parametrize("tau", [1e-2, 1e-4])
def test_theorem2_calibrated_noise_bounds_directional_snr(tau):
    alpha = 0.7
    x = _anisotropic_gaussian(3000, 12, seed=12)
    y = torch.zeros(3000, dtype=torch.long)
    radius = noise_radius(x, tau=tau, alpha=alpha)
    assert radius > 0
    pc1 = top_principal_directions(x, 1)
    # The top principal direction carries the largest variance: it is the worst direction.
    assert abs(float(pc1[0, 0])) > 0.9

    strict = singularized_mixup(x, y, radius=radius, alpha=alpha, generator=_gen(13), num_classes=1)
    snr = float(directional_snr(x, strict, pc1)[0])
    assert snr <= 1.2 * tau

    report = measure_release_snr(x, strict, alpha=alpha, generator=_gen(14))
    assert report.snr_pc1 == pytest.approx(snr, rel=1e-12)
    assert report.bound_pc1 <= tau * (1 + 1e-6)  # the bound itself is calibrated below tau
    assert report.snr_pc1 <= 1.2 * report.bound_pc1
    assert report.snr_random <= 1.2 * tau

    noiseless = singularized_mixup(x, y, radius=0.0, alpha=alpha, generator=_gen(13), num_classes=1)
    snr0 = float(directional_snr(x, noiseless, pc1)[0])
    # Without noise the partner only carries another sample: SNR ~ E[w1^2] / E[w2^2] ~ 1.
    assert snr0 > 0.3
    assert snr0 > 100 * tau


def test_theorem2_clamping_can_break_the_bound():
    # Clamped release of [0, 1] data with a huge radius: the partner term is pushed to the
    # box corners, and the directional SNR is no longer bounded by the calibration target.
    tau, alpha = 1e-4, 0.7
    x = torch.rand(2000, 8, generator=_gen(15), dtype=torch.float64) * torch.linspace(1.0, 0.1, 8, dtype=torch.float64)
    y = torch.zeros(2000, dtype=torch.long)
    radius = noise_radius(x, tau=tau, alpha=alpha)
    pc1 = top_principal_directions(x, 1)
    strict = singularized_mixup(x, y, radius=radius, alpha=alpha, generator=_gen(16), num_classes=1)
    clamped = singularized_mixup(x, y, radius=radius, alpha=alpha, generator=_gen(16), clamp=(0.0, 1.0), num_classes=1)
    assert float(directional_snr(x, strict, pc1)[0]) <= 1.2 * tau
    assert float(directional_snr(x, clamped, pc1)[0]) > 10 * tau
