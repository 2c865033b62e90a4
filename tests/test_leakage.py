"""Measured leakage beside the theorems: re-identification rate and Theorem 1's bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.calibration import theorem1_bound
from common.leakage import reidentification_rate, theorem1_report
from common.mixup import singularized_mixup


def _data(n=200, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.randint(0, 10, (n,), generator=g)


def _release(x, y, radius, clamp=None, seed=1):
    return singularized_mixup(x, y, radius=radius, alpha=0.7, generator=torch.Generator().manual_seed(seed),
                              clamp=clamp, num_classes=10)


def test_reidentification_is_near_certain_without_noise_and_near_chance_with_large_strict_noise():
    x, y = _data()
    assert reidentification_rate(x, _release(x, y, 0.0)) > 0.95
    strict = reidentification_rate(x, _release(x, y, 1e4))
    assert strict < 0.1  # chance is 2/n = 0.01
    # Clamping turns the partner into a saturated random image but leaves w1 x_i in place:
    # the sample is re-identified far above chance whatever the radius.
    clamped = reidentification_rate(x, _release(x, y, 1e4, clamp=(0.0, 1.0)))
    assert clamped > 0.5 > strict


def test_reidentification_counts_exactly_on_a_hand_made_case():
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    release = _release(x, torch.arange(4), 0.0)
    # Replace the mixed rows: row 0 sits on private row 3, the others on their own sample.
    fake = type(release)(x=x[[3, 1, 2, 3]].clone(), y=release.y, partner=release.partner,
                         weights=release.weights, radius=0.0, clamp=None)
    expected = 3 + int(int(release.partner[0]) == 3)
    assert reidentification_rate(x, fake) == pytest.approx(expected / 4)


def test_theorem1_report_scales_with_radius_squared_and_matches_the_bound():
    x, y = _data(n=100)
    release = _release(x, y, 2.0)
    report = theorem1_report(x, release)
    bound = theorem1_bound(release.weights, release.partner, 2.0)
    energy = float(x.double().pow(2).sum(dim=1).mean())
    assert report.min == pytest.approx(float(bound.min()))
    assert report.median == pytest.approx(float(np.median(bound)))
    assert report.min_relative == pytest.approx(report.min / energy)
    doubled = theorem1_report(x, _release(x, y, 4.0))
    assert doubled.min == pytest.approx(4 * report.min, rel=1e-9)
    assert theorem1_report(x, _release(x, y, 0.0)).min == 0.0
    assert set(report.as_metrics()) == {"theorem1-mse-min", "theorem1-mse-median", "theorem1-relative-min",
                                        "theorem1-relative-median"}
